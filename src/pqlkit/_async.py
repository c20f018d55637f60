"""AsyncClient: the Client's methods as coroutines, with store work off the event loop."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, TypeVar, overload

from typing_extensions import Unpack

from ._client import Client
from ._clock import Clock
from ._dispatch import Callback, Delivery, callback_name, register_or_decorate
from ._events import (
    BulkResult,
    Event,
    Nudge,
    PruneResult,
    Qualification,
    Stats,
    SubjectKind,
    TrackResult,
)
from ._model import Model
from ._observe import DeliveryFailureHook, Observer
from ._settings import ClientOptions, Settings
from .exceptions import ClientClosedError, ValidationError
from .stores._base import Store

if TYPE_CHECKING:
    import psycopg

__all__ = ["AsyncClient"]

F = TypeVar("F", bound=Callback)
H = TypeVar("H", bound=DeliveryFailureHook)
R = TypeVar("R")


class AsyncClient:
    """The methods of :class:`~pqlkit.Client` as coroutines, for asyncio applications.

    It wraps one :class:`~pqlkit.Client` and runs every call that touches the
    store on a small thread pool of its own, so a slow store never blocks the
    event loop. Results, guarantees and errors are the Client's.

    Callbacks are registered synchronously (``@client.on_pql``). A plain
    function runs where the Client runs it: on a pool thread inside ``track()``
    with ``dispatch="inline"``, on the Client's worker with
    ``dispatch="background"``. An ``async def`` callback runs on the event loop
    this AsyncClient was last awaited from; the delivering thread waits for it,
    and an exception it raises makes pqlkit retry the delivery like any other.

    Args:
        model: The :class:`~pqlkit.Model` to evaluate.
        store: A :class:`~pqlkit.Store` or a store URL, as for ``Client``.
        max_workers: Threads in the pool that runs store work.
        clock: As for :class:`~pqlkit.Client`.
        settings: As for ``Client``: a :class:`~pqlkit.Settings`.
        **options: As for ``Client``: any field of :class:`~pqlkit.Settings` as a
            keyword. With ``dispatch="inline"`` callbacks run inside ``track()`` (on
            a pool thread); with ``"background"`` on the Client's worker thread.

    Constructing it builds the Client in the calling thread (which may rebuild
    derived state after a model change); do it once, at startup.

    Example:
        >>> import asyncio
        >>> import pqlkit
        >>> from pqlkit import Model, did
        >>> model = Model("doc", pql=did("dashboard_built"))
        >>> async def main() -> str:
        ...     async with pqlkit.AsyncClient(model, store="memory://") as client:
        ...         result = await client.track("u1", "dashboard_built")
        ...         return result.qualified[0].subject_id
        >>> asyncio.run(main())
        'u1'
    """

    def __init__(
        self,
        model: Model,
        store: Store | str | None = None,
        *,
        max_workers: int = 4,
        clock: Clock | None = None,
        shadows: Sequence[Model] = (),
        settings: Settings | None = None,
        **options: Unpack[ClientOptions],
    ) -> None:
        if isinstance(max_workers, bool) or not isinstance(max_workers, int) or max_workers < 1:
            raise ValidationError("max_workers", "must be a positive int")
        self._client = Client(
            model, store, clock=clock, shadows=shadows, settings=settings, **options
        )
        self._executor = ThreadPoolExecutor(max_workers, thread_name_prefix="pqlkit-async")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"AsyncClient(model={self.model.name!r}, store={self.store!r})"

    @property
    def client(self) -> Client:
        """The wrapped synchronous :class:`~pqlkit.Client` (for ``pqlkit.testing`` helpers)."""
        return self._client

    @property
    def model(self) -> Model:
        """The model this client evaluates."""
        return self._client.model

    @property
    def store(self) -> Store:
        """The store this client writes to."""
        return self._client.store

    # -- running store work off the loop ------------------------------------------------
    async def _run(self, fn: Callable[..., R], /, *args: Any, **kwargs: Any) -> R:
        if self._closed:
            raise ClientClosedError("this AsyncClient is closed")
        loop = asyncio.get_running_loop()
        self._loop = loop
        call = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)
        try:
            future = loop.run_in_executor(self._executor, call)
        except RuntimeError:  # the pool was shut down by a concurrent close()
            raise ClientClosedError("this AsyncClient is closed") from None
        return await future

    # -- lifecycle ---------------------------------------------------------------------
    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self, timeout: float | None = 10.0) -> None:
        """Deliver what is due (up to ``timeout`` s), close the Client, stop the thread pool."""
        if self._closed:
            return
        try:
            await self._run(self._client.close, timeout)
        finally:
            self._closed = True
            self._executor.shutdown(wait=True)

    # -- callbacks (registration is synchronous) ---------------------------------------------
    def on(
        self,
        kind: Literal["pql", "pqa", "disqualified"],
        fn: Callback,
        *,
        name: str | None = None,
    ) -> Callback:
        """Register ``fn`` (a function or an ``async def``) for ``kind`` deliveries.

        ``name`` as for :meth:`Client.on <pqlkit.Client.on>` (default: ``fn``'s
        module and qualified name).
        """
        if not callable(fn):
            raise ValidationError("fn", "must be callable")
        self._client.on(kind, self._adapt(fn), name=callback_name(fn, name))
        return fn

    @overload
    def on_pql(self, fn: F, /, *, name: str | None = None) -> F: ...
    @overload
    def on_pql(self, fn: None = None, /, *, name: str | None = None) -> Callable[[F], F]: ...
    def on_pql(self, fn: F | None = None, /, *, name: str | None = None) -> F | Callable[[F], F]:
        """Decorator: call ``fn(qualification)`` when a user first qualifies.

        ``@client.on_pql``, ``@client.on_pql(name="slack")`` or ``client.on_pql(fn,
        name="slack")``, as for :meth:`Client.on_pql <pqlkit.Client.on_pql>`.
        """
        return self._decorate("pql", fn, name)

    @overload
    def on_pqa(self, fn: F, /, *, name: str | None = None) -> F: ...
    @overload
    def on_pqa(self, fn: None = None, /, *, name: str | None = None) -> Callable[[F], F]: ...
    def on_pqa(self, fn: F | None = None, /, *, name: str | None = None) -> F | Callable[[F], F]:
        """Decorator: call ``fn(qualification)`` when an account first qualifies."""
        return self._decorate("pqa", fn, name)

    @overload
    def on_disqualified(self, fn: F, /, *, name: str | None = None) -> F: ...
    @overload
    def on_disqualified(
        self, fn: None = None, /, *, name: str | None = None
    ) -> Callable[[F], F]: ...
    def on_disqualified(
        self, fn: F | None = None, /, *, name: str | None = None
    ) -> F | Callable[[F], F]:
        """Decorator: call ``fn(qualification)`` when a qualified subject's rule turns false."""
        return self._decorate("disqualified", fn, name)

    @overload
    def on_play(self, play: str, fn: F, /, *, name: str | None = None) -> F: ...
    @overload
    def on_play(
        self, play: str, fn: None = None, /, *, name: str | None = None
    ) -> Callable[[F], F]: ...
    def on_play(
        self, play: str, fn: F | None = None, /, *, name: str | None = None
    ) -> F | Callable[[F], F]:
        """Decorator: call ``fn(qualification)`` when a subject fires the play ``play``
        (see :meth:`Client.on_play <pqlkit.Client.on_play>`)."""

        def register(f: Callback) -> None:
            if not callable(f):
                raise ValidationError("fn", "must be callable")
            self._client.on_play(play, self._adapt(f), name=callback_name(f, name))

        return register_or_decorate(register, fn)

    def _decorate(
        self, kind: Literal["pql", "pqa", "disqualified"], fn: F | None, name: str | None
    ) -> F | Callable[[F], F]:
        return register_or_decorate(lambda f: self.on(kind, f, name=name), fn)

    def on_delivery_error(self, fn: H, /) -> H:
        """:meth:`Client.on_delivery_error <pqlkit.Client.on_delivery_error>`: ``fn(failure)``
        on each failed delivery attempt and dead letter.

        ``fn`` is a plain function (it runs on the delivering thread), not an ``async def``.
        """
        if inspect.iscoroutinefunction(fn):
            raise ValidationError(
                "fn", "must be a plain function (it runs on the delivering thread), not async"
            )
        return self._client.on_delivery_error(fn)

    def add_observer(self, observer: Observer) -> None:
        """:meth:`Client.add_observer <pqlkit.Client.add_observer>` on the wrapped Client."""
        self._client.add_observer(observer)

    def _adapt(self, fn: Callback) -> Callback:
        """Run what ``fn`` returns on the event loop when it is a coroutine."""

        @functools.wraps(fn)
        def deliver(qualification: Qualification, /) -> object:
            result = fn(qualification)
            if not inspect.iscoroutine(result):
                return result
            loop = self._loop
            if loop is None or loop.is_closed():
                result.close()
                raise RuntimeError("async callback: no open event loop has used this client")
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is loop:
                result.close()
                raise RuntimeError(
                    "async callback delivered on its own event loop's thread "
                    "(call the AsyncClient's coroutines, not its .client, from async code)"
                )
            return asyncio.run_coroutine_threadsafe(result, loop).result()

        return deliver

    # -- recording -----------------------------------------------------------------------
    async def track(
        self,
        user_id: str,
        event: str,
        properties: Mapping[str, Any] | None = None,
        *,
        account_id: str | None = None,
        timestamp: datetime | None = None,
        message_id: str | None = None,
        connection: psycopg.Connection[Any] | None = None,
    ) -> TrackResult:
        """:meth:`Client.track <pqlkit.Client.track>`, awaited.

        ``connection`` (PostgresStore only) is a synchronous psycopg connection,
        used from a pool thread while this call runs.
        """
        return await self._run(
            self._client.track,
            user_id,
            event,
            properties,
            account_id=account_id,
            timestamp=timestamp,
            message_id=message_id,
            connection=connection,
        )

    async def track_many(
        self,
        events: Iterable[Event | Mapping[str, Any]],
        *,
        connection: psycopg.Connection[Any] | None = None,
    ) -> BulkResult:
        """:meth:`Client.track_many <pqlkit.Client.track_many>`, awaited.

        ``events`` is consumed on a pool thread: pass a list or a plain
        (synchronous) iterable.
        """
        return await self._run(self._client.track_many, events, connection=connection)

    async def identify(
        self,
        user_id: str,
        traits: Mapping[str, Any] | None = None,
        *,
        account_id: str | None = None,
    ) -> None:
        """:meth:`Client.identify <pqlkit.Client.identify>`, awaited."""
        await self._run(self._client.identify, user_id, traits, account_id=account_id)

    async def group(self, account_id: str, traits: Mapping[str, Any] | None = None) -> None:
        """:meth:`Client.group <pqlkit.Client.group>`, awaited."""
        await self._run(self._client.group, account_id, traits)

    async def alias(self, previous_id: str, user_id: str) -> None:
        """:meth:`Client.alias <pqlkit.Client.alias>`, awaited."""
        await self._run(self._client.alias, previous_id, user_id)

    async def forget(self, user_id: str, *, suppress: bool = False, vacuum: bool = False) -> None:
        """:meth:`Client.forget <pqlkit.Client.forget>`, awaited."""
        await self._run(self._client.forget, user_id, suppress=suppress, vacuum=vacuum)

    async def forget_preview(self, user_id: str) -> dict[str, int]:
        """:meth:`Client.forget_preview <pqlkit.Client.forget_preview>`, awaited."""
        return await self._run(self._client.forget_preview, user_id)

    async def unsuppress(self, user_id: str) -> bool:
        """:meth:`Client.unsuppress <pqlkit.Client.unsuppress>`, awaited."""
        return await self._run(self._client.unsuppress, user_id)

    # -- nudges ------------------------------------------------------------------------
    async def nudge(
        self,
        user_id: str,
        key: str,
        payload: Mapping[str, Any] | None = None,
        *,
        until: datetime | timedelta | None = None,
    ) -> bool:
        """:meth:`Client.nudge <pqlkit.Client.nudge>`, awaited."""
        return await self._run(self._client.nudge, user_id, key, payload, until=until)

    async def nudges(self, user_id: str) -> list[Nudge]:
        """:meth:`Client.nudges <pqlkit.Client.nudges>`, awaited."""
        return await self._run(self._client.nudges, user_id)

    async def mark(
        self, user_id: str, key: str, action: Literal["seen", "clicked", "dismissed"]
    ) -> bool:
        """:meth:`Client.mark <pqlkit.Client.mark>`, awaited."""
        return await self._run(self._client.mark, user_id, key, action)

    # -- reading -----------------------------------------------------------------------
    async def scores(self, subject_id: str, *, of: SubjectKind = "user") -> dict[str, float]:
        """:meth:`Client.scores <pqlkit.Client.scores>`, awaited."""
        return await self._run(self._client.scores, subject_id, of=of)

    async def signals(self, subject_id: str, *, of: SubjectKind = "user") -> dict[str, bool]:
        """:meth:`Client.signals <pqlkit.Client.signals>`, awaited."""
        return await self._run(self._client.signals, subject_id, of=of)

    async def explain(self, subject_id: str, *, of: SubjectKind = "user") -> list[str]:
        """:meth:`Client.explain <pqlkit.Client.explain>`, awaited."""
        return await self._run(self._client.explain, subject_id, of=of)

    async def top(
        self, score: str, *, n: int = 50, of: SubjectKind = "user"
    ) -> list[tuple[str, float]]:
        """:meth:`Client.top <pqlkit.Client.top>`, awaited."""
        return await self._run(self._client.top, score, n=n, of=of)

    async def qualified_at(
        self, subject_id: str, *, kind: Literal["pql", "pqa"] = "pql", play: str | None = None
    ) -> datetime | None:
        """:meth:`Client.qualified_at <pqlkit.Client.qualified_at>`, awaited."""
        return await self._run(self._client.qualified_at, subject_id, kind=kind, play=play)

    async def qualifications(
        self,
        *,
        kind: Literal["pql", "pqa", "play"] | None = None,
        play: str | None = None,
        since: datetime | timedelta | None = None,
        before: Qualification | str | None = None,
        limit: int = 100,
        model: str | None = None,
    ) -> list[Qualification]:
        """:meth:`Client.qualifications <pqlkit.Client.qualifications>`, awaited."""
        return await self._run(
            self._client.qualifications,
            kind=kind,
            play=play,
            since=since,
            before=before,
            limit=limit,
            model=model,
        )

    async def stats(self, model: str | None = None) -> Stats:
        """:meth:`Client.stats <pqlkit.Client.stats>`, awaited."""
        return await self._run(self._client.stats, model)

    # -- outbox --------------------------------------------------------------------------
    async def flush(self, timeout: float | None = None) -> int:
        """:meth:`Client.flush <pqlkit.Client.flush>`, awaited."""
        return await self._run(self._client.flush, timeout)

    async def pending(self) -> list[Qualification]:
        """:meth:`Client.pending <pqlkit.Client.pending>`, awaited."""
        return await self._run(self._client.pending)

    async def dead_letters(self) -> list[Qualification]:
        """:meth:`Client.dead_letters <pqlkit.Client.dead_letters>`, awaited."""
        return await self._run(self._client.dead_letters)

    async def deliveries(
        self,
        *,
        status: Literal["pending", "delivered", "dead", "expired"] | None = None,
        callback: str | None = None,
    ) -> list[Delivery]:
        """:meth:`Client.deliveries <pqlkit.Client.deliveries>`, awaited."""
        return await self._run(self._client.deliveries, status=status, callback=callback)

    async def retry_dead_letters(self, callback: str | None = None) -> int:
        """:meth:`Client.retry_dead_letters <pqlkit.Client.retry_dead_letters>`, awaited."""
        return await self._run(self._client.retry_dead_letters, callback)

    # -- time and model changes ------------------------------------------------------------
    async def sweep(self, now: datetime | None = None) -> list[Qualification]:
        """:meth:`Client.sweep <pqlkit.Client.sweep>`, awaited."""
        return await self._run(self._client.sweep, now)

    async def prune(
        self,
        older_than: timedelta | None = None,
        *,
        dry_run: bool = False,
        deliveries_older_than: timedelta | None = None,
    ) -> PruneResult:
        """:meth:`Client.prune <pqlkit.Client.prune>`, awaited (on a worker thread)."""
        return await self._run(
            self._client.prune,
            older_than,
            dry_run=dry_run,
            deliveries_older_than=deliveries_older_than,
        )

    async def rebuild(self, *, on_retune: Literal["fire", "record"] | None = None) -> int:
        """:meth:`Client.rebuild <pqlkit.Client.rebuild>`, awaited."""
        return await self._run(self._client.rebuild, on_retune=on_retune)
