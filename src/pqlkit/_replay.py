"""Replaying the log: recorded events folded into subjects' states, as a write folds in
its own event (``apply``).

A subject is replayed from its whole log when its stored state cannot be read (another
version of the model wrote it) or is being rebuilt (``_rebuild``), and caught up with
the tail of its log that its stored state is behind (a warm writer puts off its saves:
see ``_session.Warm``). Events are folded in in arrival order, each one's TEV
activations latched as its write latched them.
"""

from __future__ import annotations

from collections.abc import Iterable

from ._convert import to_us
from ._engine import EventView, Plan
from ._events import EventRecord, SubjectKind
from ._session import Subject
from ._traits import Traits
from .stores._base import Transaction

__all__ = ["Replay", "apply"]


def apply(plan: Plan, subject: Subject, record: EventRecord, view: EventView) -> None:
    """Fold one event (``record``, seen as ``view``) into the subject's state."""
    s = subject.state
    plan.apply_view(s, view, subject.kind)
    if record.seq > s.seq:
        s.seq = record.seq
    if subject.kind == "user" and record.account_id is not None:
        latest = s.account  # [ts, account id] of the user's latest event with one
        if latest is None:
            latest = s.account = [view.ts, record.account_id]
        elif view.ts >= latest[0]:
            latest[0], latest[1] = view.ts, record.account_id
        subject.account = latest[1]


class Replay:
    """Replays one model's subjects from the log."""

    def __init__(self, plan: Plan, traits: Traits) -> None:
        self._plan = plan
        self._traits = traits

    def subject(
        self, tx: Transaction, kind: SubjectKind, sid: str, skip_seq: int | None = None
    ) -> Subject:
        """One subject's state rebuilt from its events (without event ``skip_seq``).

        It starts from the subject's checkpoint when it has one of this model's version
        (``Client.prune`` deleted the events it covers): the events after it are folded
        in, in the same order as from the whole log.
        """
        key = (kind, sid)
        found = self.checkpoint(tx, kind, sid)
        start = None if found is None else found[0]
        after = 0 if found is None else found[1]
        if kind == "user":
            ids = [sid, *tx.aliases_of(sid)]
            events: Iterable[EventRecord] = tx.events(user_ids=ids, after_seq=after)
        else:
            events = tx.events(account_id=sid, after_seq=after)
        if skip_seq is not None:
            events = (e for e in events if e.seq != skip_seq)
        subjects = self.events(tx, events, {key}, None if start is None else {key: start})
        return subjects.get(key) or Subject(kind, sid, self._plan.new_state())

    def checkpoint(
        self, tx: Transaction, kind: SubjectKind, sid: str
    ) -> tuple[Subject, int] | None:
        """The subject as its checkpoint holds it, and the seq it covers (None: it has
        none of this model's version; a store without checkpoints has none)."""
        load = getattr(tx, "load_checkpoint", None)
        if load is None:
            return None
        found: tuple[str, int] | None = load(self._plan.model.name, kind, sid)
        if found is None:
            return None
        state = self._plan.load(found[0])
        if state is None:  # another version of the model wrote it (a partial rebuild)
            return None
        subject = Subject(kind, sid, state)
        if kind == "user" and state.account is not None:
            subject.account = state.account[1]
        return subject, found[1]

    def catch_up(self, tx: Transaction, subject: Subject, skip_seq: int | None) -> None:
        """Fold in the subject's events newer than its stored state (without ``skip_seq``)."""
        s = subject.state
        if subject.kind == "user":
            ids = [subject.id, *tx.aliases_of(subject.id)]
            events = tx.events(user_ids=ids, after_seq=s.seq)
        else:
            events = tx.events(account_id=subject.id, after_seq=s.seq)
        tail = [e for e in events if e.seq != skip_seq]
        if tail:
            s.qualification = None  # the tail may have fired: read it from the store again
            if s.plays:
                s.plays = {}  # and its plays
            key = (subject.kind, subject.id)
            self.events(tx, tail, {key}, {key: subject})

    def events(
        self,
        tx: Transaction,
        events: Iterable[EventRecord],
        wanted: set[tuple[str, str]],
        subjects: dict[tuple[str, str], Subject] | None = None,
    ) -> dict[tuple[str, str], Subject]:
        """Fold ``events`` into the ``wanted`` subjects' states (fresh ones unless given)."""
        plan = self._plan
        subjects = {} if subjects is None else subjects
        resolved: dict[str, str] = {}
        for record in events:
            uid = resolved.get(record.user_id)
            if uid is None:
                uid = resolved[record.user_id] = tx.resolve(record.user_id)
            ts = to_us(record.timestamp)
            view = EventView(ts, record.event, record.properties, uid)
            targets: list[tuple[SubjectKind, str]] = [("user", uid)]
            if record.account_id is not None:
                targets.append(("account", record.account_id))
            for kind, sid in targets:
                if (kind, sid) not in wanted:
                    continue
                subject = subjects.get((kind, sid))
                if subject is None:
                    subject = subjects[(kind, sid)] = Subject(kind, sid, plan.new_state())
                apply(plan, subject, record, view)
                if plan.latched:
                    if subject.kind == "user" and subject.account is None:
                        subject.account = self._traits.account_of(tx, subject)
                    t = subject.state.newest or ts
                    ctx = self._traits.context(tx, subject, full=False)
                    plan.latch(subject.state, t, kind, ctx)
        return subjects
