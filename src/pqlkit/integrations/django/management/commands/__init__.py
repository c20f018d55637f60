"""``python manage.py pqlkit_sweep``."""
