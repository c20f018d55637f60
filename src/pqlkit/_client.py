"""Client: records events, evaluates the model inline, and fires qualifications.

The public face of :class:`~pqlkit._core.Core`, which does the work: this class
checks its arguments and hands every call on. It stays plain Python in every
build, so a wrong argument type meets pqlkit's own checks (a
:class:`ValidationError` naming the field) also where ``_core`` and ``_engine``
are compiled with mypyc, whose compiled functions check argument types
themselves and raise ``TypeError``.
"""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from typing_extensions import Unpack, overload

from . import _shutdown
from ._clock import Clock, SystemClock
from ._core import Core
from ._dispatch import Callback, Delivery, register_or_decorate
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
from ._observe import DeliveryFailureHook, FailureHook, Observer, overrides_track
from ._settings import ClientOptions, Settings, environment_store, resolve
from .exceptions import ValidationError
from .stores._base import Store

if TYPE_CHECKING:
    import psycopg

__all__ = ["Client"]

F = TypeVar("F", bound=Callback)
H = TypeVar("H", bound=DeliveryFailureHook)


class Client:
    """Records events into a store, evaluates the model inline, fires qualifications.

    One Client is meant to be shared by every thread of a process (it is
    thread-safe); several processes may share one store.

    Args:
        model: The :class:`~pqlkit.Model` to evaluate.
        store: A :class:`~pqlkit.Store`, or a URL: ``"sqlite:///path.db"``,
            ``"sqlite://:memory:"``, ``"memory://"``, ``"postgresql://..."``.
            Default: the URL in the environment variable ``PQLKIT_STORE_URL``, or
            without one the SQLite file ``pqlkit.db`` in the working directory.
        clock: Where "now" comes from (default: the system clock, UTC).
        shadows: Candidate models to run beside ``model`` on live traffic (see
            docs/lab.md, "Shadow a candidate"): each event also updates their states
            and records their qualifications under their own names, in the same
            transaction, with no callbacks (nothing is enqueued for them). Their
            names must differ from ``model``'s and from each other's. A shadow new
            to a store that has events is built from the log first, delivering
            nothing. ``stats(model=name)`` reports one; promoting one is building a
            client with it as its ``model``: its states are current, nothing is
            rebuilt.
        settings: A :class:`~pqlkit.Settings`. Default: the defaults, under what the
            ``PQLKIT_*`` environment variables set (``PQLKIT_DISPATCH``,
            ``PQLKIT_INLINE_BUDGET``, ``PQLKIT_DELIVERY_WINDOW``,
            ``PQLKIT_MAX_ATTEMPTS``; see docs/deployment.md). A Settings passed here
            is used as it is: the environment is not read for it.
        **options: Any field of :class:`~pqlkit.Settings` as a keyword
            (``dispatch="background"``, ``max_attempts=5``, ``inline_budget=...``),
            overriding ``settings`` and the environment: typed by
            :class:`~pqlkit.ClientOptions`.

    Raises:
        ValidationError: An argument is malformed, or a ``PQLKIT_*`` environment
            variable this client reads is (naming the variable).
        StoreError: The store cannot be opened.

    Example:
        >>> import pqlkit
        >>> from pqlkit import Model, did, points, score
        >>> model = Model("doc", signals={"built": did("dashboard_built")},
        ...               scores={"behavior": points(built=60)},
        ...               pql=score("behavior") >= 50)
        >>> with pqlkit.Client(model, store="memory://") as client:
        ...     client.track("u1", "dashboard_built").qualified[0].subject_id
        'u1'
    """

    def __init__(
        self,
        model: Model,
        store: Store | str | None = None,
        *,
        clock: Clock | None = None,
        shadows: Sequence[Model] = (),
        settings: Settings | None = None,
        **options: Unpack[ClientOptions],
    ) -> None:
        from .stores import open_store

        if not isinstance(model, Model):
            raise ValidationError("model", f"must be a pqlkit.Model, got {type(model).__name__}")
        resolved = resolve(settings, dict(options), "Client", os.environ)
        if clock is not None and not callable(getattr(clock, "now", None)):
            raise ValidationError("clock", "must have a now() method returning an aware datetime")
        owns_store = not (store is not None and not isinstance(store, str))
        if store is None:  # PQLKIT_STORE_URL, or (None) the default SQLite file
            store = environment_store(os.environ)
        self.model = model
        self._settings = resolved
        self._core = Core(
            model,
            open_store(store),
            owns_store=owns_store,
            clock=clock if clock is not None else SystemClock(),
            settings=resolved,
            shadows=shadows,
        )
        self._tracers: tuple[Observer, ...] = ()  # the observers that wrap track()
        exit_wait = resolved.flush_at_exit
        if exit_wait:  # None or 0: no exit hook
            _shutdown.register(self, exit_wait.total_seconds())

    @property
    def settings(self) -> Settings:
        """This client's settings (the keywords it was built with, over the defaults)."""
        return self._settings

    @property
    def clock(self) -> Clock:
        """Where this client's "now" comes from."""
        return self._core.clock

    def __repr__(self) -> str:
        return f"Client(model={self.model.name!r}, store={self._core.store!r})"

    # -- lifecycle ---------------------------------------------------------------
    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        core = getattr(self, "_core", None)
        if core is not None and not core.closed:
            warnings.warn(
                f"{self!r} was never closed; call close() or use it as a context manager",
                ResourceWarning,
                stacklevel=1,
            )

    def close(self, timeout: float | None = 10.0) -> None:
        """Deliver what is due for up to ``timeout`` seconds, stop the worker, close the store.

        Bounded: what is not delivered by then stays pending (logged as a warning
        on the ``pqlkit`` logger), for another process or the next start. A
        callback still running is abandoned, not interrupted. ``timeout=None``
        waits for every due delivery. The store is closed only if this client
        opened it (from a URL).

        A client left open is closed when the interpreter exits, with
        ``timeout=flush_at_exit`` (a setting, 5 s by default).
        """
        _shutdown.unregister(self)
        self._core.close(timeout)

    @property
    def store(self) -> Store:
        """The store this client writes to."""
        return self._core.store

    # -- callbacks -----------------------------------------------------------------
    # Each callback is registered under a name (default: the function's module and
    # qualified name) and gets a delivery record of its own: one failing callback
    # never stops, repeats or dead-letters another, and a restarted process picks
    # up where the same names left off.
    def on(
        self,
        kind: Literal["pql", "pqa", "disqualified"],
        fn: Callback,
        *,
        name: str | None = None,
    ) -> Callback:
        """Register ``fn`` for ``"pql"``, ``"pqa"`` or ``"disqualified"`` deliveries.

        Raises:
            ValidationError: ``name`` (by default ``fn``'s module and qualified
                name) is taken by another callback of this kind on this client, or
                is empty.
        """
        self._core.on(kind, fn, name)
        return fn

    @overload
    def on_pql(self, fn: F, /, *, name: str | None = None) -> F: ...
    @overload
    def on_pql(self, fn: None = None, /, *, name: str | None = None) -> Callable[[F], F]: ...
    def on_pql(self, fn: F | None = None, /, *, name: str | None = None) -> F | Callable[[F], F]:
        """Decorator: call ``fn(qualification)`` when a user first qualifies.

        ``@client.on_pql``, ``@client.on_pql(name="slack")`` or
        ``client.on_pql(fn, name="slack")``. The name (default: ``fn``'s module and
        qualified name, e.g. ``"myapp.hooks.alert_owner"``) identifies the callback's
        deliveries across restarts and processes; keep it stable.

        Example:
            >>> import pqlkit
            >>> from pqlkit import Model, did
            >>> with pqlkit.Client(Model("doc", pql=did("x")), store="memory://") as client:
            ...     @client.on_pql(name="slack")
            ...     def post(q: pqlkit.Qualification) -> None:
            ...         print("slack:", q.subject_id)
            ...     _ = client.track("u1", "x")
            slack: u1
        """
        return self._decorate("pql", fn, name)

    @overload
    def on_pqa(self, fn: F, /, *, name: str | None = None) -> F: ...
    @overload
    def on_pqa(self, fn: None = None, /, *, name: str | None = None) -> Callable[[F], F]: ...
    def on_pqa(self, fn: F | None = None, /, *, name: str | None = None) -> F | Callable[[F], F]:
        """Decorator: call ``fn(qualification)`` when an account first qualifies (see on_pql)."""
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
        """Call ``fn(qualification)`` when a subject fires the model's play ``play``.

        ``@client.on_play("ae_handoff")``, ``@client.on_play("ae_handoff", name="crm")``
        or ``client.on_play("ae_handoff", fn, name="crm")``. Only that play's
        qualifications (``q.kind == "play"``, ``q.play == play``) reach it, with
        the guarantees of ``on_pql``; held-out ones (the play's ``holdout``) never do.

        Raises:
            ValidationError: ``play`` is not one of the model's plays (field
                ``"play"``), or the callback's name is taken for that play.

        Example:
            >>> import pqlkit
            >>> from pqlkit import Model, active_users, play
            >>> model = Model("doc", plays={"ae_handoff": play(active_users() >= 2, of="account")})
            >>> with pqlkit.Client(model, store="memory://", dispatch="inline") as client:
            ...     @client.on_play("ae_handoff")
            ...     def hand_off(q: pqlkit.Qualification) -> None:
            ...         print(q.kind, q.play, q.subject_id)
            ...     _ = client.track("u1", "login", account_id="acme")
            ...     _ = client.track("u2", "login", account_id="acme")
            play ae_handoff acme
        """
        return register_or_decorate(lambda f: self._core.on_play(play, f, name), fn)

    def _decorate(
        self, kind: Literal["pql", "pqa", "disqualified"], fn: F | None, name: str | None
    ) -> F | Callable[[F], F]:
        return register_or_decorate(lambda f: self._core.on(kind, f, name), fn)

    # -- telemetry -------------------------------------------------------------------
    def on_delivery_error(self, fn: H, /) -> H:
        """Call ``fn(failure)`` whenever a callback fails, and when a delivery is dead-lettered.

        Usable as a decorator. ``fn`` gets a frozen :class:`~pqlkit.DeliveryFailure`:
        the qualification, the callback's name, the attempt, the exception
        (None for a delivery dead-lettered because its attempts died with their
        process), and when it is retried (None once dead-lettered:
        ``failure.dead``). It runs on the delivering thread, right after the
        outcome is recorded; an exception it raises is logged and ignored. Use
        it to page someone, count failures in your own metrics, or report to an
        error tracker: the failure is also logged on the ``pqlkit`` logger.

        Raises:
            ValidationError: ``fn`` is not callable.

        Example:
            >>> import pqlkit
            >>> from pqlkit import Model, did
            >>> with pqlkit.Client(Model("doc", pql=did("x")), store="memory://") as client:
            ...     @client.on_pql(name="crm")
            ...     def push(q: pqlkit.Qualification) -> None:
            ...         raise ConnectionError("crm is down")
            ...     @client.on_delivery_error
            ...     def page(failure: pqlkit.DeliveryFailure) -> None:
            ...         print(failure.callback, failure.attempt, repr(failure.error), failure.dead)
            ...     _ = client.track("u1", "x")
            crm 1 ConnectionError('crm is down') False
        """
        if not callable(fn):
            raise ValidationError("fn", "must be callable")
        self.add_observer(FailureHook(fn))
        return fn

    def add_observer(self, observer: Observer) -> None:
        """Tell ``observer`` what this client does (for telemetry integrations).

        ``observer`` is a :class:`pqlkit.integrations.Observer`: its ``track()``
        wraps each ``track()`` call (only if the observer overrides it), and its
        ``fired()``, ``delivered()`` and ``failed()`` hear of each qualification
        fired and each delivery attempt. Add observers at startup, before the
        client is shared by threads. ``pqlkit.integrations.otel.instrument()``
        adds one; a client with none pays nothing for the hooks.

        Raises:
            ValidationError: ``observer`` is not an Observer.
        """
        if not isinstance(observer, Observer):
            raise ValidationError(
                "observer",
                f"must be a pqlkit.integrations.Observer, got {type(observer).__name__}",
            )
        self._core.add_observer(observer)
        if overrides_track(observer):
            self._tracers = (*self._tracers, observer)

    # -- recording -------------------------------------------------------------------
    def track(
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
        """Record an event, evaluate the model for the user (and account), fire what is due.

        Args:
            user_id: Who did it.
            event: What they did (a non-empty name).
            properties: A JSON object describing it.
            account_id: The account it counts for too.
            timestamp: When it happened (aware; default: the clock's now). Events
                may arrive out of order.
            message_id: Idempotency key; a repeated one is ignored. Default: a fresh
                time-ordered UUID (version 7).
            connection: PostgresStore only: your psycopg connection, to write the
                event (and any qualification it fires) inside your own open
                transaction. pqlkit never commits it: your commit keeps the event,
                your rollback leaves nothing. Callbacks run on the next
                ``track()`` or ``flush()`` after your commit. Until then, other
                writes for the same user and account wait for your transaction.

        Returns:
            What the call changed: qualifications fired, the user's scores, and
            whether it was a duplicate.

        Raises:
            ValidationError: Bad input (or a ``connection`` on a store other than
                PostgresStore); nothing was stored.
            ClientClosedError: The client is closed; nothing was stored.
            StoreError: The store could not commit the write (including
                :class:`~pqlkit.exceptions.TransientStoreError`); nothing was stored,
                so calling again is safe. Once the event is committed, ``track()``
                never raises: trouble delivering what it fired is logged on the
                ``pqlkit`` logger, and the delivery stays pending.
        """
        if not self._tracers:
            return self._core.track(
                user_id, event, properties, account_id, timestamp, message_id, connection
            )
        call = functools.partial(
            self._core.track,
            user_id,
            event,
            properties,
            account_id,
            timestamp,
            message_id,
            connection,
        )
        for observer in self._tracers:
            call = functools.partial(observer.track, call, event, account_id)
        return call()

    def track_many(
        self,
        events: Iterable[Event | Mapping[str, Any]],
        *,
        connection: psycopg.Connection[Any] | None = None,
    ) -> BulkResult:
        """Record many events (import, backfill): the same semantics as repeated ``track()``.

        Events are validated and written in batches of 500, one transaction per
        batch. A bad event raises :class:`ValidationError` naming its index
        (``events[12].user_id``); earlier batches stay stored, nothing of its own
        batch is. ``connection`` works as in :meth:`track`.
        """
        return self._core.track_many(events, connection)

    def check_event(self, event: Event | Mapping[str, Any]) -> Event:
        """Check an event as :meth:`track_many` would, without storing anything.

        Returns it as it would be stored: properties copied as plain JSON data,
        the timestamp in UTC (the client's clock's now if it had none), and a
        fresh ``message_id`` if it had none. An import can check every line
        before it writes any.

        Raises:
            ValidationError: As :meth:`track` would, naming the field.

        Example:
            >>> import pqlkit
            >>> with pqlkit.Client(pqlkit.Model("doc"), store="memory://") as client:
            ...     checked = client.check_event({"user_id": "u1", "event": "login"})
            >>> checked.timestamp.tzinfo, checked.message_id is not None
            (datetime.timezone.utc, True)
        """
        return self._core.check_event(event)

    def identify(
        self,
        user_id: str,
        traits: Mapping[str, Any] | None = None,
        *,
        account_id: str | None = None,
    ) -> None:
        """Merge ``traits`` into the user's stored traits (and note its account).

        The user's account is the ``account_id`` of its latest event that has
        one, otherwise the one given here. The user is re-evaluated.
        """
        self._core.identify(user_id, traits, account_id)

    def group(self, account_id: str, traits: Mapping[str, Any] | None = None) -> None:
        """Merge ``traits`` into the account's stored traits; re-evaluate it and its users."""
        self._core.group(account_id, traits)

    def alias(self, previous_id: str, user_id: str) -> None:
        """Make events recorded under ``previous_id`` count for ``user_id`` from now on.

        Chains resolve (a -> b, b -> c: a counts for c). If both ids have events
        their histories merge; the user and its accounts are rebuilt from the log.
        """
        self._core.alias(previous_id, user_id)

    def forget(self, user_id: str, *, suppress: bool = False, vacuum: bool = False) -> None:
        """Delete everything stored about a user (GDPR): events, traits, aliases, qualifications,
        nudges, and its state under every model sharing the store.

        Its accounts are rebuilt without its events (other models' states of them
        are marked for a rebuild from the log when their model next reads them);
        its events leave the context of its accounts' stored qualifications
        (pending, sent or dead), and its values quoted in their explanations and
        context become ``"[forgotten]"``. Then the store scrubs its files: SQLite
        truncates its write-ahead log (deleted rows are zeroed: ``secure_delete``);
        PostgreSQL, with ``vacuum=True``, vacuums its tables. A later ``track()``
        for the id starts fresh. See docs/privacy.md.

        Args:
            user_id: The user (or any of its aliases).
            suppress: Also record each of its ids (as a keyed one-way digest) so that
                later ``track()``, ``identify()`` and ``alias()`` calls for them are
                dropped, by every client of the store (``TrackResult.suppressed``,
                counted in ``stats().suppressed``) until :meth:`unsuppress`.
            vacuum: On PostgreSQL, run ``VACUUM`` on the affected tables afterwards, so
                no dead row version keeps the data (SQLite: ``VACUUM`` the file).
        """
        self._core.forget(user_id, suppress=suppress, vacuum=vacuum)

    def forget_preview(self, user_id: str) -> dict[str, int]:
        """What :meth:`forget` would delete, changing nothing: rows per table (``events``,
        ``traits``, ``aliases``, ``nudges``, every model's ``states`` and ``ranks``,
        ``qualifications`` and ``deliveries`` of its PQLs), the stored account payloads
        it would redact and the accounts it would rebuild (``pqlkit forget --dry-run``)."""
        return self._core.forget_preview(user_id)

    def unsuppress(self, user_id: str) -> bool:
        """Lift a suppression made by ``forget(user_id, suppress=True)``: calls for the id
        are recorded again. Returns False if the id was not suppressed."""
        return self._core.unsuppress(user_id)

    # -- nudges ------------------------------------------------------------------------
    # A nudge is a message waiting in a user's in-app inbox, kept in the store: every
    # worker process sees it, the next page any of them renders shows it.
    def nudge(
        self,
        user_id: str,
        key: str,
        payload: Mapping[str, Any] | None = None,
        *,
        until: datetime | timedelta | None = None,
    ) -> bool:
        """Open a nudge for the user, unless one with this ``key`` is open already.

        Idempotent per user and key while it is open: calling again (from any thread,
        process or server) opens nothing and returns False, even with another
        payload. Once it is clicked, dismissed or past ``until``, the key opens again.

        Args:
            user_id: Who it is for (an alias resolves to its final id).
            key: Its idempotency key, e.g. ``"upgrade"``.
            payload: What your app shows: a JSON object (title, body, link...) of at most
                16 KiB (16,384 bytes) as compact UTF-8 JSON.
            until: When it stops being shown: an aware datetime, or a timedelta from now.
                Default: until it is clicked or dismissed.

        Returns:
            True if this call opened it.

        Raises:
            ValidationError: A bad id, key, payload (not a JSON object, not
                JSON-serialisable, too large) or ``until`` (naive, not after now),
                naming the field; nothing was stored.

        Example:
            >>> import pqlkit
            >>> with pqlkit.Client(pqlkit.Model("doc"), store="memory://") as client:
            ...     client.nudge("u1", "upgrade", {"title": "You're close to your row limit"})
            ...     client.nudge("u1", "upgrade", {"title": "a second one"})
            ...     [n.payload["title"] for n in client.nudges("u1")]
            True
            False
            ["You're close to your row limit"]
        """
        return self._core.nudge(user_id, key, payload, until)

    def nudges(self, user_id: str) -> list[Nudge]:
        """The user's open nudges, oldest first (one store read: cheap on every page).

        Open: neither clicked nor dismissed, and not past its ``until``. A nudge
        marked ``"seen"`` is still listed (with ``seen_at``): show it or not as
        your app prefers.
        """
        return self._core.nudges(user_id)

    def mark(self, user_id: str, key: str, action: Literal["seen", "clicked", "dismissed"]) -> bool:
        """Record what the user did with their nudge ``key``.

        ``"seen"`` sets its ``seen_at`` (the first time) and keeps it open;
        ``"clicked"`` and ``"dismissed"`` close it. Each mark that changes the nudge
        is also recorded as an event, ``nudge_seen``, ``nudge_clicked`` or
        ``nudge_dismissed`` with the property ``key``, which the model may read
        (``count("nudge_dismissed", where={"key": "upgrade"}) >= 2``); like any event
        it counts for ``count()``, ``active_days()`` and ``idle()``, and may fire.

        Returns:
            True if it changed the nudge; False if there was nothing to change (seen
            already, or closed already: a repeated click is harmless).

        Raises:
            ValidationError: ``action`` is not one of the three, or the user has no
                nudge ``key`` (naming the field); nothing was stored.

        Example:
            >>> import pqlkit
            >>> with pqlkit.Client(pqlkit.Model("doc"), store="memory://") as client:
            ...     _ = client.nudge("u1", "upgrade")
            ...     client.mark("u1", "upgrade", "clicked"), client.nudges("u1")
            (True, [])
        """
        return self._core.mark(user_id, key, action)

    # -- reading -----------------------------------------------------------------------
    def scores(self, subject_id: str, *, of: SubjectKind = "user") -> dict[str, float]:
        """The subject's current scores (evaluated at the later of now and its newest event)."""
        return self._core.scores(subject_id, of)

    def signals(self, subject_id: str, *, of: SubjectKind = "user") -> dict[str, bool]:
        """The subject's current signals, name to truth."""
        return self._core.signals(subject_id, of)

    def explain(self, subject_id: str, *, of: SubjectKind = "user") -> list[str]:
        """Why the subject scores what it does: a line per signal, per score, and the rule.

        Example:
            ``habit: active_days(within=7d) = 6 >= 5 -> true``
        """
        return self._core.explain(subject_id, of)

    def top(self, score: str, *, n: int = 50, of: SubjectKind = "user") -> list[tuple[str, float]]:
        """The ``n`` subjects with the highest current value of a ranked score, highest first.

        ``(subject id, value)`` pairs, ties by subject id; users, or accounts with
        ``of="account"``. The score must be declared in ``Model(..., ranked=[...])``:
        its values are kept in an index as they change, so this reads the index, not
        every subject's state. "Current": the value as :meth:`scores` would give it
        now. A value that time alone may have changed since the subject's last
        evaluation (a window's exit, an ``idle()`` flip) is re-evaluated first, so
        the first call after a quiet spell may take longer.

        Raises:
            ValidationError: ``score`` is unknown or not ranked, ``n`` is not an int
                from 1 to 10,000, or ``of`` is not "user" or "account".

        Example:
            >>> import pqlkit
            >>> from pqlkit import Model, count
            >>> model = Model("doc", scores={"logins": count("login")}, ranked=["logins"])
            >>> with pqlkit.Client(model, store="memory://") as client:
            ...     for user, logins in [("ada", 3), ("bo", 1), ("cy", 2)]:
            ...         for _ in range(logins):
            ...             _ = client.track(user, "login")
            ...     client.top("logins", n=2)
            [('ada', 3.0), ('cy', 2.0)]
        """
        return self._core.top(score, n, of)

    def qualified_at(
        self, subject_id: str, *, kind: Literal["pql", "pqa"] = "pql", play: str | None = None
    ) -> datetime | None:
        """When the subject last fired ``kind`` (or ``play``) under the model; None if never.

        ``kind="pql"`` reads a user (aliases resolved), ``kind="pqa"`` an account;
        ``play="name"`` reads that play's subject (``kind`` is then ignored), a
        held-out qualification included.
        A later disqualification does not clear it: it tells that the rule fired.

        Example:
            >>> import pqlkit
            >>> from pqlkit import Model, did
            >>> model = Model("doc", signals={"x": did("x")}, pql=did("x"))
            >>> with pqlkit.Client(model, store="memory://") as client:
            ...     before = client.qualified_at("u1")
            ...     _ = client.track("u1", "x")
            ...     before is None, client.qualified_at("u1") is not None
            (True, True)
        """
        return self._core.qualified_at(subject_id, kind, play)

    def qualifications(
        self,
        *,
        kind: Literal["pql", "pqa", "play"] | None = None,
        play: str | None = None,
        since: datetime | timedelta | None = None,
        before: Qualification | str | None = None,
        limit: int = 100,
        model: str | None = None,
    ) -> list[Qualification]:
        """Who qualified under this model, newest first: a page of at most ``limit``.

        Ordered by ``qualified_at``, latest first (ties by ``id``). Each is the
        :class:`Qualification` its callbacks got, with ``disqualified_at`` set when
        its rule has turned false since (None while it holds). Scores, signals,
        explanation, context and a user's ``account_id`` come from the stored
        payload, which the outbox keeps for ``delivery_window`` plus
        ``delivery_retention`` (8 days by default); an older qualification, or one
        recorded without delivery (``on_retune="record"``), has them empty (and
        ``account_id`` None for a user). A re-qualification (``requalify_after``) is
        listed as a qualification of its own.

        Args:
            kind: ``"pql"``, ``"pqa"`` or ``"play"``; None lists every kind.
            play: Only this play's (plays fire with ``kind="play"``); a name the
                model does not declare is a ValidationError naming ``play``.
                Held-out qualifications are listed with ``holdout=True``.
            since: Only those that qualified at or after this aware datetime; a
                ``timedelta`` counts back from the clock's now (``since=days(7)``).
            before: The cursor of the next page: the last Qualification of the
                page before (or its ``id``). Only those listed after it come.
            limit: The page's size (at least 1).
            model: A shadow's name: its recorded qualifications (never delivered,
                so only what their records hold: no scores, signals nor context).

        Raises:
            ValidationError: A bad argument, or ``before`` names no qualification
                of this model (it was forgotten, say), naming the field.

        Example:
            >>> import pqlkit
            >>> from pqlkit import Model, did
            >>> with pqlkit.Client(Model("doc", pql=did("x")), store="memory://") as client:
            ...     for user in ("u1", "u2", "u3"):
            ...         _ = client.track(user, "x")
            ...     page = client.qualifications(kind="pql", limit=2)
            ...     rest = client.qualifications(kind="pql", before=page[-1], limit=2)
            ...     len(page), len(rest)
            (2, 1)
        """
        return self._core.qualifications(kind, play, since, before, limit, model)

    # -- outbox ------------------------------------------------------------------------
    def flush(self, timeout: float | None = None) -> int:
        """Attempt every due delivery now (retries included), on the dispatch thread.

        Returns when each was attempted, or after ``timeout`` seconds: then it
        returns how many due deliveries it left pending (and logs them), 0 when
        none. A callback still running is not interrupted.
        """
        return self._core.flush(timeout)

    def pending(self) -> list[Qualification]:
        """Qualifications (and disqualifications) not delivered yet, oldest first.

        One not delivered to some callback yet, or taken by none yet (within its
        ``delivery_window``), each listed once.
        """
        return self._core.pending()

    def dead_letters(self) -> list[Qualification]:
        """Qualifications whose delivery to some callback exhausted ``max_attempts``."""
        return self._core.dead_letters()

    def deliveries(
        self,
        *,
        status: Literal["pending", "delivered", "dead", "expired"] | None = None,
        callback: str | None = None,
    ) -> list[Delivery]:
        """The delivery records: one per qualification and callback, oldest first.

        A qualification that no callback took yet is listed once with
        ``callback=None`` ("pending", or "expired" once its ``delivery_window``
        closed). Without ``status``, every status, pending ones first, then dead,
        delivered and expired. Delivered and expired records are kept for
        ``delivery_retention`` after the window closed.

        Example:
            >>> import pqlkit
            >>> from pqlkit import Model, did
            >>> with pqlkit.Client(Model("doc", pql=did("x")), store="memory://") as client:
            ...     _ = client.on_pql(lambda q: None, name="crm")
            ...     _ = client.track("u1", "x")
            ...     for d in client.deliveries():
            ...         print(d.callback, d.status, d.qualification.subject_id)
            crm delivered u1
        """
        return self._core.deliveries(status, callback)

    def retry_dead_letters(self, callback: str | None = None) -> int:
        """Make dead deliveries (of ``callback`` only, if given) pending again, due now.

        Returns how many.
        """
        return self._core.retry_dead_letters(callback)

    # -- time and model changes ------------------------------------------------------------
    def sweep(self, now: datetime | None = None) -> list[Qualification]:
        """Re-evaluate subjects whose rule can change with time alone; fire what is due.

        Only subjects whose due time has come are read (a due-time index), so the
        cost follows the subjects due, not all subjects. The values of ranked scores
        (``Model(..., ranked=...)``) that time alone changed are brought up to date
        too, so that :meth:`top` finds them current. Returns the qualifications and
        disqualifications it fired.
        """
        return self._core.sweep(now)

    def rebuild(self, *, on_retune: Literal["fire", "record"] | None = None) -> int:
        """Rebuild every subject's derived state from the event log; fire what now qualifies.

        Happens automatically when a Client starts with a model whose fingerprint
        differs from the stored one. The rebuild runs in short transactions, so
        other writers (threads and processes) get in between them; another Client
        that needs the same rebuild waits for this one, and one interrupted is
        resumed by the next Client that starts. Returns the number of events
        replayed.

        Args:
            on_retune: ``"fire"`` delivers the qualifications and
                disqualifications the rebuild finds; ``"record"`` records them
                without delivering anything. Default: the model's ``on_retune``.
        """
        return self._core.rebuild(on_retune)

    def prune(
        self,
        older_than: timedelta | None = None,
        *,
        dry_run: bool = False,
        deliveries_older_than: timedelta | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> PruneResult:
        """Delete the events older than ``older_than`` (default: the ``retention``
        setting) without changing any score.

        Each subject's state folded over those events is stored first as a
        checkpoint (per model: this client's and its shadows'), and a rebuild starts
        from it, so every signal, score and rule reads what it read before: all-time
        counts, first seen, ``distinct``, ``last``, windows. What is pruned is the
        longest run of the log, in arrival order, whose events are all older than the
        horizon. It runs in short transactions (other writers get in between them);
        one interrupted leaves what it finished done. It runs only when called (from a
        cron job, ``pqlkit prune``, or your own scheduler), never inside ``track()``.

        Afterwards an id whose events were pruned cannot be merged by ``alias()``
        (refused with a ValidationError), a client of another model version on this
        store is refused unless it passes ``accept_partial_rebuild=True``, and the
        recent events a Qualification's context lists and the lab's backtests read
        only the events kept.

        Args:
            older_than: How old an event must be to go (a positive timedelta).
            dry_run: Count what would go; change nothing.
            deliveries_older_than: Also delete the outbox's finished qualifications
                (delivered or expired, every delivery of them) that finished before
                this long ago (``delivery_retention`` does it as deliveries run).
            progress: Called as ``progress(done, total)`` (events of the log) after
                each chunk.

        Raises:
            ValidationError: No ``older_than`` and no ``retention`` setting, or a
                value of the wrong type, naming it.

        Example:
            >>> import pqlkit
            >>> from datetime import datetime, timedelta, timezone
            >>> model = pqlkit.Model("doc", signals={"active": pqlkit.count("login") >= 2})
            >>> with pqlkit.Client(model, store="memory://", retention=pqlkit.days(400)) as c:
            ...     old = datetime.now(timezone.utc) - timedelta(days=500)
            ...     _ = c.track("u1", "login", timestamp=old)
            ...     _ = c.track("u1", "login")
            ...     result = c.prune()
            ...     result.events, c.signals("u1")["active"]
            (1, True)
        """
        return self._core.prune(older_than, dry_run, deliveries_older_than, progress)

    @property
    def shadows(self) -> tuple[Model, ...]:
        """The candidate models this client shadows (``Client(..., shadows=[...])``)."""
        return self._core.shadows

    def stats(self, model: str | None = None) -> Stats:
        """Funnel health: users, accounts, PQLs, PQAs, the PQL rate and time to PQL.

        Of this client's model, or with ``model`` of one of its shadows, by name
        (a name that is neither raises :class:`~pqlkit.ValidationError`).
        """
        return self._core.stats(model)
