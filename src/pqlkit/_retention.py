"""Retention: deleting events older than a horizon without changing any score.

A subject's state is a fold of its events in arrival order (``_replay``), so the
events up to an arrival seq S can go once each subject's state folded over them is
kept: a *checkpoint* (per model, kind and subject: the stored state format of
``_engine.state``, and the seq S it covers). A rebuild then starts from the
checkpoint and folds the events after S, in the same order as from the whole log,
and ends with the same state: windowed aggregates keep their entries inside the
window in the state, all-time ones their running values, so nothing the model
reads is lost.

What is pruned is the longest run of the log, in arrival order, whose events are
all older than the horizon (``Transaction.prune_cut``): a fold cannot skip an
event and take it later. It goes in chunks of the log; each chunk lists the
subjects it touches, checkpoints them (under their locks, in short transactions
that leave the write lock free in between) and then deletes the events their
checkpoints folded in (an event goes once its user's and its account's
checkpoints hold it). A prune that dies leaves every finished chunk done and the
rest as it was; the next one goes on from there.

Only the models of the client that prunes (and its shadows) get checkpoints: a
client of another model (or of a changed one) on the same store finds events
gone that it has no checkpoints of, and is refused at start (``check``) unless
it accepts a partial rebuild.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from datetime import datetime, timedelta

from . import _dsl as d
from ._convert import micros
from ._engine import Plan
from ._engine.accumulators import ACCS
from ._events import EventRecord, SubjectKind
from ._model import Model
from ._replay import Replay
from ._session import Session, Subject
from .exceptions import ValidationError
from .stores._base import INVALID_STATE, StateRecord, Transaction

__all__ = [
    "SEQ_KEY",
    "Pruned",
    "Pruner",
    "check",
    "checkpoint_key",
    "needs_history",
]

SEQ_KEY = "retention:seq"
"""The metadata key of the newest arrival seq pruned (absent: nothing ever was)."""

HORIZON_KEY = "retention:horizon"
"""The metadata key of the latest horizon pruned at (ISO 8601)."""

_CHUNK = 50_000  # events of the log per chunk (checkpointed, then deleted)
_PAGE = 2_000  # events read per transaction (resolving each new user id)
_SLICE = 0.2  # seconds a checkpoint transaction may take (one subject at least)
_PAUSE = 0.04  # then the write lock is left free this long (SQLite's waiters poll it
# every 50 ms at most: a shorter pause often ends before any of them sees it)
_DELETE = 2_000  # events deleted per transaction


def checkpoint_key(model: str) -> str:
    """The metadata key of the fingerprint ``model``'s checkpoints were written with."""
    return f"model:{model}:checkpoint"


class Pruned:
    """What one prune did (the Client turns it into a ``PruneResult``)."""

    __slots__ = ("bytes", "cut", "events", "subjects")

    def __init__(self) -> None:
        self.cut = 0
        self.events = 0
        self.subjects = 0
        self.bytes = 0


class Pruner:
    """Prunes the log of one client's models (its own and its shadows')."""

    def __init__(
        self,
        session: Session,
        models: Sequence[tuple[Plan, Replay]],
        reader: Callable[[], AbstractContextManager[Transaction]] | None = None,
    ) -> None:
        self._session = session
        self._models = list(models)
        # transactions that read the log without taking the write lock (SQLite: a
        # read-only connection to the same file), if the store has them
        self._reader = reader

    def run(
        self,
        horizon: datetime,
        *,
        dry_run: bool = False,
        progress: Callable[[int, int], None] | None = None,
    ) -> Pruned:
        """Checkpoint and delete the events before ``horizon`` (see the module doc).

        ``progress(done, total)`` is called after each chunk, in events of the log.
        """
        done = Pruned()
        cut, first = self._session.write(functools.partial(_bounds, horizon=horizon))
        done.cut = cut
        if first is None or first > cut:
            return done
        total = cut - first + 1
        lo = first - 1
        while lo < cut:
            chunk = self._read(lo, cut)
            if dry_run:
                done.events += len(chunk.records)
                done.subjects += len(chunk.subjects) * len(self._models)
            else:
                self._chunk(chunk, done)
                self._session.write(functools.partial(self._mark, hi=chunk.hi, horizon=horizon))
            lo = chunk.hi
            if progress is not None:
                progress(min(chunk.hi - first + 1, total), total)
        return done

    def _read(self, after: int, cut: int) -> _Chunk:
        """The next chunk of the log after ``after`` (up to ``cut``), read in pages."""
        chunk = _Chunk(cut)
        while True:
            if self._reader is not None:
                with self._reader() as tx:
                    full = chunk.read(tx, after)
            else:
                if chunk.records:
                    time.sleep(_PAUSE)  # let other writers in
                full = self._session.write(functools.partial(chunk.read, after=after))
            if chunk.records:
                after = chunk.records[-1].seq
            if not full or len(chunk.records) >= _CHUNK:
                break
        if len(chunk.records) >= _CHUNK:
            chunk.hi = chunk.records[-1].seq
        chunk.settle()
        return chunk

    def _chunk(self, chunk: _Chunk, done: Pruned) -> None:
        """Checkpoint the chunk's subjects up to its end, then delete the events that
        went in."""
        folded_users: dict[int, bool] = {}  # seq -> whether it has an account
        folded_accounts: set[int] = set()
        start = 0
        subjects = chunk.subjects
        while start < len(subjects):
            if start:
                time.sleep(_PAUSE)  # let other writers in
            start = self._session.write(
                functools.partial(
                    self._batch,
                    chunk=chunk,
                    start=start,
                    done=done,
                    users=folded_users,
                    accounts=folded_accounts,
                )
            )
        seqs = sorted(
            seq for seq, account in folded_users.items() if not account or seq in folded_accounts
        )
        for i in range(0, len(seqs), _DELETE):
            if i:
                time.sleep(_PAUSE)
            done.events += self._session.write(
                functools.partial(_delete, seqs=seqs[i : i + _DELETE])
            )

    def _batch(
        self,
        tx: Transaction,
        chunk: _Chunk,
        start: int,
        done: Pruned,
        users: dict[int, bool],
        accounts: set[int],
    ) -> int:
        """Checkpoint ``chunk.subjects[start:]`` for up to ``_SLICE`` s; where to go on."""
        deadline = time.monotonic() + _SLICE
        subjects = chunk.subjects
        # Where other writers run concurrently (PostgreSQL), one may commit an event
        # with a seq inside the chunk after the chunk was read: read each subject's
        # events again under its lock. Elsewhere commits go in seq order.
        again = tx.cache_token() is None
        end = start
        got_users: dict[int, bool] = {}
        got_accounts: set[int] = set()
        written = bytes_ = 0
        while end < len(subjects) and (end == start or time.monotonic() < deadline):
            kind, sid = subjects[end]
            end += 1
            tx.lock([f"{kind}:{sid}"])  # in sorted order, as track() takes them
            if kind == "user" and tx.resolve(sid) != sid:
                continue  # aliased meanwhile: its events are its user's now
            events = None if again else chunk.of(tx, kind, sid)
            for i, (plan, replay) in enumerate(self._models):
                folded = _checkpoint(tx, plan, replay, kind, sid, chunk.hi, events)
                if folded is None:
                    continue
                records, size = folded
                if size:
                    written += 1
                    bytes_ += size
                if i == 0:  # every model folds the same events
                    if kind == "user":
                        got_users.update((e.seq, e.account_id is not None) for e in records)
                    else:
                        got_accounts.update(e.seq for e in records)
        # kept only once the transaction commits (a retried one runs again)
        users.update(got_users)
        accounts.update(got_accounts)
        done.subjects += written
        done.bytes += bytes_
        return end

    def _mark(self, tx: Transaction, hi: int, horizon: datetime) -> None:
        """Record that the log is pruned up to ``hi``, with checkpoints of these models."""
        old = tx.get_meta(SEQ_KEY)
        if old is None or int(old) < hi:
            tx.set_meta(SEQ_KEY, str(hi))
        tx.set_meta(HORIZON_KEY, horizon.isoformat())
        for plan, _ in self._models:
            tx.set_meta(checkpoint_key(plan.model.name), plan.model.fingerprint)


class _Chunk:
    """A run of the log to prune: its events (read in pages), up to ``hi``, and the
    subjects they touch (users by their final ids when read), sorted."""

    def __init__(self, cut: int) -> None:
        self.hi = cut
        self.records: list[EventRecord] = []
        self.by_user: dict[str, list[EventRecord]] = {}  # by the user id recorded
        self.by_account: dict[str, list[EventRecord]] = {}
        self.resolved: dict[str, str] = {}
        self.subjects: list[tuple[SubjectKind, str]] = []

    def read(self, tx: Transaction, after: int) -> bool:
        """Read a page of events after ``after`` (up to ``hi``); True if it was full."""
        read = 0
        for record in tx.events(after_seq=after, limit=_PAGE):
            if record.seq > self.hi:
                return False
            read += 1
            self.records.append(record)
            uid = record.user_id
            mine = self.by_user.get(uid)
            if mine is None:
                mine = self.by_user[uid] = []
                self.resolved[uid] = tx.resolve(uid)
            mine.append(record)
            if record.account_id is not None:
                self.by_account.setdefault(record.account_id, []).append(record)
        return read == _PAGE

    def settle(self) -> None:
        """List the subjects (once every page is read)."""
        keys: set[tuple[SubjectKind, str]] = {("user", u) for u in self.resolved.values()}
        keys.update(("account", a) for a in self.by_account)
        self.subjects = sorted(keys)

    def of(self, tx: Transaction, kind: SubjectKind, sid: str) -> list[EventRecord]:
        """The subject's events in the chunk (a user's: of every id that resolves to it
        now), in arrival order."""
        if kind == "account":
            return self.by_account.get(sid, [])
        ids = [sid, *tx.aliases_of(sid)]
        lists = [self.by_user[i] for i in ids if i in self.by_user]
        if len(lists) == 1:
            return lists[0]
        return sorted((e for mine in lists for e in mine), key=_seq)


def _seq(record: EventRecord) -> int:
    return record.seq


def _delete(tx: Transaction, seqs: list[int]) -> int:
    return tx.delete_events(seqs)


def _bounds(tx: Transaction, horizon: datetime) -> tuple[int, int | None]:
    """(the newest seq to prune, the oldest seq stored: None for an empty log)."""
    oldest = next(iter(tx.events(limit=1)), None)
    return tx.prune_cut(horizon), None if oldest is None else oldest.seq


def _checkpoint(
    tx: Transaction,
    plan: Plan,
    replay: Replay,
    kind: SubjectKind,
    sid: str,
    hi: int,
    chunk: list[EventRecord] | None,
) -> tuple[list[EventRecord], int] | None:
    """Fold the subject's events up to ``hi`` into its checkpoint under ``plan``'s model
    and store it; (the events its checkpoint now holds of those, the checkpoint's
    size: 0 if it held them already), None if it has none.

    ``chunk``: the subject's events after the previous chunk (read already); None to
    read them from the store.
    """
    name = plan.model.name
    found = replay.checkpoint(tx, kind, sid)
    subject, after = (Subject(kind, sid, plan.new_state()), 0) if found is None else found
    if chunk is None:
        if kind == "user":
            events = tx.events(user_ids=[sid, *tx.aliases_of(sid)], after_seq=0)
        else:
            events = tx.events(account_id=sid, after_seq=0)
        chunk = []
        for record in events:
            if record.seq > hi:
                break
            chunk.append(record)
    if after >= hi:  # held already (a prune that died before deleting them)
        return chunk, 0
    taken = [e for e in chunk if e.seq > after]
    held = [e for e in chunk if e.seq <= after]
    if not taken:
        return (held, 0) if held else None
    key = (kind, sid)
    replay.events(tx, taken, {key}, {key: subject})
    s = subject.state
    s.qualification = None  # a rebuild reads them from the store again
    s.plays = {}
    text = s.dump()
    accounts: set[str] = set()
    if kind == "user":
        old = tx.checkpoint_accounts([sid])
        accounts = old | {e.account_id for e in taken if e.account_id is not None}
    tx.save_checkpoint(name, kind, sid, text, hi, sorted(accounts))
    _stale(tx, plan, kind, sid, taken[-1].seq)
    return chunk, len(text)


def _stale(tx: Transaction, plan: Plan, kind: SubjectKind, sid: str, newest: int) -> None:
    """Mark the subject's stored state to be rebuilt (from its checkpoint) if it is
    behind ``newest``: a warm writer put off its save, and would catch up from a
    tail of the log that is about to be deleted."""
    name = plan.model.name
    record = tx.load_state(name, kind, sid)
    if record is None or record.state == INVALID_STATE:
        return
    state = plan.load(record.state)
    if state is not None and state.seq < newest:
        tx.save_state(StateRecord(name, kind, sid, INVALID_STATE, record.due_at))


# -- refusing a model that needs pruned events --------------------------------------------


def needs_history(model: Model, kept: timedelta | None) -> list[str]:
    """What of ``model`` reads events older than ``kept`` (None: any pruned event),
    one line per signal, score, rule or play and aggregate."""
    named: list[tuple[str, d.Expr | None]] = [
        *((f"signal {n!r}", x) for n, x in model.signals.items()),
        *((f"score {n!r}", x) for n, x in model.scores.items()),
        ("the PQL rule", model.pql),
        ("the PQA rule", model.pqa),
        *((f"play {n!r}", p.condition) for n, p in model.plays.items()),
    ]
    lines: list[str] = []
    for label, expr in named:
        if expr is None:
            continue
        for node in d.walk(expr):
            if type(node) not in ACCS:
                continue
            within = getattr(node, "within", None)
            if within is None:
                lines.append(f"{label} reads {type(node).__name__} over all history")
            elif kept is None or micros(within) > micros(kept):
                lines.append(f"{label} reads {type(node).__name__} over the last {within}")
    return lines


def check(tx: Transaction, model: Model, now: datetime, *, accept: bool) -> bool:
    """Refuse ``model`` if the log was pruned and it has no checkpoints of what was.

    A model whose checkpoints were written by its own version (its fingerprint) is
    fine; any other (a changed model, a new one, one whose store another model's
    client pruned) would rebuild its states from the events kept only. It may when
    nothing it reads goes back past the horizon (windows shorter than the events
    kept, traits), or with ``accept``; from then on it is the model checkpointed.
    Returns True when such a partial rebuild is needed.

    Raises:
        ValidationError: The model needs pruned events, naming
            ``accept_partial_rebuild`` and saying which of its signals read what.
    """
    pruned = tx.get_meta(SEQ_KEY)
    if pruned is None or int(pruned) <= 0:
        return False
    if tx.get_meta(checkpoint_key(model.name)) == model.fingerprint:
        return False
    text = tx.get_meta(HORIZON_KEY)
    horizon = datetime.fromisoformat(text) if text else None
    kept = None if horizon is None else now - horizon
    lines = needs_history(model, kept)
    if accept or not lines:  # (a model that reads nothing older loses nothing it reads)
        tx.set_meta(checkpoint_key(model.name), model.fingerprint)
        return True
    since = f"before {horizon.isoformat()}" if horizon is not None else "of the past"
    what = "; ".join(lines)
    raise ValidationError(
        "accept_partial_rebuild",
        f"events {since} were pruned, and model {model.name!r} (version"
        f" {model.fingerprint[:12]}) has no checkpoints of them: {what}. Rebuilding from the"
        " events kept would change those values: pass accept_partial_rebuild=True to accept"
        " that, or use the model version the store was pruned with",
    )
