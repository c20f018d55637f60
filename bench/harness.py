"""The one timing harness every benchmark uses.

A benchmark is a group of :class:`Contender` s measured together: each gets an
untimed warm-up batch, then ``batches`` timed batches, and the batches are
*interleaved* (batch 1 of every contender, then batch 2, ..., the order rotated
each round), so a noisy neighbour on a shared machine slows every contender of
a group alike and the ratios within a group stay meaningful.

Per-operation contenders time every call on its own: ``perf_counter_ns`` right
around the call (wall time), and ``thread_time_ns`` just outside that (the calling
thread's CPU time). The cost of an empty timed region is measured once
(:func:`calibrate`) and taken off each sample. The report gives the median (p50)
and the 99th percentile (p99) of wall time over all individual timings, the
spread of the per-batch medians as a noise gauge, and the median CPU time: on a
shared machine the CPU time is the steadier number (but it leaves out work done
by other processes, such as a database server). Bulk contenders time a whole
batch and report the median over batches of the time per row. The garbage
collector stays on, as in an application: its pauses belong to the p99.
"""

from __future__ import annotations

import math
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import builds

ROOT = Path(__file__).resolve().parent.parent


class Contender:
    """Something measured: ``setup`` once, ``batch(n)`` per batch, ``teardown`` at the end.

    ``batch`` returns one :data:`Sample` per operation (taken as in :func:`timed`),
    or, for bulk contenders (``bulk = True``), one sample for the whole batch.
    """

    name = "?"
    bulk = False

    def __init__(self, ops: int) -> None:
        self.ops = ops  # operations (or rows) per batch

    def setup(self, batches: int) -> None:
        """Prepare ``batches`` + 1 batches (the first is the warm-up)."""

    def batch(self, n: int) -> list[Sample]:
        raise NotImplementedError

    def teardown(self) -> None:
        """Release what ``setup`` took."""


Sample = tuple[int, int]
"""(wall ns, thread CPU ns) of one timed region."""

now_ns = time.perf_counter_ns
cpu_ns = time.thread_time_ns


def timed(fn: Callable[[], object]) -> Sample:
    """Time one call of ``fn()``, the way every contender times its operations."""
    c0 = cpu_ns()
    w0 = now_ns()
    fn()
    w1 = now_ns()
    return w1 - w0, cpu_ns() - c0


_overhead: Sample | None = None


def calibrate() -> Sample:
    """The median cost of an empty timed region (taken off every per-operation sample)."""
    global _overhead
    if _overhead is None:
        walls, cpus = [], []
        for _ in range(2_000):
            c0 = cpu_ns()
            w0 = now_ns()
            w1 = now_ns()
            c1 = cpu_ns()
            walls.append(w1 - w0)
            cpus.append(c1 - c0)
        _overhead = (int(statistics.median(walls)), int(statistics.median(cpus)))
    return _overhead


@dataclass
class Result:
    """The timings of one contender, in seconds (per operation, or per row for bulk)."""

    name: str
    ops: int
    bulk: bool
    batches: list[list[float]] = field(default_factory=list)
    cpu_batches: list[list[float]] = field(default_factory=list)

    def add(self, samples: list[Sample]) -> None:
        if self.bulk:
            (w, c), rows = samples[0], self.ops
            self.batches.append([w / 1e9 / rows])
            self.cpu_batches.append([c / 1e9 / rows])
            return
        ow, oc = calibrate()
        self.batches.append([max(0, w - ow) / 1e9 for w, _ in samples])
        self.cpu_batches.append([max(0, c - oc) / 1e9 for _, c in samples])

    @property
    def samples(self) -> list[float]:
        return [x for b in self.batches for x in b]

    @property
    def p50(self) -> float:
        """Seconds: the median individual operation (bulk: median over batches, per row)."""
        return statistics.median(self.samples)

    @property
    def cpu_p50(self) -> float:
        """Seconds of the calling thread's CPU time, median."""
        return statistics.median([x for b in self.cpu_batches for x in b])

    @property
    def p99(self) -> float | None:
        if self.bulk:
            return None
        return percentile(self.samples, 99)

    @property
    def batch_p50s(self) -> list[float]:
        return [statistics.median(b) for b in self.batches]

    @property
    def spread(self) -> tuple[float, float]:
        """The lowest and highest batch median: how noisy the machine was."""
        meds = self.batch_p50s
        return min(meds), max(meds)

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "ops_per_batch": self.ops,
            "batches": len(self.batches),
            "bulk": self.bulk,
            "p50_s": self.p50,
            "p99_s": self.p99,
            "cpu_p50_s": self.cpu_p50,
            "batch_p50s_s": self.batch_p50s,
        }


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank ``q``-th percentile."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def run_group(
    title: str, contenders: list[Contender], *, batches: int, log: bool = True
) -> dict[str, Result]:
    """Warm up, then run ``batches`` interleaved batches of every contender."""
    results = {c.name: Result(c.name, c.ops, c.bulk) for c in contenders}
    calibrate()
    started = time.perf_counter()
    if log:
        names = ", ".join(c.name for c in contenders)
        print(f"[{title}] {names}: warm-up + {batches} batches", flush=True)
    ready: list[Contender] = []
    try:
        for c in contenders:
            c.setup(batches)
            ready.append(c)
        for c in contenders:
            c.batch(c.ops)  # warm-up, discarded
        for i in range(batches):
            k = i % len(contenders)
            for c in contenders[k:] + contenders[:k]:
                results[c.name].add(c.batch(c.ops))
    finally:
        for c in ready:
            c.teardown()
    if log:
        print(f"[{title}] done in {time.perf_counter() - started:.1f} s", flush=True)
    return results


# -- formatting ------------------------------------------------------------------


def us(seconds: float | None) -> str:
    """Seconds as microseconds, 3 significant digits."""
    if seconds is None:
        return "—"
    v = seconds * 1e6
    if v >= 100:
        return f"{v:,.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def rate(per_second: float) -> str:
    return f"{per_second:,.0f}"


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x"


def table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |"]
    lines.append("|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|")
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


# -- the machine -------------------------------------------------------------------


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cores() -> str:
    logical = os.cpu_count() or 0
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else logical
    return f"{usable} usable of {logical} logical"


def load() -> str:
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return "n/a"
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"


def memory_total() -> str:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return "n/a"


def commit(repo: Path = ROOT) -> str:
    """The commit of ``repo`` measured, with a note when its ``src/`` differs from it."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=repo, capture_output=True, text=True, check=False
        ).stdout.strip()

    head = git("rev-parse", "--short=10", "HEAD")
    if not head:
        return "unknown (not a git checkout)"
    subject = git("log", "-1", "--format=%s", "HEAD")
    dirty = git("status", "--porcelain", "--", "src")
    note = " + uncommitted changes in src/" if dirty else ""
    return f"`{head}` ({subject[:70]}){note}"


def machine(extra: dict[str, str] | None = None) -> dict[str, str]:
    import pqlkit

    package = Path(pqlkit.__file__).resolve().parent  # src/pqlkit, or build/mypyc/pqlkit
    info = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit(ROOT),
        "pqlkit build": builds.describe(pqlkit),
        "cpu": cpu_model(),
        "cores": cores(),
        "memory": memory_total(),
        "python": f"{platform.python_implementation()} {sys.version.split()[0]}",
        "sqlite": sqlite3.sqlite_version,
        "os": platform.platform(terse=True),
        "load (1/5/15 min) at start": load(),
    }
    if not package.is_relative_to(ROOT):
        info["pqlkit measured"] = f"`{package}` (not this checkout's)"
    info.update(extra or {})
    return info
