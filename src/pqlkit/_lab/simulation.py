"""A synthetic SaaS product: a seeded history whose conversions are planted in chosen behaviours.

:func:`simulate` makes accounts of varied sizes and users who join them (a teammate
joins after an invite), come back in sessions while they are engaged, walk the
data-tooling funnel (connect a warehouse, build dashboards, generate an API key,
visit the pricing page, ...), go dormant, sometimes return, and convert
(``subscription_started``). Each session a user converts with a small base chance,
multiplied by the *driver* of every planted behaviour the user has done so far.
Engaged users do everything more often, drivers or not, so behaviours that are no
drivers still correlate with converting, as in a real product; a backtest has to
tell them apart. The traits ``signup_source`` (users) and ``industry`` (accounts)
are pure noise. Some events arrive late and some twice (the same ``message_id``),
as from real SDKs.

The history is kept in compact columns and the event dicts are made on the fly,
so a million events take tens of megabytes, not a gigabyte.
"""

from __future__ import annotations

import array
import math
import random
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

import attrs

from .._convert import dumps, from_us, to_us
from ..exceptions import ValidationError

if TYPE_CHECKING:
    from .._client import Client
    from .._events import BulkResult

__all__ = ["BEHAVIOURS", "DEFAULT_DRIVERS", "SimulatedEvents", "Simulation", "simulate"]

BEHAVIOURS: tuple[str, ...] = (
    "login",
    "page_viewed",
    "query_run",
    "warehouse_connected",
    "dashboard_built",
    "teammate_invited",
    "api_key_generated",
    "pricing_visit",
    "project_created",
    "contacts_imported",
    "email_sent",
    "usage_reported",
)
"""What a simulated user does. Each is an event of the same name, except
``pricing_visit``: a ``page_viewed`` event with ``{"path": "/pricing"}``."""

DEFAULT_DRIVERS: Mapping[str, float] = {
    "dashboard_built": 4.0,
    "teammate_invited": 5.0,
    "pricing_visit": 4.0,
}
"""The planted drivers when none are given: behaviour -> how many times more likely a
user who did it is to convert in each later session."""

START = datetime(2025, 1, 6, tzinfo=timezone.utc)
"""Where a simulated history starts by default (a Monday)."""

_DAY = 86_400_000_000
_MINUTE = 60_000_000

# event kinds as stored in the columns: the behaviours' events, then the conversion's
_KINDS = (
    "login",
    "page_viewed",
    "query_run",
    "warehouse_connected",
    "dashboard_built",
    "teammate_invited",
    "api_key_generated",
    "project_created",
    "contacts_imported",
    "email_sent",
    "usage_reported",
    "subscription_started",
    "plan_changed",
)
_K = {name: i for i, name in enumerate(_KINDS)}
_PATHS = ("/home", "/dashboards", "/settings", "/docs", "/pricing")
_PRICING = _PATHS.index("/pricing")
_WAREHOUSES = ("snowflake", "bigquery", "redshift", "postgres", "databricks")
_TEMPLATES = ("welcome", "digest", "report", "alert")
_SOURCES = ("ads", "organic", "referral", "partner")
_INDUSTRIES = ("data", "retail", "finance", "health", "media", "software")
_FREE_MAIL = ("gmail.com", "outlook.com", "yahoo.com", "hotmail.com")

# a session's chance of each milestone behaviour (until done, for the one-off ones)
_P_WAREHOUSE = 0.30
_P_DASHBOARD = 0.10
_P_API_KEY = 0.06
_P_INVITE = 0.05
_P_PROJECT = 0.15
_P_CONTACTS = 0.10
_P_EMAIL = 0.35  # once contacts are imported
_P_USAGE = 0.20
_P_PRICING = 0.07
_P_RETURN = 0.15  # users who come back after a dormant spell
_LIFETIME = 10.0  # mean days a user stays engaged (a spell)
_SESSIONS_A_DAY = 0.18  # a user's sessions a day while engaged, times its engagement
_GRACE = 3 * _DAY  # a user may still convert this long after its last engaged day


def _props(kind: int, code: int, domain: str) -> dict[str, Any]:
    """The properties of an event of ``kind`` from its stored code."""
    name = _KINDS[kind]
    if name == "page_viewed":
        return {"path": _PATHS[code]}
    if name in ("query_run", "usage_reported"):
        return {"rows": code}
    if name == "dashboard_built":
        return {"charts": code}
    if name == "project_created":
        return {"name": f"project-{code}"}
    if name == "email_sent":
        return {"template": _TEMPLATES[code]}
    if name == "contacts_imported":
        return {"count": code, "source": "csv"}
    if name == "teammate_invited":
        return {"email": f"teammate{code}@{domain}"}
    if name == "warehouse_connected":
        return {"warehouse": _WAREHOUSES[code]}
    if name == "subscription_started":
        return {"plan": "pro"}
    if name == "plan_changed":
        return {"from": "free", "to": "pro"}
    return {}


class SimulatedEvents(Sequence[dict[str, Any]]):
    """The simulated events in arrival order, as dicts for ``track()``, made on access.

    A read-only sequence: ``len()``, indexing, slicing and iteration (each pass makes
    fresh dicts, so it can be read any number of times).
    """

    def __init__(self, sim: _Columns) -> None:
        self._sim = sim

    def __len__(self) -> int:
        return len(self._sim.order)

    @overload
    def __getitem__(self, index: int) -> dict[str, Any]: ...
    @overload
    def __getitem__(self, index: slice) -> list[dict[str, Any]]: ...
    def __getitem__(self, index: int | slice) -> dict[str, Any] | list[dict[str, Any]]:
        if isinstance(index, slice):
            return [self._sim.event(i) for i in range(*index.indices(len(self)))]
        n = len(self)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError("event index out of range")
        return self._sim.event(index)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        event = self._sim.event
        for i in range(len(self)):
            yield event(i)

    def __repr__(self) -> str:
        return f"<SimulatedEvents of {len(self)} simulated events>"

    def tuples(self) -> Iterator[tuple[int, str, str, dict[str, Any], str | None, str]]:
        """The events as (timestamp in µs since the epoch, user id, event name,
        properties, account id, message id): the form a backtest reads, without
        making dicts and datetimes."""
        return self._sim.tuples()


class _Columns:
    """The history in columns: one entry per event as generated, plus the arrival order."""

    def __init__(self, seed: int, users: list[str], account_of: list[str | None]) -> None:
        self.seed = seed
        self.users = users
        self.account_of = account_of
        self.domain: list[str] = []
        self.ts = array.array("q")
        self.user = array.array("l")
        self.kind = array.array("b")
        self.code = array.array("l")
        self.copy_of = array.array("l")  # -1, or the event this one repeats (a duplicate)
        self.order = array.array("l")  # arrival order: indices into the columns

    def add(self, ts: int, user: int, kind: int, code: int = 0) -> None:
        self.ts.append(ts)
        self.user.append(user)
        self.kind.append(kind)
        self.code.append(code)
        self.copy_of.append(-1)

    def tuples(self) -> Iterator[tuple[int, str, str, dict[str, Any], str | None, str]]:
        """Every event in arrival order as (timestamp in µs, user id, event, properties,
        account id, message id)."""
        users, account_of, domain, seed = self.users, self.account_of, self.domain, self.seed
        ts, user, kind, code, copy_of = self.ts, self.user, self.kind, self.code, self.copy_of
        for i in self.order:
            j = copy_of[i]
            if j < 0:
                j = i
            u = user[j]
            k = kind[j]
            yield (
                ts[j],
                users[u],
                _KINDS[k],
                _props(k, code[j], domain[u]),
                account_of[u],
                f"sim-{seed}-{j}",
            )

    def event(self, position: int) -> dict[str, Any]:
        """The event at ``position`` in arrival order."""
        i = self.order[position]
        original = self.copy_of[i]
        j = i if original < 0 else original
        u = self.user[j]
        return {
            "user_id": self.users[u],
            "event": _KINDS[self.kind[j]],
            "properties": _props(self.kind[j], self.code[j], self.domain[u]),
            "account_id": self.account_of[u],
            "timestamp": from_us(self.ts[j]),
            "message_id": f"sim-{self.seed}-{j}",
        }


@attrs.frozen
class Simulation:
    """A simulated product history (see :func:`simulate`).

    Attributes:
        events: The events in arrival order (late ones arrive after later events,
            duplicates twice), dicts with ``track()``'s parameter names.
        conversions: Subject id -> when it converted: each converting user's first
            ``subscription_started``, and each account's first of any of its users'.
            Usable as a backtest's ``outcome``.
        user_traits: User id -> the traits ``identify()`` would set
            (``email_domain``, ``row_limit``, ``signup_source``).
        account_traits: Account id -> the traits ``group()`` would set
            (``employees``, ``industry``).
        drivers: The planted behaviours and their multipliers.
        start: When the history starts.
        end: When it ends.
    """

    events: SimulatedEvents
    conversions: Mapping[str, datetime]
    user_traits: Mapping[str, Mapping[str, Any]]
    account_traits: Mapping[str, Mapping[str, Any]]
    drivers: Mapping[str, float]
    start: datetime
    end: datetime

    def records(self) -> Iterator[dict[str, Any]]:
        """The history as ``pqlkit export`` lines: traits first, then the events."""
        for kind, traits in (("account", self.account_traits), ("user", self.user_traits)):
            for subject, values in traits.items():
                yield {"type": "traits", "kind": kind, "subject_id": subject, "traits": values}
        for event in self.events:
            yield {"type": "event", **event, "timestamp": event["timestamp"].isoformat()}

    def write(self, path: str | Path) -> None:
        """Write :meth:`records` to a JSON Lines file (what ``pqlkit import`` and
        ``pqlkit.backtest`` read)."""
        with open(path, "w", encoding="utf-8") as out:
            for line in self.records():
                out.write(dumps(line) + "\n")

    def load(self, client: Client) -> BulkResult:
        """Record the history with ``client``: ``group()`` and ``identify()`` every
        subject, then ``track_many()`` the events (duplicates are skipped by it)."""
        for account, traits in self.account_traits.items():
            client.group(account, traits)
        for user, traits in self.user_traits.items():
            client.identify(user, traits)
        return client.track_many(self.events)


def simulate(
    seed: int = 0,
    *,
    users: int = 2_000,
    accounts: int = 200,
    days: int = 180,
    start: datetime = START,
    drivers: Mapping[str, float] | None = None,
    base_rate: float = 0.002,
    late: float = 0.02,
    duplicates: float = 0.01,
) -> Simulation:
    """A seeded, realistic SaaS history whose conversions are planted in chosen behaviours.

    About 10 events per user. The same arguments give the same history.

    Args:
        seed: Seeds every draw.
        users: How many users join over the history.
        accounts: How many accounts they belong to (sizes vary a lot; about 15% of
            users belong to none).
        days: How long the history is.
        start: When it starts (aware).
        drivers: Behaviour (one of :data:`BEHAVIOURS`) -> a multiplier (> 0) of the
            chance of converting in each session after the user first did it.
            Default: :data:`DEFAULT_DRIVERS`. ``{}`` plants nothing.
        base_rate: A user's chance of converting in a session, before drivers.
        late: The share of events that arrive late (hours to days after later events).
        duplicates: The share of events sent twice (the same ``message_id``).

    Returns:
        The :class:`Simulation`.

    Raises:
        ValidationError: An argument out of range, naming it.

    Example:
        ```pycon
        >>> import pqlkit
        >>> sim = pqlkit.simulate(seed=1, users=50, accounts=5, days=30)
        >>> sim.events[0]["event"], len(sim.events) > 100
        ('login', True)

        ```
    """
    planted = dict(DEFAULT_DRIVERS if drivers is None else drivers)
    _check(users, accounts, days, start, planted, base_rate, late, duplicates)
    rng = random.Random(seed)
    account_ids = [f"acct-{i:05d}" for i in range(accounts)]
    user_ids = [f"user-{i:06d}" for i in range(users)]
    # account sizes: heavy-tailed weights; the first users are the accounts' founders
    weights = [rng.paretovariate(1.2) for _ in range(accounts)]
    account_of: list[str | None] = []
    founders = min(accounts, users)
    cum = list(_accumulate(weights))
    for u in range(users):
        if u < founders:
            account_of.append(account_ids[u])
        elif accounts and rng.random() < 0.85:
            pick = _bisect(cum, rng.random() * cum[-1]) if cum else 0
            account_of.append(account_ids[pick])
        else:
            account_of.append(None)
    cols = _Columns(seed, user_ids, account_of)
    t0 = to_us(start)
    span = days * _DAY
    user_traits: dict[str, dict[str, Any]] = {}
    account_traits: dict[str, dict[str, Any]] = {}
    for a in account_ids:
        account_traits[a] = {
            "employees": rng.choice([5, 20, 80, 150, 300, 1_200, 5_000]),
            "industry": rng.choice(_INDUSTRIES),
        }
    # founders join over the first 90% of the history, teammates after the founder's invite
    joined: list[int] = []
    founder_of: dict[str, int] = {}
    invites: dict[int, list[int]] = {}  # founder -> when each teammate was invited
    for u in range(users):
        acc = account_of[u]
        if acc is None or acc not in founder_of:
            joined.append(t0 + int(rng.random() * 0.9 * span))
            if acc is not None:
                founder_of[acc] = u
        else:
            founder = founder_of[acc]
            joined.append(joined[founder] + int(rng.expovariate(1 / 12) * _DAY) + _MINUTE)
            invites.setdefault(founder, []).append(joined[u] - _MINUTE)
    for u in range(users):
        acc = account_of[u]
        domain = rng.choice(_FREE_MAIL) if rng.random() < 0.2 else f"{acc or user_ids[u]}.io"
        cols.domain.append(domain)
        user_traits[user_ids[u]] = {
            "email_domain": domain,
            "row_limit": 1_000_000,
            "signup_source": rng.choice(_SOURCES),
        }
        _user(cols, rng, u, joined[u], t0 + span, planted, base_rate, acc, invites.get(u, []))
    # conversions: the first subscription_started of each user, and of each account
    conversions: dict[str, datetime] = {}
    firsts: dict[str, int] = {}
    started = _K["subscription_started"]
    for i, k in enumerate(cols.kind):
        if k != started:
            continue
        u = cols.user[i]
        for subject in (user_ids[u], account_of[u]):
            if subject is not None and (subject not in firsts or cols.ts[i] < firsts[subject]):
                firsts[subject] = cols.ts[i]
    for subject, ts in sorted(firsts.items()):
        conversions[subject] = from_us(ts)
    _arrivals(cols, rng, late, duplicates)
    return Simulation(
        events=SimulatedEvents(cols),
        conversions=conversions,
        user_traits=user_traits,
        account_traits=account_traits,
        drivers=planted,
        start=start,
        end=start + timedelta(days=days),
    )


def _check(
    users: object,
    accounts: object,
    days: object,
    start: object,
    drivers: dict[str, float],
    base_rate: object,
    late: object,
    duplicates: object,
) -> None:
    for name, value, low in (("users", users, 1), ("accounts", accounts, 0), ("days", days, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValidationError(name, f"must be an int >= {low}, got {value!r}")
    if not isinstance(start, datetime) or start.tzinfo is None:
        raise ValidationError("start", "must be an aware datetime")
    for name, value in (("base_rate", base_rate), ("late", late), ("duplicates", duplicates)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
            raise ValidationError(name, f"must be a number in [0, 1), got {value!r}")
    for behaviour, factor in drivers.items():
        if behaviour not in BEHAVIOURS:
            raise ValidationError(
                f"drivers.{behaviour}", f"is not a behaviour; expected one of {list(BEHAVIOURS)}"
            )
        if (
            isinstance(factor, bool)
            or not isinstance(factor, (int, float))
            or not math.isfinite(factor)
            or factor <= 0
        ):
            raise ValidationError(f"drivers.{behaviour}", f"must be a number > 0, got {factor!r}")


def _accumulate(values: list[float]) -> Iterator[float]:
    total = 0.0
    for v in values:
        total += v
        yield total


def _bisect(cum: list[float], x: float) -> int:
    lo, hi = 0, len(cum) - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if cum[mid] < x:
            lo = mid + 1
        else:
            hi = mid
    return lo


def _user(
    cols: _Columns,
    rng: random.Random,
    u: int,
    joined: int,
    end: int,
    drivers: Mapping[str, float],
    base_rate: float,
    account: str | None,
    invites: list[int],
) -> None:
    """One user: sessions from ``joined`` while engaged (and maybe a second spell after
    a dormant one), then a conversion day by day; ``invites``: when the user invited
    the teammates who joined its account."""
    engagement = rng.lognormvariate(0.0, 0.5)
    # (time, behaviours) of each session, and the invites, in time order
    sessions: list[tuple[int, set[str]]] = [(at, {"teammate_invited"}) for at in invites]
    for at in invites:
        if at < end:
            cols.add(at, u, _K["teammate_invited"], rng.randrange(1000))
    done: set[str] = set()
    rows = rng.randrange(10_000, 200_000)
    spells: list[tuple[int, int]] = []
    t = joined
    for spell in range(2 if rng.random() < _P_RETURN else 1):
        if spell:
            t += int(rng.uniform(20, 60) * _DAY)
        stop = t + int(rng.expovariate(1 / _LIFETIME) * _DAY)
        spells.append((t, stop))
        while t < end and t <= stop:
            seen = _session(cols, rng, u, t, engagement, done, account is not None)
            if "usage_reported" in seen:
                rows = min(1_000_000, rows + rng.randrange(0, 250_000))
                cols.add(t + 20 * _MINUTE, u, _K["usage_reported"], rows)
            sessions.append((t, seen))
            t += int(rng.expovariate(_SESSIONS_A_DAY * engagement) * _DAY) + _MINUTE
    # the conversion: each engaged day (and a few after), a chance multiplied by the
    # drivers of the behaviours done before that day
    sessions.sort(key=lambda s: s[0])
    had: set[str] = set()
    i = 0
    for first, stop in spells:
        day = first
        while day < min(end, stop + _GRACE):
            while i < len(sessions) and sessions[i][0] < day:
                had |= sessions[i][1]
                i += 1
            chance = base_rate
            for behaviour in had:
                chance *= drivers.get(behaviour, 1.0)
            if rng.random() < min(0.9, chance):
                at = day + int(rng.random() * _DAY)
                if at < end:
                    cols.add(at, u, _K["subscription_started"])
                    cols.add(at + _MINUTE, u, _K["plan_changed"])
                return
            day += _DAY


def _session(
    cols: _Columns,
    rng: random.Random,
    u: int,
    t: int,
    engagement: float,
    done: set[str],
    in_account: bool,
) -> set[str]:
    """A session's events; returns the behaviours it had (adding them to ``done``)."""
    seen = {"login"}
    cols.add(t, u, _K["login"])
    at = t + _MINUTE
    if rng.random() < 0.4:
        cols.add(at, u, _K["page_viewed"], rng.randrange(4))
        seen.add("page_viewed")
    if rng.random() < _P_PRICING:
        cols.add(at + _MINUTE, u, _K["page_viewed"], _PRICING)
        seen.add("pricing_visit")
    if rng.random() < min(0.9, 0.3 * engagement):
        cols.add(at + 2 * _MINUTE, u, _K["query_run"], rng.randrange(1, 50_000))
        seen.add("query_run")
    if "warehouse_connected" not in done and rng.random() < _P_WAREHOUSE:
        cols.add(at + 3 * _MINUTE, u, _K["warehouse_connected"], rng.randrange(5))
        seen.add("warehouse_connected")
    if rng.random() < _P_DASHBOARD:  # on a warehouse, or on the sample data
        cols.add(at + 4 * _MINUTE, u, _K["dashboard_built"], rng.randrange(1, 12))
        seen.add("dashboard_built")
    if rng.random() < _P_API_KEY:
        cols.add(at + 5 * _MINUTE, u, _K["api_key_generated"])
        seen.add("api_key_generated")
    if in_account and rng.random() < _P_INVITE:
        cols.add(at + 6 * _MINUTE, u, _K["teammate_invited"], rng.randrange(1000))
        seen.add("teammate_invited")
    if rng.random() < _P_PROJECT:
        cols.add(at + 7 * _MINUTE, u, _K["project_created"], rng.randrange(1000))
        seen.add("project_created")
    if "contacts_imported" not in done and rng.random() < _P_CONTACTS:
        cols.add(at + 8 * _MINUTE, u, _K["contacts_imported"], rng.randrange(10, 5_000))
        seen.add("contacts_imported")
    elif "contacts_imported" in done and rng.random() < _P_EMAIL:
        cols.add(at + 9 * _MINUTE, u, _K["email_sent"], rng.randrange(len(_TEMPLATES)))
        seen.add("email_sent")
    if rng.random() < _P_USAGE:
        seen.add("usage_reported")  # its event carries the running row count: the caller's
    done.update(seen)
    return seen


def _arrivals(cols: _Columns, rng: random.Random, late: float, duplicates: float) -> None:
    """The arrival order: by timestamp, some events late, some repeated."""
    n = len(cols.ts)
    arrival = array.array("q", cols.ts)
    for i in range(n):
        if rng.random() < late:
            arrival[i] += int(rng.expovariate(1 / 1.5) * _DAY)  # 1.5 days late on average
    for i in range(n):
        if rng.random() < duplicates:
            cols.ts.append(cols.ts[i])
            cols.user.append(cols.user[i])
            cols.kind.append(cols.kind[i])
            cols.code.append(cols.code[i])
            cols.copy_of.append(i)
            arrival.append(arrival[i] + int(rng.expovariate(1 / 30) * _MINUTE))
    cols.order = array.array("l", sorted(range(len(arrival)), key=arrival.__getitem__))
