"""The management commands of ``pqlkit.integrations.django``."""
