"""Windowed aggregates over many entries: exact values, bounded state, cheap reads and writes.

A busy subject keeps thousands of entries inside a ``within=D`` window. These tests
check, without timing anything, that the engine then stays exact (counts, float
totals as ``math.fsum`` gives them, distinct keys, the next expiry) while an event
copies the window's entries only now and then (expired entries are dropped in
batches) and a read touches a logarithmic number of them.
"""

from __future__ import annotations

import bisect
import math
import random
from typing import Any

from pqlkit import Model, active_users, count, days, distinct, total
from pqlkit import _dsl as d
from pqlkit._engine import Plan, SubjectState
from pqlkit._engine.accumulators import Acc
from strategies import DAY0, apply

DAY = 86_400_000_000
D = days(1)


def compile_one(expr: d.Expr) -> tuple[Plan, Acc]:
    """A plan whose only aggregate is ``expr``."""
    plan = Plan(Model("windows", signals={"x": expr >= 1}))
    assert len(plan.accs) == 1
    return plan, plan.accs[0]


def read(plan: Plan, state: SubjectState, t: int, kind: str = "user") -> Any:
    acc = plan.accs[0]
    return acc.value(state.slots[0], t, state, kind)  # type: ignore[arg-type]


def next_change(plan: Plan, state: SubjectState, t: int) -> int | None:
    return plan.accs[0].next_change(state.slots[0], t, state)


def stored(state: SubjectState) -> list[Any]:
    """The window's sorted list: entries of a count/total, key times of a distinct.

    (A slot that is itself a list of entries is returned as is.)
    """
    slot = state.slots[0]
    if isinstance(slot, list) and slot and isinstance(slot[0], (int, dict)):
        inner: list[Any] = slot[1]
        return inner
    return slot  # type: ignore[no-any-return]


class Naive:
    """Every (ts, value) applied; the window read the slow way."""

    def __init__(self) -> None:
        self.events: list[tuple[int, Any]] = []
        self.times: list[int] = []

    def add(self, ts: int, v: Any) -> None:
        self.events.append((ts, v))
        bisect.insort(self.times, ts)

    def live(self, t: int) -> list[tuple[int, Any]]:
        cut = t - DAY
        return [(ts, v) for ts, v in self.events if ts > cut]

    def count(self, t: int) -> int:
        return len(self.times) - bisect.bisect_right(self.times, t - DAY)

    def total(self, t: int) -> float:
        # the engine merges same-time amounts first (plain +), then fsums the entries
        merged: dict[int, Any] = {}
        for ts, v in self.live(t):
            merged[ts] = merged[ts] + v if ts in merged else v
        return math.fsum(merged.values())

    def next_change(self, t: int) -> int | None:
        i = bisect.bisect_right(self.times, t - DAY)
        return self.times[i] + DAY if i < len(self.times) else None


AMOUNTS = [0.1, 0.2, 0.3, 1e16, -1e16, 1e-17, 19.99, 2**60 + 1, 3, -7, 1e-300, 0.0]


def test_count_and_total_stay_exact_with_thousands_of_entries() -> None:
    """count/total(within=D) equal a naive count and math.fsum after every event."""
    rng = random.Random(7)
    cplan, _ = compile_one(count("pay", within=D))
    tplan, _ = compile_one(total("pay", "n", within=D))
    cstate, tstate = cplan.new_state(), tplan.new_state()
    naive = Naive()
    step = DAY // 1000  # about 1000 entries inside the window
    for i in range(3000):
        ts = DAY0 + i * step
        amount = rng.choice(AMOUNTS) if rng.random() < 0.5 else rng.random() * 100
        for plan, state in ((cplan, cstate), (tplan, tstate)):
            apply(plan, state, ts, "pay", {"n": amount}, "u1")
        naive.add(ts, amount)
        if i % 7 == 0 or i > 2990:
            for t in (ts, ts + rng.randrange(DAY + 1)):
                assert read(cplan, cstate, t) == naive.count(t)
                got = read(tplan, tstate, t)
                assert got == naive.total(t), (i, t)
                assert type(got) is float
                assert next_change(cplan, cstate, t) == naive.next_change(t)
        # expired entries are dropped in batches: never more than 2x the live ones + 32
        live = naive.count(ts)
        assert len(stored(cstate)) <= 2 * live + 32
        assert len(stored(tstate)) <= 2 * live + 32


def test_late_events_in_the_middle_keep_sums_exact() -> None:
    """Late events (inside, at an existing time, before the window) keep count/total exact."""
    cplan, _ = compile_one(count("pay", within=D))
    tplan, _ = compile_one(total("pay", "n", within=D))
    cstate, tstate = cplan.new_state(), tplan.new_state()
    naive = Naive()
    step = DAY // 500

    def add(ts: int, amount: Any) -> None:
        for plan, state in ((cplan, cstate), (tplan, tstate)):
            apply(plan, state, ts, "pay", {"n": amount}, "u1")
        naive.add(ts, amount)

    for i in range(1500):
        add(DAY0 + i * step, 0.1 * (i % 13))
    newest = DAY0 + 1499 * step
    late = [
        (newest - DAY // 2 + 1, 2**60 + 1),  # between entries, an int fsum rounds
        (newest - DAY // 3, 0.7),  # at an existing time: merged with it
        (newest - DAY // 3, 1e-300),  # a finer unit than any before
        (newest - DAY + 1, 5.5),  # the oldest time still inside
        (newest - DAY, 100.0),  # exactly at the edge: outside
        (newest - 3 * DAY, 1.0),  # long gone
        (newest, -(2**55)),
    ]
    for ts, amount in late:
        add(ts, amount)
        for t in (newest, newest + DAY // 4, newest + DAY - 1, newest + DAY):
            assert read(cplan, cstate, t) == naive.count(t)
            assert read(tplan, tstate, t) == naive.total(t)
            assert next_change(cplan, cstate, t) == naive.next_change(t)
            assert next_change(tplan, tstate, t) == naive.next_change(t)


def test_since_first_seen_sums_after_f_moves_earlier() -> None:
    """count/total(since_first_seen=D): a late first event drops the entries past F + D."""
    cplan, _ = compile_one(count("pay", since_first_seen=D))
    tplan, _ = compile_one(total("pay", "n", since_first_seen=D))
    cstate, tstate = cplan.new_state(), tplan.new_state()
    step = DAY // 400
    amounts = [0.1 * (i % 11) for i in range(600)]
    for i, amount in enumerate(amounts):
        for plan, state in ((cplan, cstate), (tplan, tstate)):
            apply(plan, state, DAY0 + i * step, "pay", {"n": amount}, "u1")
    t = DAY0 + 600 * step
    assert read(cplan, cstate, t) == 400
    assert read(tplan, tstate, t) == math.fsum(amounts[:400])
    for plan, state in ((cplan, cstate), (tplan, tstate)):  # F moves 100 steps earlier
        apply(plan, state, DAY0 - 100 * step, "login", {}, "u1")
    assert read(cplan, cstate, t) == 300
    assert read(tplan, tstate, t) == math.fsum(amounts[:300])


def test_an_event_copies_the_window_only_now_and_then() -> None:
    """With 1000 live entries, 4000 events copy a few entries each on average, not 1000."""
    for expr in (count("pay", within=D), total("pay", "n", within=D)):
        plan, _ = compile_one(expr)
        state = plan.new_state()
        step = DAY // 1000
        for i in range(1000):
            apply(plan, state, DAY0 + i * step, "pay", {"n": 1.5}, "u1")
        copied = 0
        before = stored(state)
        for i in range(1000, 5000):
            apply(plan, state, DAY0 + i * step, "pay", {"n": 1.5}, "u1")
            now = stored(state)
            if now is not before:
                copied += len(now)
                before = now
        assert copied <= 8 * 4000, copied
        want = 1000 if isinstance(expr, d.Count) else 1500.0
        assert read(plan, state, DAY0 + 4999 * step) == want


def test_a_distinct_window_rebuilds_its_keys_only_now_and_then() -> None:
    """distinct(within=D) over 2000 live keys: the key map is rebuilt in batches, stays exact."""
    plan, _ = compile_one(distinct("visit", "page", within=D))
    state = plan.new_state()
    step = DAY // 2000
    seen: dict[str, int] = {}
    rebuilt = 0
    keys = state.slots[0][0]
    for i in range(6000):
        ts = DAY0 + i * step
        page = f"p{(i * 7919) % 2500}"
        apply(plan, state, ts, "visit", {"page": page}, "u1")
        seen['"' + page + '"'] = ts
        if state.slots[0][0] is not keys:
            rebuilt += len(state.slots[0][0])
            keys = state.slots[0][0]
        if i % 97 == 0 or i > 5990:
            for t in (ts, ts + DAY // 3):
                live = sorted(v for v in seen.values() if v > t - DAY)
                assert read(plan, state, t) == len(live)
                want = live[0] + DAY if live else None
                assert next_change(plan, state, t) == want
        if i % 11 == 0:
            live_now = sum(1 for v in seen.values() if v > ts - DAY)
            assert len(stored(state)) <= 2 * live_now + 32
            assert sorted(state.slots[0][0].values()) == stored(state)
    assert rebuilt <= 8 * 6000, rebuilt


class Probe(list[Any]):
    """A list that counts the items read through it."""

    touched = 0

    def __getitem__(self, i: Any) -> Any:
        out = super().__getitem__(i)
        self.touched += len(out) if isinstance(i, slice) else 1
        return out

    def __iter__(self) -> Any:
        self.touched += len(self)
        return super().__iter__()


def test_reads_touch_a_logarithmic_number_of_entries() -> None:
    """value and next_change at the newest event bisect: ~log2(5000) items, not 5000."""
    step = DAY // 5000
    for expr in (
        count("pay", within=D),
        total("pay", "n", within=D),
        distinct("pay", "n", within=D),
        active_users("pay", within=D),
    ):
        plan, acc = compile_one(expr)
        state = plan.new_state()
        for i in range(8000):
            apply(plan, state, DAY0 + i * step, "pay", {"n": i * 0.25}, f"u{i}")
        newest = DAY0 + 7999 * step
        probe = Probe(stored(state))
        state.slots[0][1] = probe
        for t in (newest, newest + DAY // 2):
            got = acc.value(state.slots[0], t, state, "account")
            assert acc.next_change(state.slots[0], t, state) is not None
            assert got == plan.accs[0].value(state.slots[0], t, state, "account")
        assert probe.touched <= 6 * 20, (expr, probe.touched)  # 6 reads of ~log2(6000) + 3
        want = len([i for i in range(8000) if DAY0 + i * step > newest - DAY])
        if not isinstance(expr, d.Total):
            assert acc.value(state.slots[0], newest, state, "account") == want


def test_window_state_survives_a_json_round_trip() -> None:
    """Dumped and loaded mid-stream, a window state reads and continues exactly the same."""
    rng = random.Random(3)
    for expr in (
        count("pay", within=D),
        total("pay", "n", within=D),
        total("pay", "n", since_first_seen=D),
        distinct("pay", "k", within=D),
    ):
        plan, acc = compile_one(expr)
        kept, cycled = plan.new_state(), plan.new_state()
        ts = DAY0
        for i in range(1500):
            ts += rng.randrange(DAY // 300)
            when = ts - rng.randrange(DAY) if rng.random() < 0.1 else ts
            props = {"n": rng.choice(AMOUNTS), "k": f"k{rng.randrange(400)}"}
            apply(plan, kept, when, "pay", props, "u1")
            apply(plan, cycled, when, "pay", props, "u1")
            if i % 50 == 0:
                cycled = SubjectState.load(cycled.dump())
            newest = kept.newest
            assert newest is not None
            for t in (newest, newest + DAY // 2):
                a = acc.value(kept.slots[0], t, kept, "user")
                b = acc.value(cycled.slots[0], t, cycled, "user")
                assert repr(a) == repr(b)
                assert acc.next_change(kept.slots[0], t, kept) == acc.next_change(
                    cycled.slots[0], t, cycled
                )
        # the stored times stay sorted
        inner = stored(cycled)
        times = [e[0] for e in inner] if inner and isinstance(inner[0], list) else inner
        assert times == sorted(times)
        assert bisect.bisect_left(times, times[0]) == 0
