"""The Django project around the ``pql_app`` example app."""
