"""pqlkit in a Django project: an app that holds the process's Client, and ``pqlkit_sweep``.

Add ``"pqlkit.integrations.django"`` to ``INSTALLED_APPS`` and configure it in
settings::

    PQLKIT = {
        "MODEL": "myapp.pql:model",                   # or the Model itself
        "STORE": "postgresql://app@db/prod",          # default: PQLKIT_STORE_URL, else pqlkit.db
        "SETTINGS": {"dispatch": "background"},       # more keyword arguments for Client
        "CALLBACKS": {                                # "module:attribute" of each callback,
            "pql": ["myapp.hooks:notify_sales"],      # registered under that name
            "pqa": ["myapp.hooks:slack"],
            "disqualified": [],
            "play:ae_handoff": ["myapp.hooks:hand_off"],  # a play's, by its name
        },
    }

Then :func:`get_client` returns the process's Client anywhere (views, signals,
Celery tasks): it is built on first use, once per process (each gunicorn or
uWSGI worker builds its own; they share the store safely), and closed at exit.
The settings are checked when Django starts (``ready()``): a model or callback
that does not load stops the start with a :class:`~pqlkit.ValidationError`
naming the key. A callback can also be registered in code:
``get_client().on_pql(fn, name=...)`` or ``get_client().on_play("ae_handoff", fn, name=...)``.

``python manage.py pqlkit_sweep [--now ISO-8601]`` runs ``sweep()`` and delivers
what is due to the callbacks: schedule it every few minutes (cron, Celery beat)
so ``idle()`` and window signals fire without new events.

Needs Django: ``pip install 'pqlkit[django]'``.
"""

from __future__ import annotations

from .. import missing_extra

try:
    import django  # noqa: F401  (only checks that it is installed)
except ImportError as error:  # pragma: no cover - the test environment has Django
    raise missing_extra("pqlkit.integrations.django", "Django", "django") from error

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..._client import Client

__all__ = ["get_client"]


def get_client() -> Client:
    """The Client of this process, built on first use from ``settings.PQLKIT``.

    Raises:
        RuntimeError: The app is not in ``INSTALLED_APPS``, or Django is not set up.
    """
    from .apps import PqlkitConfig

    return PqlkitConfig.current().client()
