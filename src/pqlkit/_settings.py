"""A Client's settings: one frozen value, checked once, shared by ``Client``,
``AsyncClient``, ``configure()`` and the testing kit.

Callers pass them as keywords (``Client(model, max_attempts=5)``), typed by
:class:`ClientOptions`; or build a :class:`Settings` once and pass it
(``Client(model, settings=settings)``), keywords then overriding its fields.

A few come from the environment too (:data:`ENVIRONMENT`, ``PQLKIT_STORE_URL``),
for what operators set per deployment: read by ``Client`` when the code does not
say (no ``store=``, no ``settings=``, no keyword for that setting).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any, Literal

import attrs
from typing_extensions import TypedDict

from ._dispatch import RetryPolicy
from ._validation import Limits
from .exceptions import ValidationError
from .stores import Store, open_store

__all__ = [
    "ENVIRONMENT",
    "STORE_URL",
    "ClientOptions",
    "Settings",
    "environment_options",
    "environment_store",
    "parse_duration",
    "resolve",
]

Dispatch = Literal["inline", "background"]


def _positive_int(name: str, value: object, *, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValidationError(name, f"must be an int >= {minimum}, got {value!r}")


def _duration(name: str, value: object, *, zero: bool = False) -> None:
    if not isinstance(value, timedelta) or value < timedelta(0) or (not zero and not value):
        allowed = "a timedelta >= 0" if zero else "a positive timedelta"
        raise ValidationError(name, f"must be {allowed}, got {value!r}")


@attrs.frozen(kw_only=True)
class Settings:
    """How a :class:`~pqlkit.Client` records, checks and delivers.

    Every field is also a keyword of ``Client``, ``AsyncClient`` and
    ``pqlkit.configure()``, and of the testing kit's ``pql_client``.

    Attributes:
        dispatch: ``"inline"`` runs callbacks inside ``track()`` after the commit;
            ``"background"`` runs them on a worker thread.
        max_attempts: Delivery attempts before a delivery is dead-lettered.
        retry_base: Delay before the first retry (doubling each time).
        retry_cap: The longest delay between retries.
        max_id_length: Longest accepted user/account/message id.
        max_properties_bytes: Largest accepted properties/traits, as JSON.
        max_depth: Deepest accepted nesting of properties/traits.
        max_future: How far ahead of now an event's ``timestamp`` may be (now:
            the later of the client's clock and the system time; ``None`` for no
            limit). One event dated years ahead would become its subjects' newest
            event, and so the time every later event of theirs is evaluated at.
        context_events: How many recent events a Qualification's context holds.
        delivery_lease: How long a claimed delivery is held by its process before
            another may retry it, on the wall clock. It is renewed every third of
            it while the callback runs, so it runs out only when the process died
            (or cannot reach the store).
        inline_budget: With ``dispatch="inline"``: how long a write may spend
            delivering what it fired, after its commit. It is checked before each
            callback starts (a running callback is not interrupted); what is left
            stays pending for the next ``flush()``, ``sweep()`` or background pass.
        delivery_window: How long a qualification stays open to callbacks
            registered later, in this process or another (a web worker that
            registers no callback records it; a worker process that registers
            ``slack`` delivers it). A callback that never took it in that time,
            and a qualification no callback took, are recorded as "expired"
            (see ``Client.deliveries``) and logged.
        delivery_retention: How long a delivered (or expired) delivery is kept
            once its window closed; then it is deleted. Dead letters are kept
            until retried.
        flush_at_exit: How long the interpreter's exit may wait for a client
            left open to deliver what is due (then it is closed, as by
            ``close(timeout=...)``; its store gets a second more to close). A
            hung callback never holds the exit longer: what it did not deliver
            stays pending in the outbox, for the next process. ``None`` (or 0)
            turns the exit hook off. A forked child never flushes the clients
            its parent built.
        warm_subjects: How many subjects a client keeps warm (decoded) in memory
            between its transactions (SQLiteStore and MemoryStore).
        warm_bytes: The most the stored sizes of the warm subjects' states may add
            up to: the least recently used leave first (a decoded state takes
            several times its stored size).
        retention: How long events are kept: ``Client.prune()`` (and ``pqlkit prune``)
            with no ``older_than`` deletes the events older than this, after
            checkpointing every subject's state over them, so no score changes.
            ``None`` (the default) keeps every event. Pruning runs only when asked
            (a cron job running ``pqlkit prune``, or ``client.prune()``), never
            inside ``track()``.
        accept_partial_rebuild: Let a client whose model needs events that were
            pruned (a changed model, or one that has no checkpoints of them) start,
            rebuilding its states from the events kept: values that read older
            events then start at the pruned horizon. Without it such a client is
            refused with a :class:`~pqlkit.ValidationError` naming the signals.

    Raises:
        ValidationError: A setting is out of range, naming it.

    Example:
        >>> import pqlkit
        >>> strict = pqlkit.Settings(max_attempts=3, max_id_length=64)
        >>> with pqlkit.Client(pqlkit.Model("doc"), store="memory://", settings=strict) as c:
        ...     c.settings.max_attempts, c.settings.dispatch
        (3, 'inline')
    """

    dispatch: Dispatch = "inline"
    max_attempts: int = 10
    retry_base: timedelta = timedelta(seconds=1)
    retry_cap: timedelta = timedelta(hours=1)
    max_id_length: int = 256
    max_properties_bytes: int = 32_768
    max_depth: int = 16
    max_future: timedelta | None = timedelta(days=1)
    context_events: int = 10
    delivery_lease: timedelta = timedelta(seconds=30)
    inline_budget: timedelta = timedelta(seconds=1)
    delivery_window: timedelta = timedelta(days=7)
    delivery_retention: timedelta = timedelta(days=1)
    flush_at_exit: timedelta | None = timedelta(seconds=5)
    warm_subjects: int = 10_000
    warm_bytes: int = 16 * 2**20
    retention: timedelta | None = None
    accept_partial_rebuild: bool = False

    def __attrs_post_init__(self) -> None:
        if self.dispatch not in ("inline", "background"):
            raise ValidationError(
                "dispatch", f'must be "inline" or "background", got {self.dispatch!r}'
            )
        _positive_int("max_attempts", self.max_attempts)
        _positive_int("context_events", self.context_events, minimum=0)
        _positive_int("warm_subjects", self.warm_subjects)
        _positive_int("warm_bytes", self.warm_bytes)
        for name in (
            "retry_base",
            "retry_cap",
            "delivery_lease",
            "delivery_window",
            "delivery_retention",
        ):
            _duration(name, getattr(self, name))
        _duration("inline_budget", self.inline_budget, zero=True)
        if self.retention is not None:
            _duration("retention", self.retention)
        if not isinstance(self.accept_partial_rebuild, bool):
            raise ValidationError(
                "accept_partial_rebuild",
                f"must be True or False, got {self.accept_partial_rebuild!r}",
            )
        exit_wait = self.flush_at_exit
        if exit_wait is not None and (
            not isinstance(exit_wait, timedelta) or exit_wait < timedelta(0)
        ):
            raise ValidationError(
                "flush_at_exit", f"must be a timedelta >= 0 or None, got {exit_wait!r}"
            )
        self.limits  # noqa: B018 - Limits checks the size limits and max_future

    @property
    def limits(self) -> Limits:
        """The input limits, as the argument checks take them."""
        return Limits(
            self.max_id_length, self.max_properties_bytes, self.max_depth, self.max_future
        )

    @property
    def retry_policy(self) -> RetryPolicy:
        """The delivery retry policy."""
        return RetryPolicy(self.max_attempts, self.retry_base, self.retry_cap)


class ClientOptions(TypedDict, total=False):
    """The fields of :class:`Settings`, as the keywords of ``Client``, ``AsyncClient``,
    ``configure()`` and ``pql_client`` (each optional; see ``Settings`` for their meaning)."""

    dispatch: Dispatch
    max_attempts: int
    retry_base: timedelta
    retry_cap: timedelta
    max_id_length: int
    max_properties_bytes: int
    max_depth: int
    max_future: timedelta | None
    context_events: int
    delivery_lease: timedelta
    inline_budget: timedelta
    delivery_window: timedelta
    delivery_retention: timedelta
    flush_at_exit: timedelta | None
    warm_subjects: int
    warm_bytes: int
    retention: timedelta | None
    accept_partial_rebuild: bool


_NAMES = frozenset(f.name for f in attrs.fields(Settings))


def resolve(
    settings: object,
    options: dict[str, Any],
    caller: str,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """``settings`` (default: the defaults, under what ``environ`` sets: see
    :func:`environment_options`) with the keyword ``options`` applied.

    Raises:
        TypeError: An option is not a setting (as for any unknown keyword).
        ValidationError: ``settings`` is not a Settings, or a value is out of range, or
            an environment variable is malformed (naming it).
    """
    unknown = sorted(set(options) - _NAMES)
    if unknown:
        raise TypeError(f"{caller}() got an unexpected keyword argument {unknown[0]!r}")
    if settings is None:
        if environ is not None:
            options = {**environment_options(environ), **options}
        return Settings(**options)
    if not isinstance(settings, Settings):
        raise ValidationError(
            "settings", f"must be a pqlkit.Settings, got {type(settings).__name__}"
        )
    return attrs.evolve(settings, **options) if options else settings


# -- the environment ------------------------------------------------------------------------

STORE_URL = "PQLKIT_STORE_URL"
"""The environment variable holding the store URL a Client opens when given no ``store``."""

_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h|d)?")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


def parse_duration(text: str) -> timedelta:
    """``"250ms"``, ``"30s"``, ``"10m"``, ``"2h"``, ``"7d"``; a bare number is seconds.

    Raises:
        ValueError: ``text`` is none of these (negative durations are not).
    """
    match = _DURATION.fullmatch(text.strip().lower())
    if match is None:
        raise ValueError(
            f"expected a duration such as 250ms, 30s, 10m, 2h or 7d (a bare number is "
            f"seconds), got {text!r}"
        )
    number, unit = match.groups()
    try:
        return timedelta(seconds=float(number) * _UNITS[unit])
    except OverflowError:
        raise ValueError(f"{text!r} is too long a duration") from None


def _dispatch(text: str) -> str:
    value = text.strip().lower()
    if value not in ("inline", "background"):
        raise ValueError(f'expected "inline" or "background", got {text!r}')
    return value


def _count(text: str) -> int:
    if not text.strip().isdecimal():
        raise ValueError(f"expected a whole number, got {text!r}")
    return int(text)


ENVIRONMENT: dict[str, tuple[str, Callable[[str], Any]]] = {
    "PQLKIT_DISPATCH": ("dispatch", _dispatch),
    "PQLKIT_INLINE_BUDGET": ("inline_budget", parse_duration),
    "PQLKIT_DELIVERY_WINDOW": ("delivery_window", parse_duration),
    "PQLKIT_MAX_ATTEMPTS": ("max_attempts", _count),
    "PQLKIT_RETENTION": ("retention", parse_duration),
}
"""The settings the environment may set: variable -> (Settings field, parser of its text)."""


def environment_options(environ: Mapping[str, str]) -> dict[str, Any]:
    """The settings the :data:`ENVIRONMENT` variables set in ``environ`` (an empty
    variable counts as unset), each checked as ``Settings`` checks it.

    Raises:
        ValidationError: A variable's value is malformed or out of range, naming the
            variable (``"PQLKIT_INLINE_BUDGET"``).
    """
    options: dict[str, Any] = {}
    for variable, (name, parse) in ENVIRONMENT.items():
        text = environ.get(variable, "")
        if not text.strip():
            continue
        try:
            value = parse(text)
            Settings(**{name: value})  # its range, checked once here to name the variable
        except ValueError as error:
            reason = error.reason if isinstance(error, ValidationError) else str(error)
            raise ValidationError(variable, reason) from None
        options[name] = value
    return options


def environment_store(environ: Mapping[str, str]) -> Store | None:
    """The store :data:`STORE_URL` names in ``environ`` (opened), or None when it is
    unset or empty.

    Raises:
        ValidationError: The URL is malformed, naming the variable (the URL itself is
            not repeated: it may hold a password).
        StoreError: The store cannot be opened.
    """
    url = environ.get(STORE_URL, "").strip()
    if not url:
        return None
    try:
        return open_store(url)
    except ValidationError as error:
        raise ValidationError(STORE_URL, error.reason) from None
