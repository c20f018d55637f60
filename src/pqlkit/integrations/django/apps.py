"""The Django AppConfig: checks ``settings.PQLKIT`` at start-up, builds the Client on first use."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from django.apps import AppConfig, apps
from django.core.exceptions import AppRegistryNotReady, ImproperlyConfigured

from ..._client import Client
from ..._dispatch import Callback
from ..._loading import load_model, load_object
from ..._model import Model
from ...exceptions import ValidationError
from ...stores import Store

__all__ = ["PqlkitConfig", "Plan", "read_settings"]

CallbackKind = str  # "pql", "pqa", "disqualified", or "play:<name>" (a play's callbacks)
_KINDS: tuple[Literal["pql", "pqa", "disqualified"], ...] = ("pql", "pqa", "disqualified")
_KEYS = ("MODEL", "STORE", "SETTINGS", "CALLBACKS")


class Plan:
    """What ``settings.PQLKIT`` asks for, loaded and checked: how to build the Client."""

    def __init__(
        self,
        model: Model,
        store: Store | str | None,
        options: Mapping[str, Any],
        callbacks: Sequence[tuple[CallbackKind, Callback, str]],
    ) -> None:
        self.model = model
        self.store = store
        self.options = dict(options)
        self.callbacks = list(callbacks)

    def build(self) -> Client:
        """A Client as planned, its callbacks registered (each under its path)."""
        client = Client(self.model, store=self.store, **self.options)
        try:
            for kind, fn, name in self.callbacks:
                if kind.startswith("play:"):
                    client.on_play(kind[5:], fn, name=name)
                else:
                    client.on(kind, fn, name=name)  # type: ignore[arg-type]  # (one of _KINDS)
        except BaseException:
            client.close()
            raise
        return client


def read_settings(conf: object) -> Plan:
    """Load and check a ``PQLKIT`` settings dict.

    Raises:
        ValidationError: A key is missing, unknown or malformed, or the model or a
            callback does not load; the field is the key (``PQLKIT["MODEL"]``).
    """
    if not isinstance(conf, Mapping):
        raise ValidationError("PQLKIT", f"must be a dict, got {type(conf).__name__}")
    unknown = sorted(str(k) for k in conf if k not in _KEYS)
    if unknown:
        raise ValidationError("PQLKIT", f"unknown keys {unknown}; the keys are {list(_KEYS)}")
    if conf.get("MODEL") is None:
        raise ValidationError('PQLKIT["MODEL"]', "is required: a Model or 'module:attribute'")
    model = load_model(conf["MODEL"], 'PQLKIT["MODEL"]')
    store = conf.get("STORE")
    if store is not None and not isinstance(store, str) and not hasattr(store, "transaction"):
        raise ValidationError('PQLKIT["STORE"]', f"must be a store URL or a Store, got {store!r}")
    options = conf.get("SETTINGS")
    options = {} if options is None else options
    if not isinstance(options, Mapping):
        raise ValidationError('PQLKIT["SETTINGS"]', "must be a dict of Client keyword arguments")
    declared = conf.get("CALLBACKS")
    declared = {} if declared is None else declared
    if not isinstance(declared, Mapping):
        raise ValidationError('PQLKIT["CALLBACKS"]', 'must be a dict like {"pql": [...]}')
    callbacks: list[tuple[CallbackKind, Callback, str]] = []
    for name, paths in declared.items():
        field = f'PQLKIT["CALLBACKS"][{name!r}]'
        kind: str | None = next((k for k in _KINDS if k == name), None)
        if isinstance(name, str) and name.startswith("play:"):
            if name[5:] not in model.plays:
                known = ", ".join(repr(n) for n in model.plays) or "none"
                raise ValidationError(field, f"unknown play (the model's plays: {known})")
            kind = name
        if kind is None:
            raise ValidationError(
                field, f'unknown kind; the kinds are {list(_KINDS)} and "play:<name>"'
            )
        if isinstance(paths, str) or not isinstance(paths, Sequence):
            raise ValidationError(field, "must be a list of 'module:attribute' paths")
        for path in paths:
            fn = load_object(path, field)
            if not callable(fn):
                raise ValidationError(field, f"{path!r} is a {type(fn).__name__}, not callable")
            callbacks.append((kind, fn, str(path)))
    return Plan(model, store, options, callbacks)


def _configured() -> object:
    """``settings.PQLKIT`` (None when unset). Read in a function: a module-level
    ``settings`` would be touched by tools that inspect module globals (doctest)."""
    from django.conf import settings

    return getattr(settings, "PQLKIT", None)


class PqlkitConfig(AppConfig):
    """The ``pqlkit.integrations.django`` app: one Client per process (see the package)."""

    name = "pqlkit.integrations.django"
    label = "pqlkit"
    verbose_name = "pqlkit: product-qualified leads"

    plan: Plan | None = None
    _client: Client | None = None
    _lock = threading.Lock()

    def ready(self) -> None:
        """Check ``settings.PQLKIT`` (the model and callbacks load); build nothing yet."""
        self.plan = read_settings(_configured())

    @classmethod
    def current(cls) -> PqlkitConfig:
        """This app's config, once Django is set up.

        Raises:
            RuntimeError: The app is not installed, or Django is not set up.
        """
        try:
            config = apps.get_app_config("pqlkit")
        except (LookupError, AppRegistryNotReady, ImproperlyConfigured) as error:
            raise RuntimeError(
                "pqlkit.integrations.django is not ready: add it to INSTALLED_APPS"
                f" and call django.setup() ({error})"
            ) from None
        assert isinstance(config, PqlkitConfig)
        return config

    def client(self) -> Client:
        """The process's Client, built on first use (thread-safe) and closed at exit."""
        client = self._client
        if client is not None:
            return client
        with self._lock:
            if self._client is None:
                if self.plan is None:  # pragma: no cover - ready() always ran first
                    self.plan = read_settings(_configured())
                self._client = self.plan.build()
            return self._client

    def reset(self) -> None:
        """Close this process's Client (if built); the next :meth:`client` builds a new one.

        For tests that change ``settings.PQLKIT`` (``ready()`` is not run again:
        the settings are read afresh here).
        """
        with self._lock:
            if self._client is not None:
                self._client.close()
            self._client = None
            self.plan = read_settings(_configured())
