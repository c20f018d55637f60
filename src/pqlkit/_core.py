"""The Client's operations: checking what callers pass, locking, loading and saving
subjects' states as events are recorded, and reading them; the nudge inbox.

``Client`` (``_client.py``) checks nothing itself and hands every call to a
``Core``. The methods it calls take ``object`` for what a caller passes and
check it here (a compiled build's functions would otherwise raise ``TypeError``
on a wrong type before pqlkit's checks could name the field). The Core composes
the rest: transactions and the warm cache (``_session``), the engine
(``_engine``), traits (``_traits``), ranked scores (``_ranking``), firing and payloads
(``_firing``), replaying the log (``_replay``), rebuilds (``_rebuild``) and delivery
(``_dispatch``). The modules the mypyc build compiles are listed in pyproject.toml (see
docs/performance.md).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import TypeVar

import attrs

from . import _process
from ._clock import Clock
from ._convert import to_us
from ._dispatch import Delivery, Dispatcher, callback_name
from ._engine import Evaluation, EventView, Plan, explain
from ._events import (
    BulkResult,
    Event,
    EventRecord,
    Kind,
    Nudge,
    PruneResult,
    Qualification,
    Stats,
    SubjectKind,
    TrackResult,
)
from ._firing import Firing, of_account, personal_values, redact
from ._model import Model, held_out, play_kind
from ._observe import Observer
from ._ranking import Ranking
from ._rebuild import Rebuild
from ._replay import Replay, apply
from ._retention import Pruner, check
from ._session import Due, Outcome, Session, Subject, Warm
from ._settings import Settings
from ._suppression import Suppressions
from ._traits import ACCOUNT_TRAIT, Traits
from ._validation import (
    check_event,
    check_id,
    check_message_id,
    check_not_future,
    check_payload,
    check_properties,
    check_timestamp,
    check_until,
)
from .exceptions import ClientClosedError, StoreError, TransientStoreError, ValidationError
from .stores._base import (
    ABSENT,
    DeliveryStatus,
    NewEvent,
    NudgeAction,
    NudgeRecord,
    QualificationRecord,
    StaleCache,
    Store,
    Transaction,
)

__all__ = ["Core"]

T = TypeVar("T")

logger = logging.getLogger("pqlkit")

_BATCH = 500
_SUPPRESSED = Outcome()  # what a write returns for a call it dropped (a suppressed id)
_HINTS = 10_000  # aliased ids whose final id a Client remembers, to lock both at once


_MAX_TOP = 10_000  # the most subjects top() lists

_ACTIONS: dict[str, NudgeAction] = {"seen": "seen", "clicked": "clicked", "dismissed": "dismissed"}

_TAIL_EVENTS = 64  # a warm subject is written back at least every this many events...
_TAIL_BYTES = 2_048  # ...or every (its stored size / this) events, if that is more


class Core:
    """What a Client does (see the module docstring); its public methods are the Client's."""

    def __init__(
        self,
        model: Model,
        store: Store,
        *,
        owns_store: bool,
        clock: Clock,
        settings: Settings,
        shadows: object = (),
        leader: Core | None = None,
    ) -> None:
        try:
            candidates = _check_shadows(model, shadows)
        except ValidationError:
            if owns_store:
                store.close()
            raise
        self.model = model
        self._user_plays = frozenset(n for n, p in model.plays.items() if p.of == "user")
        # A shadow (built by its leader, the main model's Core, with ``leader``) records
        # its qualifications in the leader's transactions and delivers nothing
        self._shadow = leader is not None
        self._plan = Plan(model)
        self._limits = settings.limits
        self.clock = clock
        self._owns_store = owns_store
        self.store = store
        self.closed = False
        self._session: Session = Session(
            store,
            Warm(settings.warm_subjects, settings.warm_bytes),
            None if leader is None else leader._session,
        )
        self._warm = self._session.warm
        self._suppressions = Suppressions()
        # id -> the final id it was last seen to resolve to: only a guess of which
        # locks to take together (see _lock_user), checked under them
        self._hints: dict[str, str] = {}
        self._dispatcher = Dispatcher(
            store,
            clock,
            mode=settings.dispatch,
            policy=settings.retry_policy,
            lease=settings.delivery_lease,
            transaction=self._session.tx,
            model=model.name,
            budget=settings.inline_budget,
            window=settings.delivery_window,
            retention=settings.delivery_retention,
        )
        self._traits = Traits(self._session, self._plan)
        self._replay = Replay(self._plan, self._traits)
        self._ranking = Ranking(model, self._plan) if model.ranked else None
        self._firing = Firing(
            model,
            self._plan,
            clock,
            self._dispatcher,
            self._traits,
            settings.context_events,
            ranking=self._ranking,
            deliver=leader is None,
        )
        self._rebuild = Rebuild(self._session, model, self._replay, self._traits, self._firing)
        self._retention = settings.retention
        self._delivery_window = settings.delivery_window
        try:  # a model that needs pruned events it has no checkpoints of is refused
            with self._session.tx() as tx:  # (a read, but when it accepts a partial rebuild)
                partial = check(tx, model, clock.now(), accept=settings.accept_partial_rebuild)
        except ValidationError:
            if owns_store:
                store.close()
            raise
        if partial:
            logger.warning(
                "pqlkit: model %r rebuilds from the events kept (accept_partial_rebuild):"
                " what it reads of pruned events starts at the pruned horizon",
                model.name,
            )
        self._rebuild.ensure(deliver=leader is None and model.on_retune == "fire")
        # the candidates shadowing this model: each a Core of its own on the same store,
        # its states built from the log now if it has none (recording, delivering nothing)
        self._shadows: tuple[Core, ...] = tuple(
            Core(m, store, owns_store=False, clock=clock, settings=settings, leader=self)
            for m in candidates
        )

    def close(self, timeout: float | None = 10.0) -> None:
        if self.closed:
            return
        try:
            self._write_back()
            for shadow in self._shadows:
                shadow._write_back()
        finally:
            self.closed = True
            try:
                self._dispatcher.close(timeout)
            except Exception:  # nothing is lost: what was due stays pending
                logger.exception("pqlkit: delivering at close() failed; it stays pending")
            if self._owns_store:
                self.store.close()

    def _write_back(self) -> None:
        """Store the warm subjects' states that are behind their events (a faster cold start).

        Best effort: if the store cannot take it (closed already, say), nothing is lost:
        the events are in the log, and whoever loads those subjects folds them in.
        """
        if not self._warm.subjects:
            return

        def work(tx: Transaction) -> None:
            for subject in list(self._warm.subjects.values()):  # empty if the cache went cold
                if subject.stored_events != subject.state.events:
                    self._save(tx, subject)

        try:
            self._session.write(work)
        except StoreError as error:
            logger.debug("pqlkit: warm states not written back at close(): %s", error)

    def _clear_warm(self) -> None:
        """Empty the warm caches: this model's and its shadows'."""
        self._warm.clear()
        for shadow in self._shadows:
            shadow._warm.clear()

    @property
    def shadows(self) -> tuple[Model, ...]:
        return tuple(shadow.model for shadow in self._shadows)

    def _check_open(self) -> None:
        if self.closed:
            raise ClientClosedError("this Client is closed")

    # -- callbacks -----------------------------------------------------------------
    def on(self, kind: object, fn: object, name: object = None) -> None:
        if kind != "pql" and kind != "pqa" and kind != "disqualified":
            raise ValidationError("kind", f'must be "pql", "pqa" or "disqualified", got {kind!r}')
        if not callable(fn):
            raise ValidationError("fn", "must be callable")
        self._dispatcher.register(kind, fn, callback_name(fn, name))

    def on_play(self, play: object, fn: object, name: object = None) -> None:
        self._check_play(play)
        assert isinstance(play, str)
        if not callable(fn):
            raise ValidationError("fn", "must be callable")
        self._dispatcher.register(play_kind(play), fn, callback_name(fn, name))

    def _check_play(self, play: object) -> None:
        """ValidationError naming ``play`` unless it names one of the model's plays."""
        if not isinstance(play, str) or play not in self.model.plays:
            known = ", ".join(repr(n) for n in self.model.plays) or "none"
            raise ValidationError("play", f"unknown play {play!r} (the model's plays: {known})")

    def add_observer(self, observer: Observer) -> None:
        self._dispatcher.add_observer(observer)

    # -- recording -------------------------------------------------------------------
    def track(
        self,
        user_id: object,
        event: object,
        properties: object,
        account_id: object,
        timestamp: object,
        message_id: object,
        connection: object,
    ) -> TrackResult:
        self._check_open()
        new = self._validate_event(user_id, event, properties, account_id, timestamp, message_id)

        def work(tx: Transaction) -> Outcome | None:
            if self._suppressed(tx, (new.user_id,)):
                return _SUPPRESSED
            return self._record(tx, new, {})

        outcome = self._session.write(work, connection)
        if outcome is _SUPPRESSED:
            return TrackResult(suppressed=True)
        self._after_write(_fired([] if outcome is None else [outcome]), connection)
        if outcome is None:
            return TrackResult(scores=self.scores(new.user_id, "user"), duplicate=True)
        return TrackResult(outcome.qualified, outcome.scores, False, outcome.disqualified)

    def track_many(self, events: object, connection: object) -> BulkResult:
        self._check_open()
        if connection is not None:  # a store that cannot join refuses now, even with no events
            self.store.joined(connection)
        stored = duplicates = 0
        qualified: list[Qualification] = []
        batch: list[NewEvent] = []
        queued: list[Qualification] = []

        def work(tx: Transaction) -> tuple[int, int, list[Qualification], list[Qualification]]:
            cache: dict[tuple[str, str], Subject] = {}
            shadowed: list[dict[tuple[str, str], Subject]] = [{} for _ in self._shadows]
            done = dupes = 0
            fired: list[Qualification] = []
            outcomes: list[Outcome] = []
            # the batch's locks at once, in order (each _record adds only an id's final id)
            held: set[str] = set()
            keys: list[str] = []
            for new in batch:
                keys.append(f"user:{new.user_id}")
                hint = self._hints.get(new.user_id)
                if hint is not None:
                    keys.append(f"user:{hint}")
                if new.account_id is not None:
                    keys.append(f"account:{new.account_id}")
            self._lock(tx, held, keys)
            for new in batch:
                if self._suppressed(tx, (new.user_id,)):
                    continue
                outcome = self._record(tx, new, cache, save=False, held=held, shadowed=shadowed)
                if outcome is None:
                    dupes += 1
                    continue
                done += 1
                fired.extend(outcome.qualified)
                outcomes.append(outcome)
            for subject in cache.values():
                self._save(tx, subject, defer=True)
            for shadow, shadow_cache in zip(self._shadows, shadowed, strict=True):
                for subject in shadow_cache.values():
                    shadow._save(tx, subject, defer=True)
            return done, dupes, fired, _fired(outcomes)

        def write() -> None:
            nonlocal stored, duplicates
            done, dupes, fired, enqueued = self._session.write(work, connection)
            stored += done
            duplicates += dupes
            qualified.extend(fired)
            queued.extend(enqueued)
            batch.clear()

        if not isinstance(events, Iterable):
            raise ValidationError("events", "must be an iterable of events")
        for index, item in enumerate(events):
            try:
                batch.append(self._validate_item(item))
            except ValidationError as e:
                raise ValidationError(f"events[{index}].{e.field}", e.reason) from None
            if len(batch) >= _BATCH:
                write()
        if batch:
            write()
        self._after_write(queued, connection)
        return BulkResult(stored, duplicates, qualified)

    def identify(self, user_id: object, traits: object, account_id: object) -> None:
        self._check_open()
        user = check_id(user_id, "user_id", self._limits)
        data = check_properties(traits, "traits", self._limits)
        if ACCOUNT_TRAIT in data:
            raise ValidationError(
                f"traits.{ACCOUNT_TRAIT}", "is reserved: pass account_id=... instead"
            )
        account = (
            check_id(account_id, "account_id", self._limits) if account_id is not None else None
        )

        def work(tx: Transaction) -> Outcome:
            if self._suppressed(tx, (user,)):
                return Outcome()
            uid = self._lock_user(tx, set(), user, None)
            merged = {**self._traits.get(tx, "user", uid), **data}
            if account is not None:
                merged[ACCOUNT_TRAIT] = account
            self._traits.set(tx, "user", uid, merged)
            out = Outcome()
            subject = self._load(tx, "user", uid)
            subject.account = self._traits.account_of(tx, subject)  # a warm one may predate it
            self._reevaluate(tx, [subject], out)
            for shadow in self._shadows:
                shadowed = shadow._load(tx, "user", uid)
                shadowed.account = shadow._traits.account_of(tx, shadowed)
                shadow._reevaluate(tx, [shadowed], Outcome())
            return out

        out = self._session.write(work)
        self._dispatcher.fired(_fired([out]))

    def group(self, account_id: object, traits: object) -> None:
        self._check_open()
        account = check_id(account_id, "account_id", self._limits)
        data = check_properties(traits, "traits", self._limits)

        def work(tx: Transaction) -> Outcome:
            out = Outcome()
            held: set[str] = set()
            # the account's users are rewritten too: once the account is locked,
            # no event can join it, so lock them (and what they resolve to) next
            self._lock(tx, held, [f"account:{account}"])
            resolved = self._lock_users(tx, held, sorted(tx.users_of(account)))
            merged = {**self._traits.get(tx, "account", account), **data}
            self._traits.set(tx, "account", account, merged)
            users = sorted(set(resolved.values()))
            for core in (self, *self._shadows):
                subjects = [core._load(tx, "account", account)]
                for uid in users:
                    user = core._load(tx, "user", uid)
                    if user.account == account:
                        subjects.append(user)
                core._reevaluate(tx, subjects, out if core is self else Outcome())
            return out

        out = self._session.write(work)
        self._dispatcher.fired(_fired([out]))

    def _reevaluate(self, tx: Transaction, subjects: list[Subject], out: Outcome) -> None:
        """Evaluate each subject that has events as of its newest one (its traits changed)."""
        for subject in subjects:
            if subject.state.newest is not None:
                found = self._firing.evaluate(tx, subject, subject.state.newest, out)
                self._save(tx, subject, found)

    def alias(self, previous_id: object, user_id: object) -> None:
        self._check_open()
        previous = check_id(previous_id, "previous_id", self._limits)
        user = check_id(user_id, "user_id", self._limits)

        def work(tx: Transaction) -> Outcome | None:
            if self._suppressed(tx, (previous, user)):
                return None
            out = Outcome()
            self._clear_warm()  # the rebuild below replaces states; nothing warm survives it
            held: set[str] = set()
            while True:  # read what it rewrites, lock it all, and read again until unchanged
                target = tx.resolve(user)
                old = tx.resolve(previous)  # previous's final id until now (itself if none)
                moved = [previous, *tx.aliases_of(previous), target, *tx.aliases_of(target)]
                accounts = sorted(tx.accounts_of(moved))
                keys = {f"user:{i}" for i in (user, target, previous, old)}
                keys.update(f"account:{a}" for a in accounts)
                if keys <= held:
                    break
                self._lock(tx, held, keys)
            if target == previous:
                raise ValidationError("user_id", f"{user!r} is already an alias of {previous!r}")
            if old == target:
                return None
            if _checkpointed(tx, [previous, old]):
                raise ValidationError(
                    "previous_id",
                    f"{previous!r} has events that were pruned (its state before the"
                    " retention horizon is a checkpoint, which cannot be merged into another"
                    " user's): alias ids before their events get that old",
                )
            tx.set_alias(previous, target)
            # previous's events leave `old` (if it was an alias) and join target
            users: list[tuple[SubjectKind, str]] = [("user", target)]
            if old != previous:
                users.append(("user", old))
            for core in (self, *self._shadows):
                tx.delete_state(core.model.name, "user", previous)
                done = out if core is self else Outcome()
                core._rebuild.subjects(tx, users, done)
                core._rebuild.subjects(tx, [("account", a) for a in accounts], done)
            return out

        out = self._session.write(work)
        if out is not None:
            self._dispatcher.fired(_fired([out]))

    def _suppressed(self, tx: Transaction, ids: tuple[str, ...]) -> bool:
        """True if a call for these ids is dropped (a suppressed id: see _suppression)."""
        warm = self._warm
        cached = warm.active and warm.streak > 0
        if cached and self._suppressions.empty:  # the hot path: nothing to read
            return False
        return self._suppressions.dropped(tx, ids, cached=cached)

    def forget_preview(self, user_id: object) -> dict[str, int]:
        self._check_open()
        user = check_id(user_id, "user_id", self._limits)
        with self._session.tx() as tx:
            uid = tx.resolve(user)
            ids = sorted({uid, user, *tx.aliases_of(uid)})
            accounts = tx.accounts_of(ids)
            counts = tx.user_rows(ids)
            payloads = {
                d.id
                for status in ("pending", "delivered", "dead", "expired")
                for d in tx.deliveries(status)
                if of_account(d.qualification) and d.qualification.subject_id in accounts
            }
        counts["account payloads to redact"] = len(payloads)
        counts["accounts to rebuild"] = len(accounts)
        return counts

    def unsuppress(self, user_id: object) -> bool:
        self._check_open()
        user = check_id(user_id, "user_id", self._limits)
        return self._session.write(lambda tx: self._suppressions.unsuppress(tx, user))

    def forget(self, user_id: object, *, suppress: bool = False, vacuum: bool = False) -> None:
        self._check_open()
        user = check_id(user_id, "user_id", self._limits)
        now = self.clock.now()

        def work(tx: Transaction) -> Outcome:
            out = Outcome()
            self._clear_warm()  # states and traits are deleted or rebuilt below
            held: set[str] = set()
            while True:  # read what it rewrites, lock it all, and read again until unchanged
                uid = tx.resolve(user)
                ids = sorted({uid, user, *tx.aliases_of(uid)})
                pruned = _checkpoint_accounts(tx, ids)  # accounts of their pruned events
                accounts = sorted(tx.accounts_of(ids) | pruned)
                keys = {f"user:{i}" for i in ids} | {f"account:{a}" for a in accounts}
                if keys <= held:
                    break
                self._lock(tx, held, keys)
            values = personal_values(tx, ids)  # what payloads may quote: read before deleting
            tx.forget_users(ids)  # (every model's states of the users go with them)
            if pruned or _checkpointed(tx, ids):
                # their checkpoints, and their accounts' (which fold their pruned events:
                # those accounts start again from the events kept), under every model
                tx.delete_checkpoints("user", ids)
                tx.delete_checkpoints("account", sorted(pruned))
            for i in ids:
                tx.delete_qualifications(i, "pql")  # every model's, the shadows' too
                for play in self._user_plays:
                    tx.delete_qualifications(i, play_kind(play))
                if self._user_plays:  # their deliveries (whose payloads say kind "play")
                    tx.delete_qualifications(i, "play")
            for a in accounts:  # other models' states of the accounts hold the users' values
                tx.invalidate_states("account", a, keep=self.model.name)
            redact(tx, set(accounts), set(ids), values)
            if suppress:
                self._suppressions.suppress(tx, ids, now)
            for core in (self, *self._shadows):  # each rebuilds the accounts it invalidated
                done = out if core is self else Outcome()
                core._rebuild.subjects(tx, [("account", a) for a in accounts], done)
            return out

        out = self._session.write(work)
        scrub = getattr(self.store, "scrub", None)  # (a store written before it has none)
        if scrub is not None:
            scrub(vacuum=vacuum)
        self._dispatcher.fired(_fired([out]))

    # -- nudges ------------------------------------------------------------------------
    def nudge(self, user_id: object, key: object, payload: object, until: object) -> bool:
        self._check_open()
        user = check_id(user_id, "user_id", self._limits)
        name = check_id(key, "key", self._limits)
        data = check_payload(payload, self._limits)
        now = check_timestamp(self.clock.now(), "clock")
        end = check_until(until, now)

        def work(tx: Transaction) -> bool:
            uid = self._lock_user(tx, set(), user, None)
            record = NudgeRecord(uid, name, data, now, end, model=self.model.name)
            return tx.open_nudge(record, now)

        return self._session.write(work)

    def nudges(self, user_id: object) -> list[Nudge]:
        self._check_open()
        user = check_id(user_id, "user_id", self._limits)
        now = self.clock.now()
        with self._session.tx() as tx:
            uid = self._resolve(tx, user)
            records = tx.nudges(uid, now)
            # a nudge a play of this model opened is shown while the play holds for the user
            name = self.model.name
            if any(r.play in self._user_plays and r.model == name for r in records):
                subject = self._load(tx, "user", uid)
                t = self._read_time(subject)
                ctx = self._traits.context(tx, subject)
                holds = self._plan.evaluate(subject.state, t, "user", ctx, full=False).plays
                records = [
                    r
                    for r in records
                    if r.model != name or r.play not in self._user_plays or holds.get(r.play)
                ]
        return [record.public() for record in records]

    def mark(self, user_id: object, key: object, action: object) -> bool:
        self._check_open()
        user = check_id(user_id, "user_id", self._limits)
        name = check_id(key, "key", self._limits)
        done = _ACTIONS.get(action) if isinstance(action, str) else None
        if done is None:
            raise ValidationError(
                "action", f'must be "seen", "clicked" or "dismissed", got {action!r}'
            )
        now = check_timestamp(self.clock.now(), "clock")
        # the mark is an event like any other, recorded in the same transaction
        new = NewEvent(_process.new_message_id(), user, f"nudge_{done}", {"key": name}, None, now)

        def work(tx: Transaction) -> tuple[bool | None, Outcome | None]:
            held: set[str] = set()
            uid = self._lock_user(tx, held, user, None)
            changed = tx.mark_nudge(uid, name, done, now)
            if not changed:
                return changed, None
            return True, self._record(tx, new, {}, held=held)

        changed, outcome = self._session.write(work)
        if changed is None:
            raise ValidationError("key", f"user {user!r} has no nudge {name!r}")
        if outcome is not None:
            self._after_write(_fired([outcome]), None)
        return changed

    # -- reading -----------------------------------------------------------------------
    def scores(self, subject_id: object, of: object) -> dict[str, float]:
        return self._read(subject_id, of).scores

    def signals(self, subject_id: object, of: object) -> dict[str, bool]:
        return self._read(subject_id, of).signals

    def explain(self, subject_id: object, of: object) -> list[str]:
        self._check_open()
        kind = self._check_of(of)
        with self._session.tx() as tx:
            subject = self._load(tx, kind, self._subject_key(tx, kind, subject_id))
            t = self._read_time(subject)
            return explain(self._plan, subject.state, t, kind, self._traits.context(tx, subject))

    def qualified_at(
        self, subject_id: object, kind: object, play: object = None
    ) -> datetime | None:
        self._check_open()
        of: SubjectKind
        if play is not None:
            self._check_play(play)
            assert isinstance(play, str)
            of, stored = self.model.plays[play].of, play_kind(play)
        elif kind != "pql" and kind != "pqa":
            raise ValidationError("kind", f'must be "pql" or "pqa", got {kind!r}')
        else:
            of, stored = ("user" if kind == "pql" else "account"), kind
        with self._session.tx() as tx:
            sid = self._subject_key(tx, of, subject_id)
            record = tx.latest_qualification(self.model.name, stored, sid)
        return record.qualified_at if record is not None else None

    def top(self, score: object, n: object, of: object) -> list[tuple[str, float]]:
        self._check_open()
        kind = self._check_of(of)
        ranking = self._ranking
        if not isinstance(score, str) or score not in self.model.scores:
            known = ", ".join(repr(name) for name in self.model.scores) or "none"
            raise ValidationError("score", f"unknown score {score!r} (the scores: {known})")
        if ranking is None or score not in ranking.names:
            raise ValidationError(
                "score",
                f"{score!r} is not ranked: declare Model(..., ranked=[{score!r}]) to keep an"
                " index of its values (top() reads it instead of every subject's state)",
            )
        if isinstance(n, bool) or not isinstance(n, int) or not 0 < n <= _MAX_TOP:
            raise ValidationError("n", f"must be an int from 1 to {_MAX_TOP}, got {n!r}")
        self._refresh_ranks(self.clock.now(), [(kind, score)])
        with self._session.tx() as tx:
            return tx.top_ranks(self.model.name, kind, score, n)

    def _refresh_ranks(self, now: datetime, scores: Sequence[tuple[SubjectKind, str]]) -> None:
        """Re-evaluate as of ``now`` the subjects whose value of these ranked scores time
        alone may have changed (``stale_ranks``), storing what they are now."""
        for kind, score in scores:
            done: set[str] = set()
            while True:
                work = functools.partial(
                    self._refresh_batch, kind=kind, score=score, now=now, done=done
                )
                fresh = self._session.write(work)
                if not fresh:
                    break
                done.update(fresh)  # committed; re-evaluated as of now, not stale again

    def _refresh_batch(
        self, tx: Transaction, *, kind: SubjectKind, score: str, now: datetime, done: set[str]
    ) -> list[str]:
        """One batch of ``_refresh_ranks``: the subjects it re-evaluated while more may be
        left, [] once none is (those in ``done`` are not evaluated again)."""
        ranking = self._ranking
        assert ranking is not None
        stale = tx.stale_ranks(self.model.name, kind, score, now, _BATCH)
        fresh = [sid for sid in stale if sid not in done]
        self._lock(tx, set(), [f"{kind}:{sid}" for sid in fresh])
        t = to_us(now)
        for sid in fresh:
            subject = self._load(tx, kind, sid)
            newest = subject.state.newest
            at = t if newest is None else max(t, newest)
            ctx = self._traits.context(tx, subject, full=False)
            ev = self._plan.evaluate(subject.state, at, kind, ctx, full=False, ranked=True)
            ranking.record(tx, subject, ev)
        return fresh if len(stale) == _BATCH else []

    def _read(self, subject_id: object, of: object) -> Evaluation:
        self._check_open()
        kind = self._check_of(of)
        with self._session.tx() as tx:
            subject = self._load(tx, kind, self._subject_key(tx, kind, subject_id))
            t = self._read_time(subject)
            return self._plan.evaluate(subject.state, t, kind, self._traits.context(tx, subject))

    def _read_time(self, subject: Subject) -> int:
        now = to_us(self.clock.now())
        newest = subject.state.newest
        return now if newest is None else max(now, newest)

    def _check_of(self, of: object) -> SubjectKind:
        if of not in ("user", "account"):
            raise ValidationError("of", f'must be "user" or "account", got {of!r}')
        return "user" if of == "user" else "account"

    def _subject_key(self, tx: Transaction, kind: SubjectKind, subject_id: object) -> str:
        sid = check_id(subject_id, "subject_id", self._limits)
        return tx.resolve(sid) if kind == "user" else sid

    # -- outbox ------------------------------------------------------------------------
    def flush(self, timeout: object = None) -> int:
        self._check_open()
        if timeout is not None and (
            isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout < 0
        ):
            raise ValidationError("timeout", "must be a number of seconds >= 0, or None")
        return self._dispatcher.flush(None if timeout is None else float(timeout))

    def pending(self) -> list[Qualification]:
        return self._qualifications("pending")

    def dead_letters(self) -> list[Qualification]:
        return self._qualifications("dead")

    def _qualifications(self, status: DeliveryStatus) -> list[Qualification]:
        """The qualifications with a record of ``status``, each once, oldest first."""
        self._check_open()
        with self._session.tx() as tx:
            records = tx.deliveries(status, model=self.model.name)
        found: dict[str, Qualification] = {}
        for record in records:
            found.setdefault(record.id, record.qualification)
        return list(found.values())

    def qualifications(
        self,
        kind: object,
        play: object,
        since: object,
        before: object,
        limit: object,
        model: object = None,
    ) -> list[Qualification]:
        """The model's qualifications, newest first (see ``Client.qualifications``)."""
        self._check_open()
        name = self._model_name(model)
        if kind is not None and kind not in _LIST_KINDS:
            raise ValidationError("kind", f'must be "pql", "pqa", "play" or None, got {kind!r}')
        if play is not None and (not isinstance(play, str) or not play.strip()):
            raise ValidationError("play", f"must be a play's name or None, got {play!r}")
        if play is not None and kind not in (None, "play"):
            raise ValidationError("play", f'names a play: it goes with kind="play", not {kind!r}')
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValidationError("limit", f"must be an int >= 1, got {limit!r}")
        start: datetime | None = None
        if isinstance(since, timedelta):
            if since < timedelta(0):
                raise ValidationError("since", f"must not be a negative duration, got {since!r}")
            start = self.clock.now() - since
        elif since is not None:
            start = check_timestamp(since, "since")
        cursor: tuple[datetime, str] | None = None
        if isinstance(before, Qualification):
            cursor = (check_timestamp(before.qualified_at, "before"), before.id)
        elif before is not None and not isinstance(before, str):
            raise ValidationError(
                "before",
                f"must be a Qualification, a qualification's id or None, got {before!r}",
            )
        if play is not None:
            self._check_play(play)
            kinds: Sequence[str] = [play_kind(str(play))]
        else:
            plays = [play_kind(n) for n in self.model.plays]
            if kind is None:
                kinds = ["pql", "pqa", *plays]
            else:
                kinds = plays if kind == "play" else [str(kind)]
        with self._session.tx() as tx:
            if isinstance(before, str):
                found = tx.find_qualification(before)
                if found is None or found.model != name:
                    raise ValidationError(
                        "before", f"no qualification of this model has the id {before!r}"
                    )
                cursor = (found.qualified_at, found.id)
            page = tx.recent_qualifications(
                name, kinds=kinds, since=start, before=cursor, limit=limit
            )
        return [_listed(self.model, record, payload) for record, payload in page]

    def deliveries(self, status: object, callback: object) -> list[Delivery]:
        self._check_open()
        statuses: tuple[DeliveryStatus, ...] = ("pending", "dead", "delivered", "expired")
        if status is not None:
            if status not in statuses:
                raise ValidationError(
                    "status",
                    f'must be "pending", "delivered", "dead", "expired" or None, got {status!r}',
                )
            statuses = (status,)
        if callback is not None and not isinstance(callback, str):
            raise ValidationError("callback", f"must be a str or None, got {callback!r}")
        with self._session.tx() as tx:
            return [
                Delivery.of(record)
                for s in statuses
                for record in tx.deliveries(s, model=self.model.name, callback=callback)
            ]

    def retry_dead_letters(self, callback: object = None) -> int:
        self._check_open()
        if callback is not None and not isinstance(callback, str):
            raise ValidationError("callback", f"must be a str or None, got {callback!r}")
        now = self.clock.now()
        since = now - self._dispatcher.window
        count = self._session.write(
            lambda tx: tx.revive_dead(
                now, model=self.model.name, callback=callback, known_since=since
            )
        )
        if count:
            self._dispatcher.revived()
        return count

    # -- time and model changes ------------------------------------------------------------
    def sweep(self, now: object) -> list[Qualification]:
        self._check_open()
        when = check_timestamp(now, "now") if now is not None else self.clock.now()
        out = self._sweep(when)
        for shadow in self._shadows:  # recorded, nothing delivered
            shadow._sweep(when)
        fired = out.qualified + out.disqualified
        self._dispatcher.swept(fired)
        return fired

    def _sweep(self, when: datetime) -> Outcome:
        """Evaluate the subjects due at ``when`` (and refresh the ranked scores); return
        what that fired."""
        t = to_us(when)
        out = Outcome()

        swept: set[tuple[str, str]] = set()

        def work(tx: Transaction) -> tuple[int, Outcome]:
            batch = Outcome()
            due = tx.due_subjects(self.model.name, when, _BATCH)
            if due and swept.issuperset(due):
                # Each subject's stored due time is after `when` once swept: finding
                # only swept ones again means it is not, and looping would never end.
                logger.warning("pqlkit: sweep() found %d swept subjects due again", len(due))
                return 0, batch
            swept.update(due)
            self._lock(tx, set(), [f"{kind}:{sid}" for kind, sid in due])
            for kind, sid in due:
                subject = self._load(tx, kind, sid)
                newest = subject.state.newest
                found = self._firing.evaluate(tx, subject, max(t, newest or t), batch, latch=False)
                self._save(tx, subject, found, at=t)
            return len(due), batch

        while True:
            count, batch = self._session.write(work)
            out.qualified += batch.qualified
            out.disqualified += batch.disqualified
            out.enqueued = out.enqueued or batch.enqueued
            if count < _BATCH:
                break
        if self._ranking is not None:  # and the ranked values that time alone changed
            kinds: tuple[SubjectKind, ...] = ("user", "account")
            self._refresh_ranks(when, [(k, name) for name in self._ranking.names for k in kinds])
        return out

    def rebuild(self, on_retune: object) -> int:
        self._check_open()
        if on_retune is None:
            on_retune = self.model.on_retune
        elif on_retune != "fire" and on_retune != "record":
            raise ValidationError("on_retune", f'must be "fire" or "record", got {on_retune!r}')
        count, out = self._rebuild.run(deliver=on_retune == "fire")
        for shadow in self._shadows:
            shadow._rebuild.run(deliver=False)
        self._dispatcher.fired(_fired([out]) if out.enqueued else [])
        return count

    def prune(
        self,
        older_than: object,
        dry_run: object,
        deliveries_older_than: object,
        progress: Callable[[int, int], None] | None = None,
    ) -> PruneResult:
        self._check_open()
        if older_than is None:
            older_than = self._retention
            if older_than is None:
                raise ValidationError(
                    "older_than", "give how old a pruned event is, or set the client's retention"
                )
        _positive("older_than", older_than)
        if deliveries_older_than is not None:
            _positive("deliveries_older_than", deliveries_older_than)
        if not isinstance(dry_run, bool):
            raise ValidationError("dry_run", f"must be True or False, got {dry_run!r}")
        assert isinstance(older_than, timedelta)
        began = time.monotonic()
        now = self.clock.now()
        horizon = now - older_than
        if not dry_run:
            self._write_back()  # the warm states, saved before their events may go
        cores = (self, *self._shadows)
        reader = _reader(self.store)
        try:
            transaction = None if reader is None else reader.transaction
            pruner = Pruner(self._session, [(c._plan, c._replay) for c in cores], transaction)
            done = pruner.run(horizon, dry_run=dry_run, progress=progress)
        finally:
            if reader is not None:
                reader.close()
        if reader is not None and done.events:
            # the WAL grew with the deleted pages (zeroed: secure_delete): give it back
            try:
                self.store.scrub()
            except StoreError as error:  # a reader held it back: the next checkpoint will
                logger.debug("pqlkit: WAL not truncated after prune: %s", error)
        deliveries = 0
        if isinstance(deliveries_older_than, timedelta) and not dry_run:
            before = now - deliveries_older_than
            name = self.model.name
            window = self._delivery_window

            def purge(tx: Transaction) -> int:
                tx.close_deliveries(now - window, now, model=name)  # windows that closed
                return tx.purge_deliveries(before, model=name)

            deliveries = self._session.write(purge)
        return PruneResult(
            horizon=horizon,
            through_seq=done.cut,
            events=done.events,
            subjects=done.subjects,
            checkpoint_bytes=done.bytes,
            deliveries=deliveries,
            dry_run=dry_run,
            seconds=time.monotonic() - began,
        )

    def _model_name(self, model: object) -> str:
        """The name of this client's model (None) or of one of its shadows (checked)."""
        name = self.model.name
        if model is None or model == name:
            return name
        if not any(model == shadow.model.name for shadow in self._shadows):
            known = ", ".join(repr(m.model.name) for m in (self, *self._shadows))
            raise ValidationError(
                "model", f"{model!r} is neither this client's model nor a shadow ({known})"
            )
        return str(model)

    def stats(self, model: object = None) -> Stats:
        self._check_open()
        name = self._model_name(model)
        with self._session.tx() as tx:
            users = tx.count_subjects(name, "user")
            accounts = tx.count_subjects(name, "account")
            suppressed = tx.suppressed_calls()
            firsts: dict[tuple[str, str], QualificationRecord] = {}
            for q in tx.qualifications(name):
                key = (q.kind, q.subject_id)
                if key not in firsts or q.round < firsts[key].round:
                    firsts[key] = q
        pqls = [q for (k, _), q in firsts.items() if k == "pql"]
        pqas = sum(1 for (k, _) in firsts if k == "pqa")
        plays = dict.fromkeys(self.model.plays, 0)
        held = dict.fromkeys(self.model.plays, 0)
        for kind, subject in firsts:
            if kind.startswith("play:") and kind[5:] in plays:
                play = kind[5:]
                plays[play] += 1
                held[play] += held_out(name, play, subject, self.model.plays[play].holdout)
        waits = sorted(q.qualified_at - q.first_seen for q in pqls)
        rate = len(pqls) / users if users else 0.0
        return Stats(
            suppressed=suppressed,
            users=users,
            accounts=accounts,
            pqls=len(pqls),
            pqas=pqas,
            pql_rate=rate,
            time_to_pql_median=_median(waits),
            time_to_pql_p90=waits[max(0, -(-9 * len(waits) // 10) - 1)] if waits else None,
            pql_rate_healthy=(0.05 <= rate <= 0.15) if users else None,
            plays=plays,
            plays_held_out=held,
        )

    # -- internals: validation ---------------------------------------------------------------
    def _validate_event(
        self,
        user_id: object,
        event: object,
        properties: object,
        account_id: object,
        timestamp: object,
        message_id: object,
    ) -> NewEvent:
        lim = self._limits
        uid = check_id(user_id, "user_id", lim)
        name = check_event(event)
        props = check_properties(properties, "properties", lim)
        acc = check_id(account_id, "account_id", lim) if account_id is not None else None
        # the clock's now is checked too: a custom clock may hand back a naive datetime
        if timestamp is None:
            ts = check_timestamp(self.clock.now())
        else:
            ts = check_timestamp(timestamp)
            if lim.max_future is not None:
                check_not_future(ts, check_timestamp(self.clock.now(), "clock"), lim)
        mid = (
            check_message_id(message_id, lim)
            if message_id is not None
            else _process.new_message_id()
        )
        return NewEvent(mid, uid, name, props, acc, ts)

    def check_event(self, item: object) -> Event:
        new = self._validate_item(item)
        return Event(
            new.user_id, new.event, new.properties, new.account_id, new.timestamp, new.message_id
        )

    def _validate_item(self, item: object) -> NewEvent:
        if isinstance(item, Event):
            fields = attrs.asdict(item, recurse=False)
        elif isinstance(item, Mapping):
            unknown = set(item) - {f.name for f in attrs.fields(Event)}
            if unknown:
                raise ValidationError(sorted(unknown)[0], "is not a parameter of track()")
            fields = dict(item)
        else:
            raise ValidationError("event", "must be a dict or a pqlkit.Event")
        for required in ("user_id", "event"):
            if required not in fields:
                raise ValidationError(required, "is required")
        return self._validate_event(
            fields["user_id"],
            fields["event"],
            fields.get("properties"),
            fields.get("account_id"),
            fields.get("timestamp"),
            fields.get("message_id"),
        )

    # -- internals: the write path ---------------------------------------------------------------
    def _record(
        self,
        tx: Transaction,
        new: NewEvent,
        cache: dict[tuple[str, str], Subject],
        *,
        save: bool = True,
        held: set[str] | None = None,
        shadowed: list[dict[tuple[str, str], Subject]] | None = None,
    ) -> Outcome | None:
        """Record one event and fold it into its subjects' states (and the shadows')."""
        acc = new.account_id
        uid = self._lock_user(tx, set() if held is None else held, new.user_id, acc)
        record = tx.insert_event(new)
        if record is None:
            return None
        out = Outcome()
        view = EventView(to_us(new.timestamp), record.event, record.properties, uid)
        self._step(tx, cache, "user", uid, record, view, out, save)
        if acc is not None:
            self._step(tx, cache, "account", acc, record, view, out, save)
        if self._shadows:
            scratch = Outcome()  # a shadow's qualifications are recorded, not returned
            for index, shadow in enumerate(self._shadows):
                shadow_cache: dict[tuple[str, str], Subject] = (
                    {} if shadowed is None else shadowed[index]
                )
                shadow._step(tx, shadow_cache, "user", uid, record, view, scratch, save)
                if acc is not None:
                    shadow._step(tx, shadow_cache, "account", acc, record, view, scratch, save)
        return out

    def _lock(self, tx: Transaction, held: set[str], keys: Iterable[str]) -> None:
        """Lock ``keys`` too, adding them to ``held`` (the keys this transaction holds).

        Every write locks the subjects whose state it rewrites before it reads
        what it decides on, and all in one order (sorted keys), so that two writes
        never wait for each other. Keys that sort after every key held are locked,
        waiting if need be. A key that sorts before one held (found out only after
        locking, as an id's final id) would invert the order: where the
        transaction can ``try_lock`` it (PostgreSQL) it is only tried, and if it
        is taken, the transaction is rolled back and run again (``_write``), then
        taking it in order (see ``_hints``).
        """
        new = sorted({k for k in keys if k not in held})
        if not new:
            return
        if held and new[0] < max(held):
            if not tx.try_lock(new):
                raise TransientStoreError(
                    "a subject to lock out of order was locked by another write; run it again"
                )
        else:
            tx.lock(new)
        held.update(new)

    def _lock_user(
        self, tx: Transaction, held: set[str], user_id: str, account_id: str | None
    ) -> str:
        """Lock the user (and the account): the id, and its final id; return the final id.

        ``alias()`` may change what an id resolves to until both are locked (it
        locks one of them), so the id is resolved again once they are. On the
        hot path (an id that is no alias) this is one lock and one look-up.
        """
        key = f"user:{user_id}"
        hint = self._hints.get(user_id) if self._hints else None
        if hint is None and not held:  # the hot path: the keys in order, as they are
            if account_id is None:
                tx.lock((key,))
                held.add(key)
            else:
                account = f"account:{account_id}"  # "account:..." < "user:..."
                tx.lock((account, key))
                held.update((account, key))
        else:
            keys = [key] if account_id is None else [key, f"account:{account_id}"]
            if hint is not None:
                keys.append(f"user:{hint}")
            self._lock(tx, held, keys)
        uid = self._resolve(tx, user_id)
        while uid != user_id and f"user:{uid}" not in held:  # its final id is not locked yet
            self._hint(user_id, uid)
            self._lock(tx, held, [f"user:{uid}"])
            uid = tx.resolve(user_id)
        if hint != uid:
            if uid != user_id:
                self._hint(user_id, uid)
            elif hint is not None:
                self._hints.pop(user_id, None)
        return uid

    def _lock_users(
        self, tx: Transaction, held: set[str], user_ids: Sequence[str]
    ) -> dict[str, str]:
        """``_lock_user`` for many ids at once (in order); return each id's final id."""
        keys = [f"user:{u}" for u in user_ids]
        for u in user_ids:
            hint = self._hints.get(u)
            if hint is not None:
                keys.append(f"user:{hint}")
        self._lock(tx, held, keys)
        resolved: dict[str, str] = {}
        pending = list(user_ids)
        while pending:
            for u in pending:
                resolved[u] = tx.resolve(u)
            pending = [u for u in pending if f"user:{resolved[u]}" not in held]
            for u in pending:
                self._hint(u, resolved[u])
            self._lock(tx, held, [f"user:{resolved[u]}" for u in pending])
        return resolved

    def _hint(self, user_id: str, uid: str) -> None:
        hints = self._hints
        if len(hints) >= _HINTS:
            hints.clear()
        hints[user_id] = uid

    def _step(
        self,
        tx: Transaction,
        cache: dict[tuple[str, str], Subject],
        kind: SubjectKind,
        sid: str,
        record: EventRecord,
        view: EventView,
        out: Outcome,
        save: bool,
    ) -> None:
        """Fold ``record`` into one subject, evaluate it (a user with every score) and,
        with ``save``, store it (``_save`` defers what a warm subject allows; without,
        the caller saves it)."""
        key = (kind, sid)
        subject = cache.get(key)
        if subject is None:
            subject = cache[key] = self._load(tx, kind, sid, skip_seq=record.seq)
        apply(self._plan, subject, record, view)
        newest = subject.state.newest
        t = view.ts if newest is None else newest
        due = self._firing.evaluate(tx, subject, t, out, scores=kind == "user" and not self._shadow)
        if save:
            self._save(tx, subject, due, defer=True)
        else:
            subject.due = due  # for the caller's save

    def _load(
        self, tx: Transaction, kind: SubjectKind, sid: str, *, skip_seq: int | None = None
    ) -> Subject:
        """The subject's state: warm from memory, else from the store (and its log tail)."""
        warm = self._warm
        key = (kind, sid)
        if warm.active:
            subject = warm.subjects.pop(key, None)
            if subject is not None:
                warm.subjects[key] = subject  # most recently used last
                self._session.used_warm(tx, self.model.name, subject)
                return subject
        row = tx.load_state(self.model.name, kind, sid)
        version = ABSENT if row is None else row.version
        state = self._plan.load(row.state if row is not None else None)
        if state is None:
            # Written by another version of the model (a rolling deploy): rebuild this
            # subject from the log, leaving out the event being recorded right now.
            if skip_seq == 0:  # a batched insert (stores/_base Checked): seq not known
                raise StaleCache("a subject to rebuild from the log after a batched event")
            subject = self._replay.subject(tx, kind, sid, skip_seq)
        else:
            subject = Subject(kind, sid, state)
            if row is not None:
                subject.stored_events = state.events
                subject.stored_due = None if row.due_at is None else to_us(row.due_at)
                subject.stored_size = len(row.state)
                # its writer may have left newer events in the log (never where the
                # store checks writes: every event's states are written)
                if warm.active and not warm.checked and key not in warm.current:
                    self._replay.catch_up(tx, subject, skip_seq)
        subject.version = version
        if kind == "user":
            subject.account = self._traits.account_of(tx, subject)
        if warm.active:
            self._keep_warm(tx, subject)
        return subject

    def _keep_warm(self, tx: Transaction, subject: Subject) -> None:
        """Cache ``subject``; write back the least recently used ones while full."""
        warm = self._warm
        subjects = warm.subjects
        subjects[(subject.kind, subject.id)] = subject
        warm.size += subject.stored_size
        while len(subjects) > warm.capacity or (warm.size > warm.max_bytes and len(subjects) > 1):
            oldest = subjects.pop(next(iter(subjects)))
            warm.size -= oldest.stored_size
            self._save(tx, oldest, defer=True, evicting=True)
        if len(warm.traits) > 2 * warm.capacity:
            warm.traits.clear()
        if len(warm.resolved) > 2 * warm.capacity:
            warm.resolved.clear()
        if len(warm.current) > 20 * warm.capacity:
            warm.current.clear()

    def _resolve(self, tx: Transaction, user_id: str) -> str:
        warm = self._warm
        if not warm.active:
            return tx.resolve(user_id)
        uid = warm.resolved.get(user_id)
        if uid is None:
            uid = warm.resolved[user_id] = tx.resolve(user_id)
        return uid

    def _save(
        self,
        tx: Transaction,
        subject: Subject,
        due: Due | None = None,
        *,
        at: int | None = None,
        defer: bool = False,
        evicting: bool = False,
    ) -> None:
        """Store the subject's state and due time: ``due``, what its evaluation found
        (without one, what its last evaluation found: ``subject.due``).

        With ``defer`` (a warm subject after an event), the write is skipped while
        the stored state is only a few events behind and its due time is not later
        than the new one: the events in between are in the log (see ``Replay.catch_up``),
        and a sweep that comes early finds nothing to do and stores the state.
        """
        s = subject.state
        newest = s.newest
        if newest is None:
            self._session.drop_state(tx, self.model.name, subject)
            return
        if due is None:
            due = subject.due
        else:
            subject.due = due
        kind = subject.kind
        events, stored = s.events, subject.stored_events
        if evicting and stored == events:
            # Stored already, with the due time of its last save: computing one again
            # from its newest event would undo a sweep's (and make it due again).
            return
        t = newest if at is None or at < newest else at
        if due is not None and due.t == t and due.events == events:
            when = due.at  # what the evaluation at T found
        else:
            when = self._plan.next_due(s, t, kind)
        if defer and stored is not None and not self._warm.checked:
            stored_due = subject.stored_due
            behind = events - stored
            warm = self._warm
            if (
                (when is None or (stored_due is not None and stored_due <= when))
                and (
                    behind == 0
                    or (
                        not evicting
                        and behind < warm.streak
                        and behind < max(_TAIL_EVENTS, subject.stored_size // _TAIL_BYTES)
                    )
                )
                # only a subject that stays warm (or is leaving now) may stay behind
                and (evicting or (warm.active and warm.subjects.get((kind, subject.id)) is subject))
            ):
                return
        self._session.store_state(tx, self.model.name, subject, when)

    def _after_write(self, fired: list[Qualification], joined: object) -> None:
        # Inside the caller's transaction (joined), nothing can be delivered before
        # the caller commits: the next flush(), sweep() or background pass does it.
        if joined is None:
            self._dispatcher.fired(fired)


_LIST_KINDS = ("pql", "pqa", "play")


def _listed(
    model: Model, record: QualificationRecord, payload: Qualification | None
) -> Qualification:
    """A listed qualification: its payload while the outbox keeps it, else what its record
    holds; ``disqualified_at`` tells whether its rule has turned false since."""
    if payload is not None:
        return attrs.evolve(payload, disqualified_at=record.disqualified_at)
    play: str | None = None
    kind: Kind
    account = record.kind == "pqa"
    if record.kind.startswith("play:"):
        kind, play = "play", record.kind[5:]
        declared = model.plays.get(play)
        account = declared is not None and declared.of == "account"
    else:
        kind = "pqa" if record.kind == "pqa" else "pql"
    return Qualification(
        id=record.id,
        kind=kind,
        subject_id=record.subject_id,
        account_id=record.subject_id if account else None,
        model=record.model,
        fingerprint=record.fingerprint,
        qualified_at=record.qualified_at,
        disqualified_at=record.disqualified_at,
        play=play,
        # (a held-out qualification is never enqueued: listed from its record, the
        # stable hash says it was held out)
        holdout=play is not None
        and play in model.plays
        and held_out(model.name, play, record.subject_id, model.plays[play].holdout),
    )


def _check_shadows(model: Model, shadows: object) -> tuple[Model, ...]:
    """The candidate models to shadow ``model`` with: distinct names, none ``model``'s."""
    if isinstance(shadows, (str, bytes, Mapping)) or not isinstance(shadows, Iterable):
        raise ValidationError("shadows", f"must be a list of pqlkit.Model, got {shadows!r}")
    found: list[Model] = []
    names = {model.name}
    for index, shadow in enumerate(shadows):
        if not isinstance(shadow, Model):
            raise ValidationError(
                "shadows", f"item {index} must be a pqlkit.Model, got {type(shadow).__name__}"
            )
        if shadow.name in names:
            what = "the model's own name" if shadow.name == model.name else "a name given twice"
            raise ValidationError(
                "shadows",
                f"item {index} is named {shadow.name!r}, {what}: states and qualifications are"
                " kept by model name, so a shadow needs a name of its own",
            )
        names.add(shadow.name)
        found.append(shadow)
    return tuple(found)


def _positive(name: str, value: object) -> None:
    if not isinstance(value, timedelta) or value <= timedelta(0):
        raise ValidationError(name, f"must be a positive timedelta, got {value!r}")


def _reader(store: Store) -> Store | None:
    """A read-only connection to an SQLite file: prune reads the log through it without
    taking the write lock (None for other stores)."""
    from .stores.sqlite import SQLiteStore

    if not isinstance(store, SQLiteStore) or store.path == ":memory:":
        return None
    return SQLiteStore(store.path, read_only=True)


def _checkpointed(tx: Transaction, user_ids: Sequence[str]) -> bool:
    """True if one of these users has a checkpoint (under any model): their events
    before it were pruned."""
    has = getattr(tx, "has_checkpoints", None)  # (a store written before it has none)
    return has is not None and bool(has("user", user_ids))


def _checkpoint_accounts(tx: Transaction, user_ids: Sequence[str]) -> set[str]:
    """The accounts the checkpoints of these users name (their pruned events')."""
    accounts = getattr(tx, "checkpoint_accounts", None)
    return set() if accounts is None else set(accounts(user_ids))


def _fired(outcomes: list[Outcome]) -> list[Qualification]:
    """What these writes fired (and enqueued for delivery), in order."""
    return [q for out in outcomes for q in (*out.qualified, *out.disqualified)]


def _median(values: list[timedelta]) -> timedelta | None:
    if not values:
        return None
    mid = len(values) // 2
    if len(values) % 2:
        return values[mid]
    return (values[mid - 1] + values[mid]) / 2
