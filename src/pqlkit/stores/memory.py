"""MemoryStore: everything in process memory. The fake for tests, and the reference store."""

from __future__ import annotations

import bisect
import heapq
import itertools
import operator
import threading
from collections.abc import Callable, Hashable, Iterator, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any

import attrs

from .._events import EventRecord, Qualification, SubjectKind
from ..exceptions import StoreError
from ._base import (
    INVALID_STATE,
    DeliveryKind,
    DeliveryRecord,
    DeliveryStatus,
    NewEvent,
    NudgeAction,
    NudgeRecord,
    QualificationRecord,
    Rank,
    StateRecord,
    cannot_join,
)

__all__ = ["MemoryStore"]

_SEQ = operator.attrgetter("seq")


@attrs.frozen
class _Delivery:
    """A qualification to deliver: its payload, and whether its window is still open."""

    qualification: Qualification
    kind: DeliveryKind
    order: int  # its place in the order qualifications were enqueued
    enqueued_at: datetime
    due: datetime | None  # when it was first due
    status: str = "open"  # "open", "closed" (window over) or "expired" (nobody took it)
    finished_at: datetime | None = None

    def untaken(self, status: DeliveryStatus, delivery_id: str) -> DeliveryRecord:
        """The record that stands for it while no callback has one."""
        q = self.qualification
        return DeliveryRecord(
            delivery_id,
            self.kind,
            q.subject_id,
            q,
            status=status,
            next_attempt_at=self.due,
            finished_at=self.finished_at,
        )


@attrs.frozen
class _Nudge:
    """A stored nudge: the record, its place in the order nudges were opened, its status."""

    record: NudgeRecord
    order: int
    status: str = "open"  # "open", "clicked", "dismissed" or "expired"
    closed_at: datetime | None = None


@attrs.define
class _Data:
    events: list[EventRecord] = attrs.Factory(list)
    by_user: dict[str, list[EventRecord]] = attrs.Factory(dict)  # each list in seq order
    message_ids: set[str] = attrs.Factory(set)
    next_seq: int = 1
    aliases: dict[str, str] = attrs.Factory(dict)
    traits: dict[tuple[str, str], dict[str, Any]] = attrs.Factory(dict)
    states: dict[tuple[str, str, str], StateRecord] = attrs.Factory(dict)
    # (model, kind, score) -> subject id -> its rank
    ranks: dict[tuple[str, str, str], dict[str, Rank]] = attrs.Factory(dict)
    # user id -> order -> nudge (the order numbers every nudge ever opened)
    nudges: dict[str, dict[int, _Nudge]] = attrs.Factory(dict)
    opened: int = 0
    qualifications: dict[tuple[str, str, str, int], QualificationRecord] = attrs.Factory(dict)
    # the outbox: each qualification once, and a record per (qualification, callback)
    deliveries: dict[str, _Delivery] = attrs.Factory(dict)
    records: dict[tuple[str, str], DeliveryRecord] = attrs.Factory(dict)
    # the pending records (claim_due reads only these), each with its place in the
    # order records were created (the order they are claimed in)
    pending: dict[tuple[str, str], int] = attrs.Factory(dict)
    created: dict[tuple[str, str], int] = attrs.Factory(dict)
    enqueued: int = 0  # qualifications and records ever created (numbers them; never reused)
    callbacks: dict[tuple[str, str, str], datetime] = attrs.Factory(dict)  # -> seen at
    meta: dict[str, str] = attrs.Factory(dict)
    suppressions: dict[str, tuple[datetime, int]] = attrs.Factory(dict)  # -> (since, dropped)
    # (model, kind, subject id) -> (state text, the seq it covers, accounts)
    checkpoints: dict[tuple[str, str, str], tuple[str, int, tuple[str, ...]]] = attrs.Factory(dict)


class _MemoryTransaction:
    """A transaction over :class:`_Data`; every write logs its undo."""

    def __init__(self, data: _Data, token: tuple[Hashable, int]) -> None:
        self._d = data
        self._undo: list[Callable[[], None]] = []
        self._token = token

    def cache_token(self) -> tuple[Hashable, int]:
        """(this store, the number of transactions begun before this one): see ``_base``."""
        return self._token

    def rollback(self) -> None:
        while self._undo:
            self._undo.pop()()

    def _set(self, mapping: dict[Any, Any], key: Any, value: Any) -> None:
        missing = key not in mapping
        old = mapping.get(key)
        mapping[key] = value
        if missing:
            self._undo.append(lambda: mapping.pop(key, None))
        else:
            self._undo.append(lambda: mapping.__setitem__(key, old))

    def _del(self, mapping: dict[Any, Any], key: Any) -> None:
        if key in mapping:
            old = mapping.pop(key)
            self._undo.append(lambda: mapping.__setitem__(key, old))

    def lock(self, keys: Sequence[str]) -> None:
        """Nothing to do: a MemoryStore transaction holds the store's lock."""

    def try_lock(self, keys: Sequence[str]) -> bool:
        """True: a MemoryStore transaction holds the store's lock."""
        return True

    def batch(self) -> None:
        """Nothing to do: writes are not checked at commit here (see ``_base.Checked``)."""

    def check_state(self, model: str, kind: SubjectKind, subject_id: str, version: int) -> None:
        """Nothing to do: writes are not checked at commit here (see ``_base.Checked``)."""

    def check_integrity(self) -> None:
        """Nothing to check: the store is Python objects in this process."""

    # -- event log -------------------------------------------------------------
    def insert_event(self, event: NewEvent) -> EventRecord | None:
        d = self._d
        if event.message_id in d.message_ids:
            return None
        e = event
        record = EventRecord(
            d.next_seq, e.message_id, e.user_id, e.event, e.properties, e.account_id, e.timestamp
        )
        d.events.append(record)
        mine = d.by_user.get(e.user_id)
        if mine is None:
            mine = d.by_user[e.user_id] = []
        mine.append(record)
        d.message_ids.add(event.message_id)
        d.next_seq += 1

        def undo() -> None:  # the newest record of both lists, unless undone out of order
            for records in (d.events, mine):
                if records and records[-1] is record:
                    records.pop()
                else:
                    records.remove(record)
            d.message_ids.discard(record.message_id)

        self._undo.append(undo)
        return record

    def events(
        self,
        *,
        user_ids: Sequence[str] | None = None,
        account_id: str | None = None,
        after_seq: int = 0,
        limit: int | None = None,
    ) -> Iterator[EventRecord]:
        wanted = set(user_ids) if user_ids is not None else None
        found = 0
        if limit is not None and limit <= 0:
            return
        events = self._d.events  # in seq order: start after after_seq
        if wanted is not None:  # only these users' events, merged in seq order
            events = list(heapq.merge(*self._of_users(wanted), key=_SEQ))
        start = bisect.bisect_right(events, after_seq, key=_SEQ) if after_seq else 0
        for record in events[start:]:
            if record.seq <= after_seq:
                continue
            if wanted is not None and record.user_id not in wanted:
                continue
            if account_id is not None and record.account_id != account_id:
                continue
            yield record
            found += 1
            if limit is not None and found >= limit:
                return

    def recent_events(self, user_ids: Sequence[str], limit: int) -> list[EventRecord]:
        mine = itertools.chain.from_iterable(self._of_users(set(user_ids)))
        return heapq.nlargest(limit, mine, key=lambda e: (e.timestamp, e.seq))

    def _of_users(self, user_ids: set[str]) -> list[list[EventRecord]]:
        by_user = self._d.by_user
        return [by_user[u] for u in sorted(user_ids) if u in by_user]

    def has_message(self, message_id: str) -> bool:
        return message_id in self._d.message_ids

    # -- identity ----------------------------------------------------------------
    def resolve(self, user_id: str) -> str:
        return self._d.aliases.get(user_id, user_id)

    def aliases_of(self, user_id: str) -> list[str]:
        return sorted(p for p, u in self._d.aliases.items() if u == user_id)

    def set_alias(self, previous_id: str, user_id: str) -> None:
        for prev in [*self.aliases_of(previous_id), previous_id]:
            self._set(self._d.aliases, prev, user_id)

    def traits(self, kind: SubjectKind, subject_id: str) -> dict[str, Any]:
        return dict(self._d.traits.get((kind, subject_id), {}))

    def set_traits(self, kind: SubjectKind, subject_id: str, traits: dict[str, Any]) -> None:
        self._set(self._d.traits, (kind, subject_id), dict(traits))

    def accounts_of(self, user_ids: Sequence[str]) -> set[str]:
        mine = itertools.chain.from_iterable(self._of_users(set(user_ids)))
        return {e.account_id for e in mine if e.account_id is not None}

    def users_of(self, account_id: str) -> set[str]:
        return {e.user_id for e in self._d.events if e.account_id == account_id}

    def forget_users(self, user_ids: Sequence[str]) -> None:
        d = self._d
        wanted = set(user_ids)
        old_events = d.events
        kept = [e for e in old_events if e.user_id not in wanted]
        gone = {e.message_id for e in old_events if e.user_id in wanted}
        d.events = kept
        d.message_ids -= gone
        dropped = {u: d.by_user.pop(u) for u in wanted if u in d.by_user}

        def undo() -> None:
            d.events = old_events
            d.message_ids |= gone
            d.by_user.update(dropped)

        self._undo.append(undo)
        for uid in wanted:
            self._del(d.traits, ("user", uid))
            self._del(d.nudges, uid)
        for prev, target in list(d.aliases.items()):
            if prev in wanted or target in wanted:
                self._del(d.aliases, prev)
        # every model's states and ranks of these users (an old model version's too)
        for key in [k for k in d.states if k[1] == "user" and k[2] in wanted]:
            self.delete_state(key[0], "user", key[2])

    def user_rows(self, user_ids: Sequence[str]) -> dict[str, int]:
        d = self._d
        wanted = set(user_ids)
        return {
            "events": sum(len(d.by_user.get(u, [])) for u in wanted),
            "traits": sum(1 for u in wanted if ("user", u) in d.traits),
            "aliases": sum(1 for p, t in d.aliases.items() if p in wanted or t in wanted),
            "nudges": sum(len(d.nudges.get(u, {})) for u in wanted),
            "states": sum(1 for k in d.states if k[1] == "user" and k[2] in wanted),
            "ranks": sum(
                1
                for (_, kind, _), ranks in d.ranks.items()
                if kind == "user"
                for s in ranks
                if s in wanted
            ),
            "qualifications": sum(1 for k in d.qualifications if k[1] == "pql" and k[2] in wanted),
            "deliveries": sum(
                1
                for q in d.deliveries.values()
                if q.qualification.kind == "pql" and q.qualification.subject_id in wanted
            ),
        }

    def invalidate_states(self, kind: SubjectKind, subject_id: str, *, keep: str) -> int:
        keys = [k for k in self._d.states if k[0] != keep and k[1] == kind and k[2] == subject_id]
        for key in keys:
            self._set(self._d.states, key, attrs.evolve(self._d.states[key], state=INVALID_STATE))
        return len(keys)

    # -- derived state -------------------------------------------------------------
    def load_state(self, model: str, kind: SubjectKind, subject_id: str) -> StateRecord | None:
        return self._d.states.get((model, kind, subject_id))

    def save_state(self, record: StateRecord) -> None:
        self._set(self._d.states, (record.model, record.kind, record.subject_id), record)

    def delete_state(self, model: str, kind: SubjectKind, subject_id: str) -> None:
        self._del(self._d.states, (model, kind, subject_id))
        for (m, k, _), ranks in self._d.ranks.items():
            if m == model and k == kind:
                self._del(ranks, subject_id)

    def clear_states(self, model: str) -> None:
        for key in [k for k in self._d.states if k[0] == model]:
            self._del(self._d.states, key)
        for key in [k for k in self._d.ranks if k[0] == model]:
            self._del(self._d.ranks, key)

    def due_subjects(self, model: str, now: datetime, limit: int) -> list[tuple[SubjectKind, str]]:
        due = [
            s
            for s in self._d.states.values()
            if s.model == model and s.due_at is not None and s.due_at <= now
        ]
        due.sort(key=lambda s: (s.due_at, s.kind, s.subject_id))
        return [(s.kind, s.subject_id) for s in due[:limit]]

    def count_subjects(self, model: str, kind: SubjectKind) -> int:
        return sum(1 for m, k, _ in self._d.states if m == model and k == kind)

    # -- ranked scores ----------------------------------------------------------------
    def save_ranks(
        self,
        model: str,
        kind: SubjectKind,
        subject_id: str,
        ranks: Sequence[Rank],
        *,
        at: datetime | None = None,
    ) -> None:
        for rank in ranks:
            key = (model, kind, rank.name)
            if key not in self._d.ranks:
                self._set(self._d.ranks, key, {})
            held = self._d.ranks[key].get(subject_id)
            if (
                at is not None
                and held is not None
                and held.value == rank.value
                and held.changes_at is not None
                and held.changes_at > at
                and (rank.changes_at is None or rank.changes_at >= held.changes_at)
            ):
                continue  # early enough: kept
            self._set(self._d.ranks[key], subject_id, rank)

    def top_ranks(
        self, model: str, kind: SubjectKind, name: str, n: int
    ) -> list[tuple[str, float]]:
        ranks = self._d.ranks.get((model, kind, name), {})
        best = heapq.nsmallest(n, ranks.items(), key=lambda item: (-item[1].value, item[0]))
        return [(sid, rank.value) for sid, rank in best]

    def stale_ranks(
        self, model: str, kind: SubjectKind, name: str, now: datetime, limit: int
    ) -> list[str]:
        ranks = self._d.ranks.get((model, kind, name), {})
        stale = [
            (r.changes_at, sid)
            for sid, r in ranks.items()
            if r.changes_at is not None and r.changes_at <= now
        ]
        return [sid for _, sid in heapq.nsmallest(limit, stale)]

    # -- qualifications --------------------------------------------------------------
    def latest_qualification(
        self, model: str, kind: str, subject_id: str
    ) -> QualificationRecord | None:
        rounds = [
            q
            for (m, k, s, _), q in self._d.qualifications.items()
            if m == model and k == kind and s == subject_id
        ]
        return max(rounds, key=lambda q: q.round, default=None)

    def insert_qualification(self, record: QualificationRecord) -> bool:
        key = (record.model, record.kind, record.subject_id, record.round)
        if key in self._d.qualifications:
            return False
        self._set(self._d.qualifications, key, record)
        return True

    def set_disqualified(self, qualification_id: str, at: datetime) -> None:
        for key, q in list(self._d.qualifications.items()):
            if q.id == qualification_id:
                self._set(self._d.qualifications, key, attrs.evolve(q, disqualified_at=at))

    def qualifications(self, model: str) -> Iterator[QualificationRecord]:
        return iter([q for q in self._d.qualifications.values() if q.model == model])

    def recent_qualifications(
        self,
        model: str,
        *,
        kinds: Sequence[str],
        since: datetime | None = None,
        before: tuple[datetime, str] | None = None,
        limit: int,
    ) -> list[tuple[QualificationRecord, Qualification | None]]:
        found = [
            q
            for q in self._d.qualifications.values()
            if q.model == model
            and q.kind in kinds
            and (since is None or q.qualified_at >= since)
            and (before is None or (q.qualified_at, q.id) < before)
        ]
        found.sort(key=lambda q: (q.qualified_at, q.id), reverse=True)
        out: list[tuple[QualificationRecord, Qualification | None]] = []
        for q in found[:limit]:
            d = self._d.deliveries.get(q.id)
            out.append((q, None if d is None else d.qualification))
        return out

    def find_qualification(self, qualification_id: str) -> QualificationRecord | None:
        for q in self._d.qualifications.values():
            if q.id == qualification_id:
                return q
        return None

    def delete_qualifications(self, subject_id: str, kind: str) -> None:
        for key in [k for k in self._d.qualifications if k[1] == kind and k[2] == subject_id]:
            self._del(self._d.qualifications, key)
        for delivery_id, d in list(self._d.deliveries.items()):
            if d.qualification.subject_id == subject_id and d.qualification.kind == kind:
                self._drop(delivery_id)

    # -- outbox ------------------------------------------------------------------
    def _drop(self, delivery_id: str) -> None:
        """Delete a qualification to deliver and its records."""
        self._del(self._d.deliveries, delivery_id)
        for key in [k for k in self._d.records if k[0] == delivery_id]:
            self._del(self._d.records, key)
            self._del(self._d.pending, key)
            self._del(self._d.created, key)

    def _records_of(self, delivery_id: str) -> list[DeliveryRecord]:
        return [r for (i, _), r in self._d.records.items() if i == delivery_id]

    def _add_records(self, delivery_id: str, names: Sequence[str], due: datetime | None) -> None:
        """A pending record for each of ``names`` that has none for this qualification."""
        d = self._d.deliveries[delivery_id]
        q = d.qualification
        for name in names:
            key = (delivery_id, name)
            if key in self._d.records:
                continue
            self._set(self._d.created, key, self._d.enqueued)
            self._d.enqueued += 1
            record = DeliveryRecord(
                delivery_id,
                d.kind,
                q.subject_id,
                q,
                next_attempt_at=due,
                callback=name,
            )
            self._put(record)

    def _known(self, model: str, kind: str, since: datetime | None) -> list[str]:
        return sorted(
            name
            for (m, k, name), seen in self._d.callbacks.items()
            if m == model and k == kind and (since is None or seen >= since)
        )

    def enqueue(
        self,
        delivery: DeliveryRecord,
        callbacks: Sequence[str] = (),
        *,
        now: datetime,
        known_since: datetime | None = None,
    ) -> None:
        if delivery.id in self._d.deliveries:
            return
        order = self._d.enqueued
        self._d.enqueued += 1
        self._set(
            self._d.deliveries,
            delivery.id,
            _Delivery(delivery.qualification, delivery.kind, order, now, delivery.next_attempt_at),
        )
        known = self._known(delivery.model, delivery.kind, known_since)
        names = sorted({*callbacks, *known})
        self._add_records(delivery.id, names, delivery.next_attempt_at)

    def register_callback(
        self, model: str, kind: str, name: str, now: datetime, *, since: datetime
    ) -> bool:
        self._set(self._d.callbacks, (model, kind, name), now)
        for delivery_id, d in list(self._d.deliveries.items()):
            if (
                d.status == "open"
                and d.qualification.model == model
                and d.kind == kind
                and d.enqueued_at >= since
            ):
                self._add_records(delivery_id, [name], now)
        return True

    def _put(self, d: DeliveryRecord) -> None:
        """Store record ``d``, and keep the index of pending records in step."""
        assert d.callback is not None
        key = (d.id, d.callback)
        self._set(self._d.records, key, d)
        if d.status != "pending":
            self._del(self._d.pending, key)
        elif key not in self._d.pending:
            self._set(self._d.pending, key, self._d.created[key])

    def replace_qualification(self, delivery_id: str, qualification: Qualification) -> None:
        d = self._d.deliveries.get(delivery_id)
        if d is None:
            return
        self._set(self._d.deliveries, delivery_id, attrs.evolve(d, qualification=qualification))
        for record in self._records_of(delivery_id):
            self._put(attrs.evolve(record, qualification=qualification))

    def claim_due(
        self,
        now: datetime,
        wall_now: datetime,
        lease_until: datetime,
        callbacks: Sequence[str],
        limit: int,
        *,
        model: str | None = None,
        ids: Sequence[str] | None = None,
    ) -> list[DeliveryRecord]:
        claimed: list[DeliveryRecord] = []
        pending = self._d.pending
        wanted = set(callbacks)
        candidates = list(pending)
        if ids is not None:
            chosen = set(ids)
            candidates = [key for key in candidates if key[0] in chosen]
        for key in sorted(candidates, key=pending.__getitem__):
            if len(claimed) >= limit:
                break
            d = self._d.records[key]
            if f"{d.kind}:{d.callback}" not in wanted:
                continue
            if model is not None and d.model != model:
                continue
            if d.next_attempt_at is not None and d.next_attempt_at > now:
                continue
            if d.lease_until is not None and d.lease_until > wall_now:
                continue
            leased = attrs.evolve(d, lease_until=lease_until, attempts=d.attempts + 1)
            self._put(leased)
            claimed.append(leased)
        return claimed

    def renew_lease(
        self, delivery_id: str, callback: str, attempts: int, lease_until: datetime
    ) -> bool:
        d = self._d.records.get((delivery_id, callback))
        if d is None or d.status != "pending" or d.attempts != attempts:
            return False
        self._put(attrs.evolve(d, lease_until=lease_until))
        return True

    def finish_delivery(
        self,
        delivery_id: str,
        callback: str,
        *,
        status: DeliveryStatus,
        attempts: int,
        next_attempt_at: datetime | None,
        last_error: str | None,
        finished_at: datetime | None = None,
    ) -> None:
        d = self._d.records.get((delivery_id, callback))
        if d is None:
            return
        self._put(
            attrs.evolve(
                d,
                status=status,
                attempts=attempts,
                next_attempt_at=next_attempt_at,
                last_error=last_error,
                lease_until=None,
                finished_at=finished_at,
            )
        )

    def deliveries(
        self,
        status: DeliveryStatus,
        *,
        model: str | None = None,
        callback: str | None = None,
    ) -> list[DeliveryRecord]:
        created = self._d.created
        found: list[tuple[tuple[int, int], DeliveryRecord]] = []
        for key, r in self._d.records.items():
            if (
                r.status == status
                and (model is None or r.model == model)
                and (callback is None or r.callback == callback)
            ):
                found.append(((self._d.deliveries[r.id].order, created[key]), r))
        if callback is None and status in ("pending", "expired"):
            wanted = "open" if status == "pending" else "expired"
            taken = {i for i, _ in self._d.records}
            for delivery_id, d in self._d.deliveries.items():
                if d.status != wanted or (model is not None and d.qualification.model != model):
                    continue
                if status == "expired" or delivery_id not in taken:
                    found.append(((d.order, -1), d.untaken(status, delivery_id)))
        found.sort(key=lambda pair: pair[0])
        return [r for _, r in found]

    def revive_dead(
        self,
        now: datetime,
        *,
        model: str | None = None,
        callback: str | None = None,
        known_since: datetime | None = None,
    ) -> int:
        dead = self.deliveries("dead", model=model, callback=callback)
        for d in dead:
            if d.callback == "*":  # migrated: open the qualification to every callback again
                key = (d.id, "*")
                self._del(self._d.records, key)
                self._del(self._d.created, key)
                q = self._d.deliveries[d.id]
                self._set(
                    self._d.deliveries,
                    d.id,
                    attrs.evolve(q, status="open", enqueued_at=now, finished_at=None),
                )
                self._add_records(d.id, self._known(d.model, d.kind, known_since), now)
                continue
            self._put(
                attrs.evolve(
                    d,
                    status="pending",
                    attempts=0,
                    next_attempt_at=now,
                    lease_until=None,
                    finished_at=None,
                )
            )
        return len(dead)

    def close_deliveries(self, before: datetime, now: datetime, *, model: str) -> int:
        expired = 0
        for delivery_id, d in list(self._d.deliveries.items()):
            if d.status != "open" or d.qualification.model != model or d.enqueued_at >= before:
                continue
            records = self._records_of(delivery_id)
            for r in records:
                if r.status == "pending" and r.attempts == 0:
                    self._put(attrs.evolve(r, status="expired", finished_at=now))
                    expired += 1
            status = "closed" if records else "expired"
            expired += not records
            self._set(
                self._d.deliveries, delivery_id, attrs.evolve(d, status=status, finished_at=now)
            )
        return expired

    def purge_deliveries(self, before: datetime, *, model: str) -> int:
        gone = 0
        for delivery_id, d in list(self._d.deliveries.items()):
            if d.status == "open" or d.qualification.model != model:
                continue
            if d.finished_at is None or d.finished_at >= before:
                continue
            if all(
                r.status in ("delivered", "expired")
                and r.finished_at is not None
                and r.finished_at < before
                for r in self._records_of(delivery_id)
            ):
                self._drop(delivery_id)
                gone += 1
        return gone

    # -- nudges ------------------------------------------------------------------------
    def _nudges_of(self, user_id: str, key: str) -> list[_Nudge]:
        return [n for n in self._d.nudges.get(user_id, {}).values() if n.record.key == key]

    def open_nudge(self, record: NudgeRecord, now: datetime) -> bool:
        d = self._d
        for n in self._nudges_of(record.user_id, record.key):
            if n.status != "open":
                continue
            until = n.record.until
            if until is None or until > now:
                return False
            self._set(
                d.nudges[record.user_id],
                n.order,
                attrs.evolve(n, status="expired", closed_at=until),
            )
        if record.user_id not in d.nudges:
            self._set(d.nudges, record.user_id, {})
        order = d.opened
        d.opened += 1  # never reused, even if undone (as a database's sequence)
        self._set(d.nudges[record.user_id], order, _Nudge(record, order))
        return True

    def nudges(self, user_id: str, now: datetime) -> list[NudgeRecord]:
        found = [
            n
            for n in self._d.nudges.get(user_id, {}).values()
            if n.status == "open" and (n.record.until is None or n.record.until > now)
        ]
        found.sort(key=lambda n: (n.record.created_at, n.order))
        return [n.record for n in found]

    def mark_nudge(self, user_id: str, key: str, action: NudgeAction, at: datetime) -> bool | None:
        mine = self._nudges_of(user_id, key)
        if not mine:
            return None
        for n in mine:
            if n.status != "open":
                continue
            seen = n.record.seen_at
            if action == "seen":
                if seen is not None:
                    return False
                changed = attrs.evolve(n, record=attrs.evolve(n.record, seen_at=at))
            else:
                record = n.record if seen is not None else attrs.evolve(n.record, seen_at=at)
                changed = attrs.evolve(n, record=record, status=action, closed_at=at)
            self._set(self._d.nudges[user_id], n.order, changed)
            return True
        return False

    # -- suppressions ----------------------------------------------------------------
    def suppress(self, digest: str, at: datetime) -> bool:
        if digest in self._d.suppressions:
            return False
        self._set(self._d.suppressions, digest, (at, 0))
        return True

    def unsuppress(self, digest: str) -> bool:
        if digest not in self._d.suppressions:
            return False
        self._del(self._d.suppressions, digest)
        return True

    def has_suppressions(self) -> bool:
        return bool(self._d.suppressions)

    def drop_suppressed(self, digests: Sequence[str]) -> bool:
        found = False
        for digest in set(digests):
            entry = self._d.suppressions.get(digest)
            if entry is not None:
                self._set(self._d.suppressions, digest, (entry[0], entry[1] + 1))
                found = True
        return found

    def suppressed_calls(self) -> int:
        return sum(dropped for _, dropped in self._d.suppressions.values())

    # -- retention ---------------------------------------------------------------------
    def prune_cut(self, before: datetime) -> int:
        cut = 0
        for e in self._d.events:  # in seq order
            if e.timestamp >= before:
                break
            cut = e.seq
        return cut

    def delete_events(self, seqs: Sequence[int]) -> int:
        d = self._d
        wanted = set(seqs)
        old_events = d.events
        gone = [e for e in old_events if e.seq in wanted]
        if not gone:
            return 0
        d.events = [e for e in old_events if e.seq not in wanted]
        users = {e.user_id for e in gone}
        old_lists = {u: d.by_user[u] for u in users}
        for u in users:
            kept = [e for e in old_lists[u] if e.seq not in wanted]
            if kept:
                d.by_user[u] = kept
            else:
                del d.by_user[u]
        ids = {e.message_id for e in gone}
        d.message_ids -= ids

        def undo() -> None:
            d.events = old_events
            d.by_user.update(old_lists)
            d.message_ids |= ids

        self._undo.append(undo)
        return len(gone)

    def load_checkpoint(
        self, model: str, kind: SubjectKind, subject_id: str
    ) -> tuple[str, int] | None:
        found = self._d.checkpoints.get((model, kind, subject_id))
        return None if found is None else (found[0], found[1])

    def save_checkpoint(
        self,
        model: str,
        kind: SubjectKind,
        subject_id: str,
        state: str,
        seq: int,
        accounts: Sequence[str] = (),
    ) -> None:
        key = (model, kind, subject_id)
        self._set(self._d.checkpoints, key, (state, seq, tuple(sorted(accounts))))

    def checkpoint_accounts(self, user_ids: Sequence[str]) -> set[str]:
        wanted = set(user_ids)
        return {
            a
            for (_, kind, sid), (_, _, accounts) in self._d.checkpoints.items()
            if kind == "user" and sid in wanted
            for a in accounts
        }

    def has_checkpoints(self, kind: SubjectKind, subject_ids: Sequence[str]) -> bool:
        wanted = set(subject_ids)
        return any(k == kind and s in wanted for _, k, s in self._d.checkpoints)

    def delete_checkpoints(self, kind: SubjectKind, subject_ids: Sequence[str]) -> int:
        wanted = set(subject_ids)
        keys = [key for key in self._d.checkpoints if key[1] == kind and key[2] in wanted]
        for key in keys:
            self._del(self._d.checkpoints, key)
        return len(keys)

    # -- metadata --------------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        return self._d.meta.get(key)

    def set_meta(self, key: str, value: str) -> None:
        self._set(self._d.meta, key, value)


class _Scope:
    """One transaction of a MemoryStore (a class, not a generator: it is on the hot path)."""

    __slots__ = ("_store", "_tx")

    def __init__(self, store: MemoryStore) -> None:
        self._store = store

    def __enter__(self) -> _MemoryTransaction:
        store = self._store
        me = threading.get_ident()
        if store._owner == me:
            raise StoreError("nested transaction: a transaction is already open in this thread")
        store._lock.acquire()
        store._owner = me
        tx = self._tx = _MemoryTransaction(store._data, (store._serial, store._begun))
        store._begun += 1
        return tx

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        store = self._store
        try:
            if exc_type is not None:
                self._tx.rollback()
        finally:
            store._owner = None
            store._lock.release()


class MemoryStore:
    """A store that keeps everything in this process's memory.

    Fast and dependency-free: the store for unit tests (``pqlkit.testing.FakeStore``
    is this class). Transactions are serialized by one lock and roll back
    completely when they raise. Nothing survives the process.

    Example:
        >>> import pqlkit
        >>> store = pqlkit.MemoryStore()
        >>> with store.transaction() as tx:
        ...     tx.get_meta("missing") is None
        True
    """

    def __init__(self) -> None:
        self._data = _Data()
        self._lock = threading.Lock()
        self._owner: int | None = None
        self._serial = object()  # tells this store's cache tokens from another's
        self._begun = 0

    def __repr__(self) -> str:
        return f"MemoryStore(events={len(self._data.events)})"

    def transaction(self) -> AbstractContextManager[_MemoryTransaction]:
        """A transaction holding the store's lock: undone if the block raises.

        Raises:
            StoreError: A transaction of this store is already open in this
                thread (transactions do not nest).
        """
        return _Scope(self)

    def joined(self, connection: Any) -> AbstractContextManager[_MemoryTransaction]:
        """Refused: only a PostgresStore joins the caller's transaction."""
        raise cannot_join(self)

    def scrub(self, *, vacuum: bool = False) -> None:
        """Nothing to do: deleted data is gone from memory once nothing refers to it."""

    def close(self) -> None:
        """Nothing to release; the data stays readable until garbage-collected."""
