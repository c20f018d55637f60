"""The module-level default client (``pqlkit.configure`` / ``pqlkit.track``): process-wide state.

It lives here and only here; :func:`pqlkit.testing.use` swaps it for a test.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Literal, TypeVar, overload

from typing_extensions import Unpack

from ._client import Client
from ._clock import Clock
from ._dispatch import Callback, register_or_decorate
from ._events import TrackResult
from ._model import Model
from ._settings import ClientOptions, Settings
from .exceptions import PqlkitError
from .stores._base import Store

__all__ = [
    "alias",
    "configure",
    "flush",
    "forget",
    "get_client",
    "group",
    "identify",
    "on_disqualified",
    "on_play",
    "on_pqa",
    "on_pql",
    "swap",
    "track",
]

F = TypeVar("F", bound=Callback)

_lock = threading.Lock()
_client: Client | None = None


def configure(
    model: Model,
    store: Store | str | None = None,
    *,
    clock: Clock | None = None,
    shadows: Sequence[Model] = (),
    settings: Settings | None = None,
    **options: Unpack[ClientOptions],
) -> Client:
    """Create the module-level default client (closing a previous one) and return it.

    Takes the same arguments as :class:`~pqlkit.Client`.

    Example:
        >>> import pqlkit
        >>> from pqlkit import Model, did
        >>> client = pqlkit.configure(Model("m", signals={"x": did("x")}), store="memory://")
        >>> pqlkit.track("u1", "x").duplicate
        False
        >>> client.close()
    """
    global _client
    new = Client(model, store, clock=clock, shadows=shadows, settings=settings, **options)
    with _lock:
        old, _client = _client, new
    if old is not None:
        old.close()
    return new


def get_client() -> Client:
    """The module-level default client; raises if :func:`configure` was not called."""
    client = _client
    if client is None:
        raise PqlkitError("no default client: call pqlkit.configure(model, store=...) first")
    return client


def swap(client: Client | None) -> Client | None:
    """Install ``client`` as the default and return the previous one (for testing.use)."""
    global _client
    with _lock:
        old, _client = _client, client
    return old


def track(
    user_id: str,
    event: str,
    properties: Mapping[str, Any] | None = None,
    *,
    account_id: str | None = None,
    timestamp: datetime | None = None,
    message_id: str | None = None,
) -> TrackResult:
    """:meth:`Client.track` on the default client."""
    return get_client().track(
        user_id,
        event,
        properties,
        account_id=account_id,
        timestamp=timestamp,
        message_id=message_id,
    )


def identify(
    user_id: str, traits: Mapping[str, Any] | None = None, *, account_id: str | None = None
) -> None:
    """:meth:`Client.identify` on the default client."""
    get_client().identify(user_id, traits, account_id=account_id)


def group(account_id: str, traits: Mapping[str, Any] | None = None) -> None:
    """:meth:`Client.group` on the default client."""
    get_client().group(account_id, traits)


def alias(previous_id: str, user_id: str) -> None:
    """:meth:`Client.alias` on the default client."""
    get_client().alias(previous_id, user_id)


def forget(user_id: str, *, suppress: bool = False, vacuum: bool = False) -> None:
    """:meth:`Client.forget` on the default client."""
    get_client().forget(user_id, suppress=suppress, vacuum=vacuum)


def flush(timeout: float | None = None) -> int:
    """:meth:`Client.flush` on the default client."""
    return get_client().flush(timeout)


@overload
def on_pql(fn: F, /, *, name: str | None = None) -> F: ...
@overload
def on_pql(fn: None = None, /, *, name: str | None = None) -> Callable[[F], F]: ...
def on_pql(fn: F | None = None, /, *, name: str | None = None) -> F | Callable[[F], F]:
    """:meth:`Client.on_pql` on the default client (call :func:`configure` first)."""
    return _register("pql", fn, name)


@overload
def on_pqa(fn: F, /, *, name: str | None = None) -> F: ...
@overload
def on_pqa(fn: None = None, /, *, name: str | None = None) -> Callable[[F], F]: ...
def on_pqa(fn: F | None = None, /, *, name: str | None = None) -> F | Callable[[F], F]:
    """:meth:`Client.on_pqa` on the default client (call :func:`configure` first)."""
    return _register("pqa", fn, name)


@overload
def on_disqualified(fn: F, /, *, name: str | None = None) -> F: ...
@overload
def on_disqualified(fn: None = None, /, *, name: str | None = None) -> Callable[[F], F]: ...
def on_disqualified(fn: F | None = None, /, *, name: str | None = None) -> F | Callable[[F], F]:
    """:meth:`Client.on_disqualified` on the default client (call :func:`configure` first)."""
    return _register("disqualified", fn, name)


@overload
def on_play(play: str, fn: F, /, *, name: str | None = None) -> F: ...
@overload
def on_play(play: str, fn: None = None, /, *, name: str | None = None) -> Callable[[F], F]: ...
def on_play(play: str, fn: F | None = None, /, *, name: str | None = None) -> F | Callable[[F], F]:
    """:meth:`Client.on_play` on the default client (call :func:`configure` first)."""
    client = get_client()
    return register_or_decorate(lambda f: client.on_play(play, f, name=name), fn)


def _register(
    kind: Literal["pql", "pqa", "disqualified"], fn: F | None, name: str | None
) -> F | Callable[[F], F]:
    client = get_client()
    return register_or_decorate(lambda f: client.on(kind, f, name=name), fn)
