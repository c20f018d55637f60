"""Helpers for testing code that uses pqlkit.

* :data:`FakeStore` and :class:`FrozenClock`: an in-memory store and a clock
  that moves only when told to;
* :func:`recorder`: captures every qualification a client delivers;
* :func:`journey`: plays a user's story day by day on a frozen clock;
* :func:`assert_qualified`, :func:`assert_not_qualified`, :func:`assert_score`:
  assertions whose failure messages hold the subject's ``explain()`` lines;
* :func:`use`: installs a client as pqlkit's module-level default for a block.

With pytest, the fixtures ``pql_clock``, ``pql_store`` and ``pql_client`` are
available without any ``conftest.py`` (see :class:`ClientFactory`). This module
does not import pytest.

Example:
    >>> from pqlkit import Client, Model, did
    >>> from pqlkit.testing import FakeStore, FrozenClock, START, assert_qualified, journey
    >>> model = Model("doc", signals={"built": did("dashboard_built")}, pql=did("dashboard_built"))
    >>> with Client(model, store=FakeStore(), clock=FrozenClock(START)) as client:
    ...     _ = journey(client, "u1").day(2).track("dashboard_built")
    ...     assert_qualified(client, "u1")
    ...     client.qualified_at("u1").isoformat()
    '2026-01-07T09:00:00+00:00'
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import Any, Literal, Protocol, overload

from typing_extensions import Unpack

from . import _default
from ._client import Client
from ._events import Qualification, SubjectKind, TrackResult
from ._model import Model
from ._settings import ClientOptions
from .exceptions import ValidationError
from .stores.memory import MemoryStore

__all__ = [
    "ClientFactory",
    "FakeStore",
    "FrozenClock",
    "Journey",
    "Recorder",
    "START",
    "assert_not_qualified",
    "assert_qualified",
    "assert_score",
    "journey",
    "recorder",
    "use",
]

FakeStore = MemoryStore
"""The in-memory store, under the name test suites expect."""

START = datetime(2026, 1, 5, 9, 0, tzinfo=timezone.utc)
"""Where the ``pql_clock`` fixture starts: Monday 2026-01-05, 09:00 UTC."""


class FrozenClock:
    """A clock that stands still until told to move.

    Args:
        start: An aware datetime.

    Example:
        >>> from datetime import datetime, timedelta, timezone
        >>> clock = FrozenClock(datetime(2026, 1, 1, tzinfo=timezone.utc))
        >>> clock.advance(timedelta(days=2)).isoformat()
        '2026-01-03T00:00:00+00:00'
    """

    def __init__(self, start: datetime) -> None:
        self._now = _aware(start, "start")
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"FrozenClock({self._now.isoformat()})"

    def now(self) -> datetime:
        """The frozen time."""
        with self._lock:
            return self._now

    def advance(self, delta: timedelta) -> datetime:
        """Move forward by ``delta`` and return the new time."""
        if not isinstance(delta, timedelta):
            raise ValidationError("delta", f"must be a timedelta, got {type(delta).__name__}")
        with self._lock:
            self._now += delta
            return self._now

    def set(self, when: datetime) -> datetime:
        """Jump to ``when`` (an aware datetime) and return it."""
        value = _aware(when, "when")
        with self._lock:
            self._now = value
            return value


def _aware(value: datetime, field: str) -> datetime:
    from ._validation import check_timestamp

    return check_timestamp(value, field)


class ClientFactory(Protocol):
    """The ``pql_client`` fixture: ``pql_client(model, **options) -> Client``.

    It builds ``Client(model, store=pql_store, clock=pql_clock, dispatch="inline",
    **options)`` (``options``: the fields of :class:`~pqlkit.Settings`, over the
    defaults: the ``PQLKIT_*`` environment variables are not read) and closes
    every client it built after the test. Use it to annotate the fixture in your tests.

    Example:
        ``def test_signup(pql_client: ClientFactory) -> None: ...``
    """

    def __call__(self, model: Model, /, **options: Unpack[ClientOptions]) -> Client:
        """Build a Client for ``model`` on the test's store and frozen clock."""


# -- recorder ---------------------------------------------------------------------------------

_Delivery = Literal["pql", "pqa", "disqualified"]


class Recorder(Sequence[Qualification]):
    """The qualifications a client delivered to its callbacks, in delivery order.

    Made by :func:`recorder`. It is a read-only sequence (``list(rec)``,
    ``len(rec)``, ``rec[0]``, ``q in rec``) of every delivery; ``pql``, ``pqa``
    and ``disqualified`` hold those of one kind. Delivery is at least once: a
    delivery retried (the process died while recording it, say) is recorded
    again, with the same ``id``. Another callback's failure never makes it so.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._all: list[Qualification] = []
        self._kinds: dict[_Delivery, list[Qualification]] = {
            "pql": [],
            "pqa": [],
            "disqualified": [],
        }
        self._plays: dict[str, list[Qualification]] = {}

    def __repr__(self) -> str:
        counts = ", ".join(f"{kind}={len(items)}" for kind, items in self._kinds.items())
        return f"Recorder({counts})"

    def _capture(self, kind: _Delivery, qualification: Qualification) -> None:
        with self._lock:
            self._all.append(qualification)
            self._kinds[kind].append(qualification)

    def _on_pql(self, qualification: Qualification, /) -> None:
        self._capture("pql", qualification)

    def _on_pqa(self, qualification: Qualification, /) -> None:
        self._capture("pqa", qualification)

    def _on_disqualified(self, qualification: Qualification, /) -> None:
        self._capture("disqualified", qualification)

    def _on_play(self, qualification: Qualification, /) -> None:
        with self._lock:
            self._all.append(qualification)
            self._plays.setdefault(qualification.play or "", []).append(qualification)

    @overload
    def __getitem__(self, index: int) -> Qualification: ...

    @overload
    def __getitem__(self, index: slice) -> list[Qualification]: ...

    def __getitem__(self, index: int | slice) -> Qualification | list[Qualification]:
        with self._lock:
            return self._all[index]

    def __len__(self) -> int:
        with self._lock:
            return len(self._all)

    def __iter__(self) -> Iterator[Qualification]:
        with self._lock:
            return iter(list(self._all))

    @property
    def pql(self) -> list[Qualification]:
        """Deliveries to ``on_pql`` callbacks (users that qualified), in order."""
        with self._lock:
            return list(self._kinds["pql"])

    @property
    def pqa(self) -> list[Qualification]:
        """Deliveries to ``on_pqa`` callbacks (accounts that qualified), in order."""
        with self._lock:
            return list(self._kinds["pqa"])

    @property
    def plays(self) -> dict[str, list[Qualification]]:
        """Deliveries to ``on_play`` callbacks, by play name (every play of the
        client's model, an empty list for one not delivered yet), in order."""
        with self._lock:
            return {name: list(items) for name, items in self._plays.items()}

    @property
    def disqualified(self) -> list[Qualification]:
        """Deliveries to ``on_disqualified`` callbacks, in order."""
        with self._lock:
            return list(self._kinds["disqualified"])

    def clear(self) -> None:
        """Forget everything recorded so far (the callbacks stay registered)."""
        with self._lock:
            self._all.clear()
            for items in [*self._kinds.values(), *self._plays.values()]:
                items.clear()


def recorder(client: Client) -> Recorder:
    """Register callbacks on ``client`` that record every delivered qualification.

    The recorder sees deliveries, not firings: with ``dispatch="inline"`` a
    qualification is delivered inside the ``track()`` that fired it. Register
    it before the events you want to see; a qualification that fired while no
    callback of its kind was registered is delivered on the next ``flush()`` or
    ``sweep()``.

    Example:
        >>> from pqlkit import Client, Model, did
        >>> model = Model("doc", signals={"x": did("x")}, pql=did("x"))
        >>> with Client(model, store=FakeStore(), clock=FrozenClock(START)) as client:
        ...     rec = recorder(client)
        ...     _ = client.track("u1", "x")
        ...     [(q.kind, q.subject_id) for q in rec], len(rec.pql), rec.disqualified
        ([('pql', 'u1')], 1, [])
    """
    if not isinstance(client, Client):
        raise ValidationError("client", f"must be a pqlkit.Client, got {type(client).__name__}")
    rec = Recorder()
    # one name per kind: a second recorder on the same client is refused
    client.on("pql", rec._on_pql, name="pqlkit.testing.recorder:pql")
    client.on("pqa", rec._on_pqa, name="pqlkit.testing.recorder:pqa")
    client.on("disqualified", rec._on_disqualified, name="pqlkit.testing.recorder:disqualified")
    for play in client.model.plays:  # and each play's (held-out ones are never delivered)
        rec._plays[play] = []
        client.on_play(play, rec._on_play, name="pqlkit.testing.recorder:play")
    return rec


# -- journeys ---------------------------------------------------------------------------------


class Journey:
    """One user's story, told day by day on the client's :class:`FrozenClock`.

    Made by :func:`journey`. Every method returns the journey, so a story
    chains. Journeys of one client share its clock: ``day(n)`` sets it.

    Attributes:
        client: The client the events go to.
        user_id: Whose events they are.
        account_id: The account every event counts for (None: no account).
        start: The clock's time when the journey began; day 0.
        results: The :class:`~pqlkit.TrackResult` of every ``track()``, in order.
    """

    def __init__(
        self, client: Client, user_id: str, account_id: str | None, clock: FrozenClock
    ) -> None:
        self.client = client
        self.user_id = user_id
        self.account_id = account_id
        self._clock = clock
        self.start = clock.now()
        self.results: list[TrackResult] = []

    def __repr__(self) -> str:
        return (
            f"Journey(user_id={self.user_id!r}, account_id={self.account_id!r}, "
            f"start={self.start.isoformat()}, now={self.now.isoformat()})"
        )

    @property
    def now(self) -> datetime:
        """The clock's current time."""
        return self._clock.now()

    @property
    def last(self) -> TrackResult:
        """The result of the latest ``track()``."""
        if not self.results:
            raise IndexError("this journey has not tracked anything yet")
        return self.results[-1]

    def day(self, n: float) -> Journey:
        """Set the clock to the journey's start + ``n`` days (``1.5`` is a day and a half)."""
        if isinstance(n, bool) or not isinstance(n, (int, float)) or not math.isfinite(n):
            raise ValidationError("n", f"must be a finite number of days, got {n!r}")
        self._clock.set(self.start + timedelta(days=n))
        return self

    def track(
        self,
        event: str,
        properties: Mapping[str, Any] | None = None,
        *,
        message_id: str | None = None,
    ) -> Journey:
        """Record ``event`` for the user (and account) at the clock's now.

        The :class:`~pqlkit.TrackResult` is appended to :attr:`results`.
        """
        result = self.client.track(
            self.user_id,
            event,
            properties,
            account_id=self.account_id,
            timestamp=self._clock.now(),
            message_id=message_id,
        )
        self.results.append(result)
        return self

    def identify(self, traits: Mapping[str, Any]) -> Journey:
        """Merge ``traits`` into the user's traits (with the journey's account)."""
        self.client.identify(self.user_id, traits, account_id=self.account_id)
        return self

    def group(self, traits: Mapping[str, Any]) -> Journey:
        """Merge ``traits`` into the journey's account's traits."""
        if self.account_id is None:
            raise ValidationError("account_id", "group() needs a journey with an account_id")
        self.client.group(self.account_id, traits)
        return self

    def sweep(self) -> Journey:
        """Run ``client.sweep()`` at the clock's now (for ``idle()`` and windows ending)."""
        self.client.sweep()
        return self


def journey(client: Client, user_id: str, account_id: str | None = None) -> Journey:
    """Start a journey for ``user_id`` (and ``account_id``) on the client's frozen clock.

    Day 0 is the clock's time now. The client must have been built with
    ``clock=FrozenClock(...)`` (the ``pql_client`` fixture's clients are).

    Raises:
        ValidationError: The client's clock is not a :class:`FrozenClock`, or an id
            is not a non-empty str.

    Example:
        >>> from pqlkit import Client, Model, count
        >>> model = Model("doc", scores={"logins": count("login")})
        >>> with Client(model, store=FakeStore(), clock=FrozenClock(START)) as client:
        ...     j = journey(client, "u1", "acme").day(0).track("login").day(3).track("login")
        ...     j.now.isoformat(), j.last.scores["logins"]
        ('2026-01-08T09:00:00+00:00', 2.0)
    """
    from ._validation import check_id

    if not isinstance(client, Client):
        raise ValidationError("client", f"must be a pqlkit.Client, got {type(client).__name__}")
    clock = client.clock
    if not isinstance(clock, FrozenClock):
        raise ValidationError(
            "client",
            f"journey() needs a Client built with clock=FrozenClock(...); it has {clock!r}",
        )
    check_id(user_id, "user_id", client.settings.limits)
    if account_id is not None:
        check_id(account_id, "account_id", client.settings.limits)
    return Journey(client, user_id, account_id, clock)


# -- assertions -------------------------------------------------------------------------------


def _of(kind: object) -> SubjectKind:
    if kind not in ("pql", "pqa"):
        raise ValidationError("kind", f'must be "pql" or "pqa", got {kind!r}')
    return "user" if kind == "pql" else "account"


def _target(client: Client, kind: object, play: object) -> tuple[SubjectKind, str]:
    """The subjects an assertion reads, and what it calls a qualified one."""
    if play is None:
        return _of(kind), str(kind).upper()
    declared = client.model.plays.get(play) if isinstance(play, str) else None
    if declared is None:
        known = ", ".join(repr(n) for n in client.model.plays) or "none"
        raise ValidationError("play", f"unknown play {play!r} (the model's plays: {known})")
    return declared.of, f"{play!r} play subject"


def _failure(client: Client, subject: str, of: SubjectKind, headline: str) -> str:
    lines = client.explain(subject, of=of)
    body = "\n".join(f"  {line}" for line in lines) or "  (nothing)"
    call = f"explain({subject!r})" if of == "user" else f"explain({subject!r}, of='account')"
    return f"{headline}\n{call}:\n{body}"


def assert_qualified(
    client: Client,
    subject: str,
    kind: Literal["pql", "pqa"] = "pql",
    *,
    play: str | None = None,
) -> None:
    """Assert that ``subject`` fired ``kind`` (or the play ``play``) under the client's model.

    ``kind="pql"`` checks a user, ``kind="pqa"`` an account; ``play="name"`` checks
    that play's subject (a user, or an account for a play ``of="account"``), a
    held-out firing included. A subject that qualified and was later disqualified
    still passes (its rule fired).

    Raises:
        AssertionError: It never qualified; the message holds its ``explain()`` lines.

    Example:
        >>> from pqlkit import Client, Model, did
        >>> model = Model("doc", signals={"x": did("x")}, pql=did("x"))
        >>> with Client(model, store=FakeStore(), clock=FrozenClock(START)) as client:
        ...     assert_qualified(client, "u1")
        Traceback (most recent call last):
        AssertionError: expected 'u1' to be a PQL under model 'doc', but it never qualified
        ...
    """
    __tracebackhide__ = True
    of, what = _target(client, kind, play)
    if client.qualified_at(subject, kind=kind, play=play) is None:
        headline = (
            f"expected {subject!r} to be a {what} under model {client.model.name!r}, "
            "but it never qualified"
        )
        raise AssertionError(_failure(client, subject, of, headline))


def assert_not_qualified(
    client: Client,
    subject: str,
    kind: Literal["pql", "pqa"] = "pql",
    *,
    play: str | None = None,
) -> None:
    """Assert that ``subject`` never fired ``kind`` (or the play ``play``) under the client's model.

    Raises:
        AssertionError: It qualified; the message says when and holds its
            ``explain()`` lines.

    Example:
        >>> from pqlkit import Client, Model, did
        >>> model = Model("doc", signals={"x": did("x")}, pql=did("x"))
        >>> with Client(model, store=FakeStore(), clock=FrozenClock(START)) as client:
        ...     _ = client.track("u1", "login")
        ...     assert_not_qualified(client, "u1")
    """
    __tracebackhide__ = True
    of, what = _target(client, kind, play)
    when = client.qualified_at(subject, kind=kind, play=play)
    if when is not None:
        headline = (
            f"expected {subject!r} not to be a {what} under model "
            f"{client.model.name!r}, but it qualified at {when.isoformat()}"
        )
        raise AssertionError(_failure(client, subject, of, headline))


def assert_score(
    client: Client,
    subject: str,
    name: str,
    expected: float,
    *,
    of: SubjectKind = "user",
    tolerance: float = 1e-9,
) -> None:
    """Assert that the subject's score ``name`` is ``expected`` (within ``tolerance``).

    The score is read with ``client.scores(subject, of=of)``: evaluated at the
    later of the clock's now and the subject's newest event.

    Raises:
        AssertionError: The score differs, or the model has no score ``name``;
            the message holds the subject's ``explain()`` lines.

    Example:
        >>> from pqlkit import Client, Model, did, points
        >>> model = Model("doc", signals={"x": did("x")}, scores={"behavior": points(x=30)})
        >>> with Client(model, store=FakeStore(), clock=FrozenClock(START)) as client:
        ...     _ = client.track("u1", "x")
        ...     assert_score(client, "u1", "behavior", 30)
    """
    __tracebackhide__ = True
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or tolerance < 0:
        raise ValidationError("tolerance", f"must be a non-negative number, got {tolerance!r}")
    scores = client.scores(subject, of=of)
    if name not in scores:
        known = ", ".join(sorted(scores)) or "none"
        headline = f"model {client.model.name!r} has no score {name!r} (its scores: {known})"
        raise AssertionError(_failure(client, subject, of, headline))
    actual = scores[name]
    if not abs(actual - expected) <= tolerance:
        headline = (
            f"score {name!r} of {subject!r} is {actual!r}, expected {expected!r} "
            f"(tolerance {tolerance!r})"
        )
        raise AssertionError(_failure(client, subject, of, headline))


# -- the default client -------------------------------------------------------------------------


@contextmanager
def use(client: Client) -> Iterator[Client]:
    """Make ``client`` pqlkit's module-level default client inside the block.

    ``pqlkit.track(...)`` and friends go to ``client`` until the block exits,
    then the previous default (or none) is back, even when the block raises.
    Neither client is closed.

    Example:
        >>> import pqlkit
        >>> from pqlkit import Client, Model, count
        >>> model = Model("doc", scores={"logins": count("login")})
        >>> with Client(model, store=FakeStore(), clock=FrozenClock(START)) as client:
        ...     with use(client):
        ...         pqlkit.track("u1", "login").scores
        {'logins': 1.0}
    """
    if not isinstance(client, Client):
        raise ValidationError("client", f"must be a pqlkit.Client, got {type(client).__name__}")
    previous = _default.swap(client)
    try:
        yield client
    finally:
        _default.swap(previous)
