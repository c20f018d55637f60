"""A Django app that records product events with pqlkit (``pqlkit.integrations.django``)."""
