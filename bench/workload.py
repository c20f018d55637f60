"""The workload every benchmark shares: the data-tooling model and realistic mixed events.

The model is ``examples/data_tooling.py`` (11 signals, 3 scores, a PQL and a PQA
rule), loaded from its file so the benchmark measures exactly what the example shows.

Events follow one fixed mix (:data:`EVENT_MIX`): mostly page views and queries, the
funnel events the model reads less often, and a few events it does not read at all,
as a real product sends. Users belong to accounts (85% of them; the rest have none),
and every user and account carries the traits the model reads (``email_domain``,
``row_limit``, ``employees``). Everything is drawn from a seeded ``random.Random``,
so two runs see the same events.
"""

from __future__ import annotations

import importlib.util
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pqlkit

ROOT = Path(__file__).resolve().parent.parent

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)
"""Where the simulated clock starts."""


def load_example() -> Any:
    """The ``examples/data_tooling.py`` module (its ``model`` and ``FREE_MAIL``)."""
    path = ROOT / "examples" / "data_tooling.py"
    spec = importlib.util.spec_from_file_location("data_tooling", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


EXAMPLE = load_example()
MODEL: pqlkit.Model = EXAMPLE.model

_PATHS = ["/home", "/dashboards", "/settings", "/docs", "/pricing"]
_PATH_WEIGHTS = [35, 30, 10, 15, 10]
_WAREHOUSES = ["snowflake", "bigquery", "redshift", "postgres", "databricks"]
_TEMPLATES = ["welcome", "digest", "report", "alert"]


def _props(name: str, rng: random.Random, domain: str) -> dict[str, Any]:
    if name == "page_viewed":
        return {"path": rng.choices(_PATHS, _PATH_WEIGHTS)[0], "referrer": "app"}
    if name == "query_run":
        return {"rows": rng.randrange(1, 50_000), "ms": rng.randrange(5, 4_000)}
    if name == "usage_reported":
        return {"rows": rng.randrange(10_000, 1_000_000)}
    if name == "dashboard_built":
        return {"charts": rng.randrange(1, 12)}
    if name == "project_created":
        return {"name": f"project-{rng.randrange(1_000)}"}
    if name == "email_sent":
        return {"template": rng.choice(_TEMPLATES)}
    if name == "contacts_imported":
        return {"count": rng.randrange(10, 5_000), "source": "csv"}
    if name == "teammate_invited":
        return {"email": f"mate{rng.randrange(20)}@{domain}", "role": "editor"}
    if name == "warehouse_connected":
        return {"warehouse": rng.choice(_WAREHOUSES)}
    return {}


EVENT_MIX: dict[str, int] = {
    "page_viewed": 30,
    "query_run": 20,
    "login": 8,
    "usage_reported": 8,
    "dashboard_built": 6,
    "project_created": 5,
    "email_sent": 5,
    "warehouse_connected": 5,
    "api_key_generated": 5,
    "contacts_imported": 4,
    "teammate_invited": 4,
}
"""Event name -> weight (percent). ``query_run`` and ``login`` are not read by the model."""

_NAMES = list(EVENT_MIX)
_WEIGHTS = list(EVENT_MIX.values())


@dataclass(frozen=True)
class Population:
    """Users, their accounts and traits."""

    users: list[str]
    account_of: dict[str, str | None]
    domain_of: dict[str, str]
    accounts: list[str]
    employees: dict[str, int]

    @classmethod
    def make(cls, users: int, accounts: int, *, seed: int = 7, prefix: str = "") -> Population:
        rng = random.Random(seed)
        account_ids = [f"{prefix}acct-{i}" for i in range(accounts)]
        free = sorted(EXAMPLE.FREE_MAIL)
        user_ids = [f"{prefix}user-{i}" for i in range(users)]
        account_of: dict[str, str | None] = {}
        domain_of: dict[str, str] = {}
        for i, uid in enumerate(user_ids):
            account = account_ids[i % accounts] if accounts and rng.random() < 0.85 else None
            account_of[uid] = account
            domain_of[uid] = rng.choice(free) if rng.random() < 0.2 else f"{account or uid}.io"
        employees = {a: rng.choice([5, 20, 80, 150, 300, 1_200, 5_000]) for a in account_ids}
        return cls(user_ids, account_of, domain_of, account_ids, employees)

    def set_traits(self, client: pqlkit.Client) -> None:
        """``group`` every account and ``identify`` every user with the traits the model reads."""
        for account in self.accounts:
            client.group(account, {"employees": self.employees[account], "plan": "free"})
        for uid in self.users:
            client.identify(uid, {"email_domain": self.domain_of[uid], "row_limit": 1_000_000})


@dataclass(frozen=True)
class Call:
    """One ``track()`` call: its arguments, and how far the clock moves before it."""

    user_id: str
    event: str
    properties: dict[str, Any]
    account_id: str | None
    gap: timedelta


def calls(pop: Population, count: int, *, seed: int = 11, mean_gap_s: float = 30.0) -> list[Call]:
    """``count`` calls by random users of ``pop``, one every ``mean_gap_s`` on average.

    The gaps are exponential (a Poisson stream of events): with 300 users and a 30 s
    mean gap, each user sends about ten events a day.
    """
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        uid = rng.choice(pop.users)
        name = rng.choices(_NAMES, _WEIGHTS)[0]
        out.append(
            Call(
                uid,
                name,
                _props(name, rng, pop.domain_of[uid]),
                pop.account_of[uid],
                timedelta(seconds=rng.expovariate(1.0 / mean_gap_s)),
            )
        )
    return out


def history(
    user_id: str,
    account_id: str | None,
    count: int,
    *,
    end: datetime,
    span: timedelta = timedelta(days=365),
    seed: int = 13,
) -> Iterator[dict[str, Any]]:
    """``count`` events of one user, spread uniformly at random over ``span`` before ``end``.

    Yielded in timestamp order (as a backfill from an export would be), with the
    same event mix as live traffic, for ``track_many``.
    """
    rng = random.Random(seed)
    start = end - span
    span_us = int(span / timedelta(microseconds=1))
    offsets = sorted(rng.randrange(span_us) for _ in range(count))
    domain = f"{account_id or user_id}.io"
    for off in offsets:
        name = rng.choices(_NAMES, _WEIGHTS)[0]
        yield {
            "user_id": user_id,
            "event": name,
            "properties": _props(name, rng, domain),
            "account_id": account_id,
            "timestamp": start + timedelta(microseconds=off),
        }


def bulk(
    pop: Population, count: int, *, start: datetime, seed: int = 17
) -> Iterator[dict[str, Any]]:
    """``count`` events for ``track_many``: random users of ``pop``, 30 s apart on average."""
    t = start
    for call in calls(pop, count, seed=seed):
        t += call.gap
        yield {
            "user_id": call.user_id,
            "event": call.event,
            "properties": call.properties,
            "account_id": call.account_id,
            "timestamp": t,
        }


SWEEP_AT = T0 + timedelta(days=60)
"""The "1% due" sweep runs at this time, the "10% due" sweep a day later."""


def sweep_cohort(i: int) -> str:
    """User ``i``'s cohort: ``A`` (1%) due at ``SWEEP_AT``, ``B`` (9%) a day later, else ``C``."""
    r = i % 100
    return "A" if r == 0 else "B" if r < 10 else "C"


def sweep_events(users: int, per_user: int, *, seed: int = 31) -> Iterator[dict[str, Any]]:
    """``users * per_user`` events built so that a known share of subjects is due for a sweep.

    Each user's latest event (``newest``) is placed by cohort: ``A`` 15-20 days
    before :data:`SWEEP_AT` (so ``idle() >= 14d`` and the windows it reads have
    expired by then), ``B`` 13-14 days before (due a day later), ``C`` within the
    12 days before (due two or more days later). The user's other events are
    spread uniformly over the 16 days up to ``newest``, with the live mix. Users
    of an account share its cohort (20 users per account, 85% of users have one),
    so accounts fall due with their users. Yielded user by user, each user's events
    in time order, generated lazily (the generator holds one user at a time).
    """
    rng = random.Random(seed)
    hour = timedelta(hours=1)
    seen = {"A": 0, "B": 0, "C": 0}
    for i in range(users):
        cohort = sweep_cohort(i)
        k = seen[cohort]
        seen[cohort] += 1
        uid = f"user-{i}"
        account = f"co-{cohort}-{k // 20}" if rng.random() < 0.85 else None
        if cohort == "A":
            newest = SWEEP_AT - timedelta(days=15) - rng.uniform(0, 120) * hour
        elif cohort == "B":
            newest = SWEEP_AT - timedelta(days=14) + rng.uniform(1, 23) * hour
        else:
            newest = SWEEP_AT - rng.uniform(1, 12 * 24) * hour
        offsets = sorted(rng.uniform(0, 16 * 24) for _ in range(per_user - 1))
        times = [newest - o * hour for o in reversed(offsets)] + [newest]
        domain = f"{account or uid}.io"
        for ts in times:
            name = rng.choices(_NAMES, _WEIGHTS)[0]
            yield {
                "user_id": uid,
                "event": name,
                "properties": _props(name, rng, domain),
                "account_id": account,
                "timestamp": ts,
            }


def warmed(client: Any, clock: Any, total: int) -> Callable[[int], list[int]]:
    """``client`` (of any pqlkit build) after the standard warm-up: 300 users in 30 accounts
    with their traits, 3,000 calls; returns a function timing ``n`` more calls (ns each),
    ``total`` in all. Its callbacks are no-ops."""
    client.on_pql(lambda q: None)
    client.on_pqa(lambda q: None)
    pop = Population.make(300, 30)
    pop.set_traits(client)
    for c in calls(pop, 3_000, seed=1):
        clock.advance(c.gap)
        client.track(c.user_id, c.event, c.properties, account_id=c.account_id)
    stream = iter(calls(pop, total, seed=2))

    def batch(n: int) -> list[int]:
        track, out = client.track, []
        for _ in range(n):
            c = next(stream)
            clock.advance(c.gap)
            t0 = time.perf_counter_ns()
            track(c.user_id, c.event, c.properties, account_id=c.account_id)
            out.append(time.perf_counter_ns() - t0)
        return out

    return batch
