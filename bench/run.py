"""pqlkit's benchmark suite (issue 7): ``make bench`` runs it.

Measures, with one harness (``bench/harness.py``) and one workload
(``bench/workload.py``: the data-tooling model, mixed events):

1. per event, caller thread: the raw-sqlite3 floor, Segment's ``track()``,
   PostHog's ``capture()``, and pqlkit's ``track()`` on MemoryStore, SQLiteStore
   and PostgresStore (when it imports and a server answers);
2. bulk: the ``executemany`` floor and ``track_many()``;
3. history: ``track()`` for a subject with 10k/100k/1M prior events vs a fresh one;
4. memory: peak RSS of a process importing 1M events for 100k users;
5. ``sweep()`` over those 100k users with 1% and with 10% of them due;
6. latency: PostgresStore ``track()`` and a naive floor on the loopback and through
   a proxy adding 0.5 ms and 2 ms each way, round trips counted
   (``bench/bench_latency.py``, which writes its own section of the page).
7. store size: bytes per 100k events on SQLite (and Postgres), ``bench/store_size.py``.

Prints the tables and writes them into ``docs/performance.md`` between the
``<!-- bench:start -->`` and ``<!-- bench:end -->`` markers, with the machine,
the commit, and the verdict on each target of issue 7. Ratios are computed
between contenders measured in the same run, interleaved.

Usage::

    python bench/run.py            # the full run (long: see docs/performance.md)
    python bench/run.py --quick    # small sizes, under ~2 minutes (CI-like runs)
    python bench/run.py --only per-event,bulk --no-write
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_latency
import builds
import contenders as cs
import harness as h
import history
import store_size
import stores
import workload

import pqlkit
from pqlkit.testing import FrozenClock

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "performance.md"
START, END = "<!-- bench:start -->", "<!-- bench:end -->"
GROUPS = ("per-event", "bulk", "history", "memory", "sweep", "latency", "size")


@dataclass(frozen=True)
class Sizes:
    """How much each benchmark does."""

    mode: str
    batches: int = 7
    per_event_ops: int = 1_000  # track() calls per batch (Postgres: a quarter)
    floor_rows: int = 10_000  # executemany rows per batch
    bulk_events: int = 3_000  # track_many events per batch (Postgres: a quarter)
    history: tuple[int, ...] = (10_000, 100_000, 1_000_000)
    history_ops: int = 200
    import_users: int = 100_000  # x 10 events each
    sweep_reps: int = 5
    size_events: int = 100_000  # tracked for the store size per 100k events


FULL = Sizes("full")
QUICK = Sizes(
    "quick",
    per_event_ops=200,
    bulk_events=300,
    history=(1_000, 5_000),
    history_ops=50,
    import_users=1_000,
    sweep_reps=3,
    size_events=5_000,
)

POPULATION = (300, 30)  # users, accounts of the live workload


# -- 1. per event ----------------------------------------------------------------------


def per_event(sz: Sizes, tmp: str, available: dict[str, Any]) -> dict[str, h.Result]:
    pop = workload.Population.make(*POPULATION)
    group: list[h.Contender] = [
        cs.SqliteEventFloor(sz.per_event_ops, tmp, pop),
        cs.SegmentTrack(sz.per_event_ops, pop),
        cs.PosthogCapture(sz.per_event_ops, pop),
    ]
    for name, opener in available.items():
        ops = sz.per_event_ops // 4 if name == "postgres" else sz.per_event_ops
        group.append(cs.Track(f"pqlkit track() on {_store_name(name)}", ops, opener, pop))
    if builds.build_of(pqlkit) == "mypyc":  # the pure-Python build beside it
        for name in ("memory", "sqlite"):
            label = f"pqlkit track() on {_store_name(name)}, pure-Python build"
            group.append(cs.TrackPure(label, sz.per_event_ops, name, tmp, pop))
    group.append(cs.TrackTwoWriters(sz.per_event_ops, tmp, pop))
    return h.run_group("per event", group, batches=sz.batches)


def _store_name(name: str) -> str:
    return {"memory": "MemoryStore", "sqlite": "SQLiteStore", "postgres": "PostgresStore"}[name]


# -- 2. bulk -----------------------------------------------------------------------------


def bulk(sz: Sizes, tmp: str, available: dict[str, Any]) -> dict[str, h.Result]:
    pop = workload.Population.make(*POPULATION)
    group: list[h.Contender] = [cs.ExecutemanyFloor(tmp, pop, sz.floor_rows)]
    for name, opener in available.items():
        ops = sz.bulk_events // 4 if name == "postgres" else sz.bulk_events
        label = f"pqlkit track_many() on {_store_name(name)} ({ops:,} events/call)"
        group.append(cs.TrackMany(label, ops, opener, pop))
    return h.run_group("bulk", group, batches=sz.batches)


# -- 3. history ---------------------------------------------------------------------------


@dataclass
class HistoryRow:
    prior: int
    build_s: float
    fresh: h.Result
    whale: h.Result
    cold: h.Result


def run_history(sz: Sizes, tmp: str) -> list[HistoryRow]:
    stage = history.Stage(pqlkit.SQLiteStore(os.path.join(tmp, "history.db")))
    rows = []
    try:
        for prior in sz.history:
            print(f"[history] backfilling the whale to {prior:,} prior events", flush=True)
            build = stage.grow(prior)
            print(f"[history] backfill took {build:.1f} s", flush=True)
            fresh = history.FreshTrack(stage, sz.history_ops, seed=40 + prior % 97)
            whale = history.WhaleTrack(stage, sz.history_ops, seed=50 + prior % 97)
            whale.name = f"whale ({prior:,} prior events)"
            cold = history.ColdWhaleTrack(stage, sz.history_ops, seed=60 + prior % 97)
            cold.name = f"whale, cold ({prior:,} prior events)"
            res = h.run_group(f"history {prior:,}", [fresh, whale, cold], batches=sz.batches)
            rows.append(HistoryRow(prior, build, res[fresh.name], res[whale.name], res[cold.name]))
    finally:
        stage.close()
    return rows


# -- 4. memory, 5. sweep ------------------------------------------------------------------


def run_import(sz: Sizes, tmp: str) -> tuple[dict[str, Any], str]:
    """Import ``import_users`` x 10 events in a child process; its report and the file."""
    db = os.path.join(tmp, "import.db")
    print(f"[memory] importing {sz.import_users * 10:,} events in a child process", flush=True)
    started = time.perf_counter()
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "import_rss.py"),
            db,
            "--users",
            str(sz.import_users),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"import_rss.py failed:\n{proc.stderr}")
    report: dict[str, Any] = json.loads(proc.stdout)
    print(f"[memory] done in {time.perf_counter() - started:.1f} s", flush=True)
    return report, db


class Sweep(h.Contender):
    """``sweep(now=at)`` on a fresh copy of the imported file (copying is untimed)."""

    def __init__(self, name: str, source: str, tmp: str, at: Any, *, again: bool = False) -> None:
        super().__init__(1)
        self.name = name
        self._source = source
        self._copy = os.path.join(tmp, f"sweep-{abs(hash(name))}.db")
        self._at = at
        self._again = again  # time a second sweep at the same time: nothing due
        self.due: int | None = None
        self.fired: list[int] = []

    def batch(self, n: int) -> list[h.Sample]:
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(self._copy + suffix):
                os.remove(self._copy + suffix)
        shutil.copyfile(self._source, self._copy)
        if self._again:
            self.due = 0
        else:
            self.due = _count_due(self._copy, self._at)
        store = pqlkit.SQLiteStore(self._copy)
        client = pqlkit.Client(workload.MODEL, store=store, clock=FrozenClock(self._at))
        try:
            if self._again:
                client.sweep(now=self._at)
            c0 = h.cpu_ns()
            w0 = h.now_ns()
            fired = client.sweep(now=self._at)
            w1 = h.now_ns()
            sample = (w1 - w0, h.cpu_ns() - c0)
            self.fired.append(len(fired))
        finally:
            client.close()
            store.close()
        return [sample]


def _count_due(path: str, at: Any) -> int | None:
    """Subjects due at ``at``, read from SQLiteStore's due index (None if its layout changed)."""
    try:
        conn = sqlite3.connect(path)
        try:
            row = conn.execute(
                "SELECT count(*) FROM states WHERE model = ? AND due_at <= ?",
                (workload.MODEL.name, int(at.timestamp() * 1_000_000)),
            ).fetchone()
        finally:
            conn.close()
    except sqlite3.Error:
        return None
    return int(row[0])


def _count_subjects(path: str) -> int | None:
    try:
        conn = sqlite3.connect(path)
        try:
            row = conn.execute(
                "SELECT count(*) FROM states WHERE model = ?", (workload.MODEL.name,)
            ).fetchone()
        finally:
            conn.close()
    except sqlite3.Error:
        return None
    return int(row[0])


def run_sweeps(sz: Sizes, tmp: str, db: str) -> tuple[list[Sweep], dict[str, h.Result]]:
    at = workload.SWEEP_AT
    group = [
        Sweep("nothing due", db, tmp, at, again=True),
        Sweep("1% of users due", db, tmp, at),
        Sweep("10% of users due", db, tmp, at + timedelta(days=1)),
    ]
    return group, h.run_group("sweep", list(group), batches=sz.sweep_reps)


# -- the report ----------------------------------------------------------------------------


@dataclass
class Target:
    what: str
    goal: str
    measured: str
    met: bool | None  # on wall-time medians; None: not measured in this run
    cpu_met: bool | None = None  # the same on CPU-time medians, where that applies

    @property
    def verdict(self) -> str:
        if self.met is None:
            return "not measured"
        if self.cpu_met is None or self.cpu_met == self.met:
            return "met" if self.met else "**not met**"
        if self.met:
            return "borderline: met on wall time, not on CPU time"
        return "borderline: met on CPU time, not on wall time"


def render(
    sz: Sizes,
    info: dict[str, str],
    pe: dict[str, h.Result] | None,
    bk: dict[str, h.Result] | None,
    hist: list[HistoryRow] | None,
    mem: dict[str, Any] | None,
    sweeps: tuple[list[Sweep], dict[str, h.Result], int | None] | None,
    skipped: dict[str, str],
) -> str:
    out: list[str] = []
    targets: list[Target] = []
    out.append(
        f"Run: **{sz.mode}** (`python bench/run.py{' --quick' if sz.mode == 'quick' else ''}`)"
    )
    out.append("")
    out += [f"- {k}: {v}" for k, v in info.items()]
    for name, why in skipped.items():
        out.append(f"- {_store_name(name)}: skipped, {why}")
    out.append("")

    floor_name = cs.SqliteEventFloor.name
    seg_name = cs.SegmentTrack.name
    if pe:
        floor, seg = pe[floor_name].p50, pe[seg_name].p50
        out.append(f"### Per event (caller thread), {sz.batches} batches, µs")
        out.append("")
        out.append(
            "Ratios are wall / CPU: the first from the wall-time medians, the second from the"
            " calling thread's CPU-time medians."
        )
        out.append("")
        fc, sc = pe[floor_name].cpu_p50, pe[seg_name].cpu_p50
        rows = []
        for r in pe.values():
            lo, hi = r.spread
            rows.append(
                [
                    r.name,
                    f"{r.ops:,}",
                    h.us(r.p50),
                    h.us(r.p99),
                    f"{h.us(lo)} to {h.us(hi)}",
                    h.us(r.cpu_p50),
                    f"{h.ratio(r.p50, floor)} / {h.ratio(r.cpu_p50, fc)}",
                    f"{h.ratio(r.p50, seg)} / {h.ratio(r.cpu_p50, sc)}",
                ]
            )
        header = ["", "ops/batch", "p50", "p99", "batch p50s", "CPU p50", "÷ sqlite floor"]
        out.append(h.table([*header, "÷ Segment"], rows))
        out.append("")
        for suffix in ("", ", pure-Python build"):
            sq = pe.get(f"pqlkit track() on SQLiteStore{suffix}")
            if sq is not None:
                what = f"SQLiteStore `track()`{suffix} p50 vs raw INSERT+UPSERT+COMMIT"
                targets.append(_within(what, 2.5, sq, pe[floor_name]))
            mm = pe.get(f"pqlkit track() on MemoryStore{suffix}")
            if mm is not None:
                what = f"MemoryStore `track()`{suffix} p50 vs Segment `track()`"
                targets.append(_within(what, 2.0, mm, pe[seg_name]))

    if bk:
        fl = bk[cs.ExecutemanyFloor.name]
        floor_rate = 1 / fl.p50
        out.append(f"### Bulk, {sz.batches} batches")
        out.append("")
        rows = []
        for r in bk.values():
            lo, hi = r.spread
            share = (1 / r.p50) / floor_rate
            rows.append(
                [
                    r.name,
                    h.us(r.p50),
                    f"{h.us(lo)} to {h.us(hi)}",
                    h.us(r.cpu_p50),
                    h.rate(1 / r.p50),
                    "1" if r is fl else f"1/{1 / share:.1f} (CPU 1/{r.cpu_p50 / fl.cpu_p50:.1f})",
                ]
            )
        header = ["", "µs/event (p50)", "batch range", "CPU µs/event", "events/s"]
        out.append(h.table([*header, "share of floor rows/s"], rows))
        out.append("")
        sq = next((r for n, r in bk.items() if "SQLiteStore" in n), None)
        if sq is not None:
            share = (1 / sq.p50) / floor_rate
            targets.append(
                Target(
                    "`track_many()` (SQLiteStore) events/s vs executemany rows/s",
                    "≥ 1/15",
                    f"1/{1 / share:.1f} ({h.rate(1 / sq.p50)} vs {h.rate(floor_rate)} /s);"
                    f" CPU 1/{sq.cpu_p50 / fl.cpu_p50:.1f}",
                    share >= 1 / 15,
                    fl.cpu_p50 / sq.cpu_p50 >= 1 / 15,
                )
            )

    if hist:
        out.append(f"### History: `track()` on SQLiteStore, {sz.batches} batches, µs")
        out.append("")
        rows = []
        for row in hist:
            rows.append(
                [
                    f"{row.prior:,}",
                    h.us(row.fresh.p50),
                    h.us(row.whale.p50),
                    h.us(row.fresh.p99),
                    h.us(row.whale.p99),
                    h.ratio(row.whale.p50, row.fresh.p50),
                    h.ratio(row.whale.cpu_p50, row.fresh.cpu_p50),
                    h.us(row.cold.p50),
                    h.ratio(row.cold.p50, row.fresh.p50),
                    _backfill(hist, row),
                ]
            )
        out.append(
            h.table(
                [
                    "prior events",
                    "fresh p50",
                    "whale p50",
                    "fresh p99",
                    "whale p99",
                    "whale ÷ fresh",
                    "(CPU)",
                    "cold whale p50",
                    "cold ÷ fresh",
                    "backfill (track_many)",
                ],
                rows,
            )
        )
        out.append("")
        out.append(
            "The whale is warm in the client that tracks it (the steady state of a server"
            " process); the cold whale is read from the store on each call, as after another"
            " process wrote."
        )
        out.append("")
        last = hist[-1]
        x = last.whale.p50 / last.fresh.p50
        full = last.prior >= 1_000_000
        targets.append(
            Target(
                "`track()` p50 with 1M prior events vs a fresh subject",
                "≤ 1.25x",
                f"{x:.2f}x at {last.prior:,} prior events"
                f" (CPU {h.ratio(last.whale.cpu_p50, last.fresh.cpu_p50)})"
                + ("" if full else "; 1M not measured in this run"),
                (x <= 1.25) if full else None,
                (last.whale.cpu_p50 / last.fresh.cpu_p50 <= 1.25) if full else None,
            )
        )

    if mem:
        out.append("### Memory: importing with `track_many()` into SQLiteStore (own process)")
        out.append("")
        peak_mib = mem["peak_kib"] / 1024
        rows = [
            [
                f"{mem['events']:,} events, {mem['users']:,} users",
                f"{mem['rss_before_kib'] / 1024:.0f} MiB",
                f"{peak_mib:.0f} MiB",
                f"{mem['seconds']:,.0f} s",
                f"{mem.get('cpu_seconds', 0):,.0f} s",
                h.rate(mem["events"] / mem["seconds"]),
            ]
        ]
        out.append(
            h.table(["import", "RSS before", "peak RSS", "wall time", "CPU time", "events/s"], rows)
        )
        out.append("")
        full = mem["events"] >= 1_000_000
        targets.append(
            Target(
                "peak RSS importing 1M events (100k users)",
                "< 300 MB",
                f"{peak_mib * 1.048576:.0f} MB at {mem['events']:,} events"
                + ("" if full else " (1M not measured in this run)"),
                (peak_mib * 1.048576 < 300) if full else None,
            )
        )

    if sweeps:
        group, res, subjects = sweeps
        out.append(
            f"### `sweep()` over {subjects or 0:,} subjects (users and accounts), "
            f"median of {sz.sweep_reps}"
        )
        out.append("")
        rows = []
        for sw in group:
            r = res[sw.name]
            per = r.p50 / sw.due if sw.due else None
            rows.append(
                [
                    sw.name,
                    "?" if sw.due is None else f"{sw.due:,}",
                    f"{r.p50 * 1000:,.1f}",
                    f"{h.us(per)}" if per else "—",
                ]
            )
        out.append(h.table(["sweep", "subjects due", "ms (p50)", "µs per due subject"], rows))
        out.append("")
        none_, one, ten = (res[s.name].p50 for s in group)
        d1, d10 = group[1].due, group[2].due
        if d1 and d10:
            per1, per10 = one / d1, ten / d10
            ok = max(per1, per10) / min(per1, per10) <= 2 and none_ <= one / 10
            targets.append(
                Target(
                    "sweep time follows the subjects due, not all subjects",
                    "per-due cost at 1% within 2x of 10%; nothing due < 1/10 of 1%",
                    f"{h.us(per1)} vs {h.us(per10)} µs per due subject; "
                    f"nothing due {none_ * 1000:.1f} ms vs 1% {one * 1000:.1f} ms",
                    ok if subjects and subjects >= 100_000 else None,
                )
            )

    if targets:
        out.append("### Targets (issue 7)")
        out.append("")
        out.append(
            h.table(
                ["target", "goal", "measured", "verdict"],
                [[t.what, t.goal, t.measured, t.verdict] for t in targets],
            )
        )
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def _within(what: str, limit: float, r: h.Result, base: h.Result) -> Target:
    """The target "``r``'s p50 is at most ``limit`` times ``base``'s", on wall and CPU time."""
    x = r.p50 / base.p50
    return Target(
        what,
        f"≤ {limit:g}x",
        f"{x:.2f}x ({h.us(r.p50)} vs {h.us(base.p50)} µs); CPU {h.ratio(r.cpu_p50, base.cpu_p50)}",
        x <= limit,
        r.cpu_p50 / base.cpu_p50 <= limit,
    )


def _backfill(hist: list[HistoryRow], row: HistoryRow) -> str:
    """How long growing the whale to this stage took, and its rate."""
    i = hist.index(row)
    added = row.prior - (hist[i - 1].prior if i else 0)
    if not row.build_s:
        return "—"
    return f"+{added:,} in {row.build_s:,.0f} s ({h.rate(added / row.build_s)}/s)"


def write_doc(block: str, path: Path) -> None:
    """Put ``block`` between the markers of ``path`` (created with the markers if missing)."""
    text = path.read_text() if path.exists() else f"# Performance\n\n{START}\n{END}\n"
    if START not in text or END not in text:
        text = text.rstrip() + f"\n\n{START}\n{END}\n"
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    path.write_text(f"{head}{START}\n{block}{END}{tail}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (under ~2 minutes)")
    parser.add_argument(
        "--only", default=",".join(GROUPS), help=f"comma-separated groups of: {', '.join(GROUPS)}"
    )
    parser.add_argument(
        "--history", help="comma-separated prior-event counts (default: 10000,100000,1000000)"
    )
    parser.add_argument("--import-users", type=int, help="users imported (x10 events each)")
    parser.add_argument("--no-write", action="store_true", help=f"do not update {DOC.name}")
    parser.add_argument("--output", type=Path, default=DOC, help="the Markdown file to update")
    args = parser.parse_args(argv)
    sz = QUICK if args.quick else FULL
    if args.history:
        sz = Sizes(**{**sz.__dict__, "history": tuple(int(x) for x in args.history.split(","))})
    if args.import_users:
        sz = Sizes(**{**sz.__dict__, "import_users": args.import_users})
    only = {g.strip() for g in args.only.split(",") if g.strip()}
    unknown = only - set(GROUPS)
    if unknown:
        parser.error(f"unknown group(s): {', '.join(sorted(unknown))}")

    started = time.perf_counter()
    info = h.machine()
    pe = bk = mem = None
    hist = None
    sweeps = None
    latency = None
    size: tuple[str, dict[str, Any]] | None = None
    with tempfile.TemporaryDirectory(prefix="pqlkit-bench-") as tmp:
        available = stores.available(tmp)
        skipped = stores.skipped(available)
        try:
            if "per-event" in only:
                pe = per_event(sz, tmp, available)
            if "bulk" in only:
                bk = bulk(sz, tmp, available)
            if "history" in only:
                hist = run_history(sz, tmp)
            if "memory" in only or "sweep" in only:
                mem, db = run_import(sz, tmp)
                if "sweep" in only:
                    group, res = run_sweeps(sz, tmp, db)
                    sweeps = (group, res, _count_subjects(db))
                if "memory" not in only:
                    mem = None
            if "latency" in only:
                if "postgres" in available:
                    latency = bench_latency.run(quick=args.quick)
                else:
                    print("[latency] skipped: no PostgresStore (see the per-event group)")
            if "size" in only:
                size = store_size.current(
                    Path(tmp), sz.size_events, postgres="postgres" in available
                )
        finally:
            stores.cleanup()
    elapsed = time.perf_counter() - started
    info["load (1/5/15 min) at end"] = h.load()
    info["duration of this run"] = str(timedelta(seconds=round(elapsed)))
    block = render(sz, info, pe, bk, hist, mem, sweeps, skipped)
    if size is not None:
        block += "\n\n" + size[0]
    print()
    print(block)
    if latency is not None:
        print(latency)
    _save_json(sz, info, pe, bk, hist, mem, sweeps, None if size is None else size[1])
    if not args.no_write:
        write_doc(block, args.output)
        print(f"wrote {args.output}")
        if latency is not None:
            bench_latency.write_doc(latency, args.output)
    return 0


def _save_json(
    sz: Sizes,
    info: dict[str, str],
    pe: dict[str, h.Result] | None,
    bk: dict[str, h.Result] | None,
    hist: list[HistoryRow] | None,
    mem: dict[str, Any] | None,
    sweeps: tuple[list[Sweep], dict[str, h.Result], int | None] | None,
    size: dict[str, Any] | None = None,
) -> None:
    """Keep the raw numbers in ``.benchmarks/`` (git-ignored) for later comparisons."""
    data: dict[str, Any] = {"mode": sz.mode, "sizes": sz.__dict__, "machine": info}
    if pe:
        data["per_event"] = [r.to_json() for r in pe.values()]
    if bk:
        data["bulk"] = [r.to_json() for r in bk.values()]
    if hist:
        data["history"] = [
            {
                "prior": r.prior,
                "build_s": r.build_s,
                "fresh": r.fresh.to_json(),
                "whale": r.whale.to_json(),
                "cold": r.cold.to_json(),
            }
            for r in hist
        ]
    if mem:
        data["memory"] = mem
    if sweeps:
        group, res, subjects = sweeps
        data["sweep"] = {
            "subjects": subjects,
            "runs": [{"due": s.due, "fired": s.fired, **res[s.name].to_json()} for s in group],
        }
    if size:
        data["size"] = size
    folder = ROOT / ".benchmarks"
    folder.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (folder / f"bench-{sz.mode}-{stamp}.json").write_text(json.dumps(data, indent=2) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
