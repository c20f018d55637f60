"""The ``pqlkit`` template tag library (``{% load pqlkit %}``)."""
