"""Settings for the pqlkit Django example: just enough to serve ``pql_app``.

``PQLKIT`` configures the app ``pqlkit.integrations.django`` (installed with
``pip install 'pqlkit[django]'``): ``MODEL`` (``module:attribute``), ``STORE`` (a
store URL; here from the ``PQLKIT_STORE`` environment variable, default an SQLite
file next to this project), ``SETTINGS`` (more keyword arguments for
``pqlkit.Client``) and ``CALLBACKS`` (``module:attribute`` of each, per kind).
"""

from __future__ import annotations

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "pqlkit-example-not-a-secret")
DEBUG = os.environ.get("DJANGO_DEBUG", "") == "1"
ALLOWED_HOSTS = ["localhost", "127.0.0.1"]

INSTALLED_APPS = ["pqlkit.integrations.django", "pql_app"]
MIDDLEWARE = [
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",  # the nudge marks are CSRF-protected
]
ROOT_URLCONF = "pqlkit_site.urls"
DATABASES: dict[str, dict[str, str]] = {}  # pqlkit keeps its own store; no ORM models here
# the page with nudges: {% load pqlkit %}{% pqlkit_nudges user_id %} (pql_app/templates)
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {"context_processors": ["django.template.context_processors.request"]},
    }
]
USE_TZ = True
TIME_ZONE = "UTC"

PQLKIT = {
    "MODEL": "pql_app.pql_model:model",
    "STORE": os.environ.get("PQLKIT_STORE", f"sqlite:///{BASE_DIR / 'pqlkit.db'}"),
    "SETTINGS": {},
    "CALLBACKS": {"pql": ["pql_app.hooks:notify_sales"]},
}
