"""A Django app that records product events with pqlkit and alerts on PQLs."""
