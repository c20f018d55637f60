"""Management commands of pql_app."""
