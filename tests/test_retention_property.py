"""Pruning changes no score: random models and histories, pruned at random horizons
(between calls), equal the same history kept whole, before and after a full rebuild."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

import oracle
from oracle import DAY, Op
from pqlkit import Client, MemoryStore, SQLiteStore, Store, ValidationError
from pqlkit._engine import SubjectState
from pqlkit.stores._base import INVALID_STATE
from pqlkit.testing import FrozenClock
from strategies import DAY0, Case, cases, describe_history
from test_engine_oracle import CLIENT_EXAMPLES, at, oracle_settings, send

STORES: dict[str, Callable[[Path, str], Store]] = {
    "memory": lambda tmp, name: MemoryStore(),
    "sqlite": lambda tmp, name: SQLiteStore(tmp / f"{name}.db"),
}

# a prune between calls: (after how many calls, modulo their number + 1; its horizon:
# an offset from the newest event sent so far, in µs: after it prunes every event sent)
prunes = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=30),
        st.one_of(
            st.sampled_from((1, 1, 0, -1, DAY, -DAY, -3 * DAY)),
            st.integers(min_value=-7 * DAY, max_value=DAY),
        ),
    ),
    min_size=1,
    max_size=3,
)


def states(store: Store, model: str, subjects: set[tuple[str, str]]) -> dict[object, object]:
    """Each subject's stored state (as stored: the kept values are a cache), but for one
    marked to be rebuilt on its next load (INVALID_STATE: prune does that to a state
    behind its log, whose tail it deletes)."""
    out: dict[object, object] = {}
    with store.transaction() as tx:
        for kind, sid in sorted(subjects):
            record = tx.load_state(model, kind, sid)  # type: ignore[arg-type]
            if record is not None and record.state != INVALID_STATE:
                out[(kind, sid)] = SubjectState.load(record.state)
    return out


def pruned_message(pruned: Store, whole: Store, op: Op) -> bool:
    """Whether ``op`` re-sends the message id of an event that was pruned: message_id
    deduplication covers the events kept only (documented), so it is left out."""
    if not isinstance(op, oracle.Track) or op.message_id is None:
        return False
    with whole.transaction() as w, pruned.transaction() as p:
        return w.has_message(op.message_id) and not p.has_message(op.message_id)


def readings(client: Client, subjects: set[tuple[str, str]]) -> dict[object, object]:
    """Every subject's signals and scores."""
    return {
        (kind, sid): (client.signals(sid, of=kind), client.scores(sid, of=kind))  # type: ignore[arg-type]
        for kind, sid in sorted(subjects)
    }


def refusal(client: Client, op: Op) -> ValidationError | None:
    """Make the call; the ValidationError it raised, if any."""
    try:
        send(client, op)
    except ValidationError as error:
        return error
    return None


@pytest.mark.parametrize("store_name", list(STORES))
@settings(oracle_settings, max_examples=CLIENT_EXAMPLES * 2)
@given(case=cases(), plan=prunes)
def test_pruned_equals_whole(store_name: str, case: Case, plan: list[tuple[int, int]]) -> None:
    model, history = case.model, case.history
    start = at(DAY0) - timedelta(days=400)  # before every event: T = the newest one
    whole_clock, pruned_clock = FrozenClock(start), FrozenClock(start)
    at_call: dict[int, list[int]] = {}
    for after, offset in plan:
        at_call.setdefault(after % (len(history) + 1), []).append(offset)
    with tempfile.TemporaryDirectory() as tmp:
        whole_store = STORES[store_name](Path(tmp), "whole")
        pruned_store = STORES[store_name](Path(tmp), "pruned")
        whole = Client(model, store=whole_store, clock=whole_clock, dispatch="inline")
        pruned = Client(model, store=pruned_store, clock=pruned_clock, dispatch="inline")
        done: list[Op] = []
        removed = 0
        try:
            for i, op in enumerate([*history, None]):
                sent = [e.ts for e in oracle.tracks(done)]
                for offset in at_call.get(i, []):
                    horizon = (max(sent) if sent else DAY0) + offset
                    pruned_clock.set(at(horizon) + timedelta(days=1))
                    result = pruned.prune(older_than=timedelta(days=1))
                    pruned_clock.set(start)
                    removed += result.events
                if op is None:
                    break
                if pruned_message(pruned_store, whole_store, op):
                    event("a pruned message id re-sent: left out")
                    continue
                refused = refusal(pruned, op)
                if refused is not None:  # alias() of an id whose events were pruned
                    assert isinstance(op, oracle.Alias)
                    assert refused.field == "previous_id"
                    event("alias refused")
                    break
                send(whole, op)
                done.append(op)
            event(f"events pruned: {'some' if removed else 'none'}")
            subjects = {(k, s) for k, s in oracle.subjects(done)}
            note = describe_history(done)
            assert readings(pruned, subjects) == readings(whole, subjects), note
            whole.rebuild()
            pruned.rebuild()  # from the checkpoints and the events kept
            assert readings(pruned, subjects) == readings(whole, subjects), note
            kept = states(pruned_store, model.name, subjects)
            full = states(whole_store, model.name, subjects)
            assert kept == {key: full[key] for key in kept}, note
            for kind, sid in sorted(subjects):  # later: time alone moves windows
                for offset in case.later:
                    t = at(max(e.ts for e in oracle.subject_events(done, sid, kind)) + offset)
                    whole_clock.set(t)
                    pruned_clock.set(t)
                    assert pruned.scores(sid, of=kind) == whole.scores(sid, of=kind), note
                    assert pruned.signals(sid, of=kind) == whole.signals(sid, of=kind), note
        finally:
            whole.close()
            pruned.close()
            whole_store.close()
            pruned_store.close()
