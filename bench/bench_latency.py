"""PostgresStore ``track()`` on a network: the loopback, and a proxy adding 0.5 and 2 ms each way.

What one ``track()`` costs an application whose database is a network hop away is
mostly round trips x the round-trip time. This benchmark measures it, and counts the
round trips (bench/latency_proxy.py counts them at the proxy, not inferred):

* **pqlkit**: ``track()`` on a PostgresStore (the data-tooling model of
  ``examples/data_tooling.py``, the workload's mixed events over 50 users in 10
  accounts with their traits, no-op callbacks, inline dispatch), warm subjects: every
  user was tracked by this Client before the timed calls.
* **the naive floor**: what a hand-written write does on one psycopg connection, each
  statement its own round trip: ``BEGIN``; ``INSERT`` the event (a unique message id,
  an index on the user); ``INSERT ... ON CONFLICT DO UPDATE`` a per-user counter;
  ``COMMIT``.

Each runs directly on the loopback, and through a :class:`LatencyProxy` at 0.5 ms and
at 2 ms each way (its own proxy per contender, so its round trips are its own); the
six contenders are timed in interleaved batches by the bench harness, so the ratios
are from one run. The measured round-trip time of each proxy (``SELECT 1``, median)
is reported beside its setting.

    python bench/bench_latency.py             # writes its section of docs/performance.md
    python bench/bench_latency.py --quick --no-write

``make bench`` runs it (bench/run.py, group ``latency``). Needs a server at
``PQLKIT_TEST_POSTGRES_DSN`` (default ``postgresql://postgres@127.0.0.1:5432/test``);
its tables live in a schema of their own, dropped at the end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import builds
import harness as h
import workload
from latency_proxy import LatencyProxy

import pqlkit
from pqlkit._process import new_message_id
from pqlkit.testing import FrozenClock

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "performance.md"
START, END = "<!-- latency:start -->", "<!-- latency:end -->"
DELAYS = (0.0005, 0.002)  # seconds each way
POPULATION = (50, 10)

_FLOOR_DDL = (
    "CREATE TABLE {s}.floor_events (seq bigserial PRIMARY KEY, message_id text NOT NULL UNIQUE,"
    " user_id text NOT NULL, event text NOT NULL, properties json NOT NULL, account_id text,"
    " ts bigint NOT NULL)",
    "CREATE INDEX ON {s}.floor_events (user_id)",
    "CREATE TABLE {s}.floor_counters (subject text PRIMARY KEY, n bigint NOT NULL)",
)


def _dsn() -> str:
    return os.environ.get("PQLKIT_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")


def _via(dsn: str, port: int) -> str:
    """``dsn`` (a URL) with its host and port replaced by the proxy's."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    return make_conninfo(**{**conninfo_to_dict(dsn), "host": "127.0.0.1", "port": str(port)})


def _upstream(dsn: str) -> tuple[str, int]:
    from psycopg.conninfo import conninfo_to_dict

    params = conninfo_to_dict(dsn)
    return str(params.get("host") or "127.0.0.1"), int(params.get("port") or 5432)


class _Counted(h.Contender):
    """A contender that may run through a proxy, whose round trips it counts per batch."""

    def __init__(self, name: str, ops: int, proxy: LatencyProxy | None) -> None:
        super().__init__(ops)
        self.name = name
        self.proxy = proxy
        self.round_trips = 0
        self.counted_ops = 0

    def count(self, before: int, n: int) -> None:
        if self.proxy is not None:
            self.round_trips += self.proxy.round_trips - before
            self.counted_ops += n

    @property
    def per_op(self) -> float | None:
        return self.round_trips / self.counted_ops if self.counted_ops else None


class Track(_Counted):
    """``track()`` on a PostgresStore reached at ``dsn``; warm subjects."""

    def __init__(
        self, name: str, ops: int, dsn: str, schema: str, proxy: LatencyProxy | None, seed: int
    ) -> None:
        super().__init__(name, ops, proxy)
        self.dsn, self.schema, self.seed = dsn, schema, seed
        self.pop = workload.Population.make(*POPULATION)

    def setup(self, batches: int) -> None:
        self.store = pqlkit.PostgresStore(self.dsn, schema=self.schema, min_size=1, max_size=2)
        self.clock = FrozenClock(workload.T0)
        self.client = pqlkit.Client(workload.MODEL, store=self.store, clock=self.clock)
        self.client.on_pql(lambda q: None)
        self.client.on_pqa(lambda q: None)
        for user in self.pop.users:  # every subject warm in this Client
            self.client.track(user, "login", account_id=self.pop.account_of[user])
        self.calls = iter(workload.calls(self.pop, (batches + 1) * self.ops, seed=self.seed))

    def batch(self, n: int) -> list[h.Sample]:
        track, clock, out = self.client.track, self.clock, []
        before = self.proxy.round_trips if self.proxy is not None else 0
        for _ in range(n):
            c = next(self.calls)
            clock.advance(c.gap)
            args, account = (c.user_id, c.event, c.properties), c.account_id
            out.append(h.timed(lambda args=args, account=account: track(*args, account_id=account)))
        self.count(before, n)
        return out

    def teardown(self) -> None:
        self.client.close()
        self.store.close()


class Floor(_Counted):
    """The naive floor: BEGIN, INSERT event, UPSERT counter, COMMIT, each its own statement."""

    def __init__(
        self, name: str, ops: int, dsn: str, schema: str, proxy: LatencyProxy | None, seed: int
    ) -> None:
        super().__init__(name, ops, proxy)
        self.dsn, self.schema, self.seed = dsn, schema, seed
        self.pop = workload.Population.make(*POPULATION)

    def setup(self, batches: int) -> None:
        import psycopg
        from psycopg import sql

        self.conn = psycopg.connect(self.dsn, autocommit=True)
        s = sql.Identifier(self.schema)
        self.insert = sql.SQL(
            "INSERT INTO {}.floor_events (message_id, user_id, event, properties, account_id, ts)"
            " VALUES (%s, %s, %s, %s, %s, %s)"
        ).format(s)
        self.upsert = sql.SQL(
            "INSERT INTO {}.floor_counters (subject, n) VALUES (%s, 1)"
            " ON CONFLICT (subject) DO UPDATE SET n = floor_counters.n + 1"
        ).format(s)
        from psycopg.types.json import Json

        calls = workload.calls(self.pop, (batches + 1) * self.ops, seed=self.seed)
        self.rows = [
            (new_message_id(), c.user_id, c.event, Json(c.properties), c.account_id, i)
            for i, c in enumerate(calls)
        ]
        self.next = 0

    def _one(self, row: tuple[Any, ...]) -> None:
        execute = self.conn.execute
        execute(b"BEGIN")
        execute(self.insert, row)
        execute(self.upsert, (row[1],))
        execute(b"COMMIT")

    def batch(self, n: int) -> list[h.Sample]:
        rows = self.rows[self.next : self.next + n]
        self.next += n
        before = self.proxy.round_trips if self.proxy is not None else 0
        out = [h.timed(lambda row=row: self._one(row)) for row in rows]
        self.count(before, n)
        return out

    def teardown(self) -> None:
        self.conn.close()


def measured_rtt(dsn: str, n: int = 200) -> float:
    """Seconds: the median ``SELECT 1`` on one connection to ``dsn``."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT 1")
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            conn.execute("SELECT 1")
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def run(*, quick: bool) -> str:
    """Run the benchmark; the Markdown block for docs/performance.md."""
    import psycopg
    from psycopg import sql

    dsn = _dsn()
    schema = f"pqlkit_latency_{os.getpid()}"
    batches = 3 if quick else 7
    ops = {0.0: 40 if quick else 150, 0.0005: 15 if quick else 50, 0.002: 6 if quick else 20}
    proxies: list[LatencyProxy] = []
    schemas = [schema]
    admin = psycopg.connect(dsn, autocommit=True)
    try:
        s = sql.Identifier(schema)
        admin.execute(sql.SQL("CREATE SCHEMA {}").format(s))
        for statement in _FLOOR_DDL:
            admin.execute(sql.SQL(statement).format(s=s))
        contenders: list[_Counted] = []
        rtt: dict[float, float] = {0.0: measured_rtt(dsn)}
        for i, delay in enumerate((0.0, *DELAYS)):
            where = "loopback" if delay == 0 else f"{delay * 1000:g} ms each way"
            pair: list[_Counted] = []
            for kind in (Floor, Track):
                proxy = None
                target = dsn
                if delay:
                    proxy = LatencyProxy(_upstream(dsn), delay)
                    proxies.append(proxy)
                    target = _via(dsn, proxy.port)
                    rtt.setdefault(delay, measured_rtt(target))
                label = "naive floor" if kind is Floor else "pqlkit track()"
                own = schema
                if kind is Track:
                    # each client tracks its own subjects, in a schema of its own: the
                    # three would otherwise take turns on the same states, and a client
                    # that finds its warm states changed by another writes cold (that
                    # case is bench/pg_roundtrip.py's)
                    own = f"{schema}_{i}"
                    schemas.append(own)
                    store = pqlkit.PostgresStore(dsn, schema=own)
                    with pqlkit.Client(workload.MODEL, store=store) as c:
                        workload.Population.make(*POPULATION).set_traits(c)  # once, directly
                    store.close()
                pair.append(kind(f"{label}, {where}", ops[delay], target, own, proxy, 10 + i))
            contenders += pair
        results = h.run_group("latency", list(contenders), batches=batches)
        # round trips are counted through the proxies (the same code path on the loopback)
        per_op = {c.name: c.per_op for c in contenders}
    finally:
        for proxy in proxies:
            proxy.close()
        for name in schemas:
            admin.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))
        admin.close()
    return render(results, per_op, rtt, batches, quick)


def render(
    results: dict[str, h.Result],
    per_op: dict[str, float | None],
    rtt: dict[float, float],
    batches: int,
    quick: bool,
) -> str:
    info = h.machine()
    lines = [
        f"Measured by `bench/bench_latency.py`{' --quick' if quick else ''} (`make bench`),"
        f" {batches} interleaved batches; the {builds.build_of(pqlkit)} build;"
        f" {info.get('cpu', '?')}, {info.get('cores', '?')}; load {h.load()};"
        f" commit {h.commit()}.",
        "",
        "| network | measured RTT | naive floor p50 | `track()` p50 | ratio |"
        " round trips: floor | round trips: `track()` |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    by_delay: dict[float, str] = {0.0: "loopback"}
    by_delay.update({d: f"{d * 1000:g} ms each way" for d in DELAYS})
    counted = {
        kind: next((v for k, v in per_op.items() if k.startswith(kind) and v is not None), None)
        for kind in ("naive floor", "pqlkit track()")
    }
    for delay, where in by_delay.items():
        floor = results[f"naive floor, {where}"]
        track = results[f"pqlkit track(), {where}"]
        rt_floor = per_op[f"naive floor, {where}"] or counted["naive floor"]
        rt_track = per_op[f"pqlkit track(), {where}"] or counted["pqlkit track()"]
        lines.append(
            f"| {where} | {rtt[delay] * 1000:.2f} ms | {floor.p50 * 1000:.2f} ms"
            f" | {track.p50 * 1000:.2f} ms | {track.p50 / floor.p50:.2f}x"
            f" | {rt_floor:.2f} | {rt_track:.2f} |"
        )
    lines += [
        "",
        "Round trips per call are counted by the proxy (a client burst answered by the"
        " server; the loopback rows repeat the proxied count: the same statements). The"
        " measured RTT is a `SELECT 1` through the same path (the proxy's own overhead"
        " included).",
        "",
    ]
    return "\n".join(lines)


def write_doc(block: str, path: Path = DOC) -> None:
    """Put ``block`` between the latency markers of ``path`` (appended if they are missing)."""
    text = path.read_text()
    if START not in text:
        text = text.rstrip() + f"\n\n{START}\n{END}\n"
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    path.write_text(f"{head}{START}\n{block}{END}{tail}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small batches (about a minute)")
    parser.add_argument("--no-write", action="store_true", help=f"do not update {DOC.name}")
    args = parser.parse_args(argv)
    block = run(quick=args.quick)
    print(block)
    if not args.no_write:
        write_doc(block)
        print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
