"""Rebuilding subjects' states from the log: some of them (after ``alias()`` or
``forget()`` moved their events), or every one (after a model change, or
``client.rebuild()``) in short transactions that let other writers in.

A subject is rebuilt by replaying its log (``_replay``), evaluating it as of its
newest event (``_firing``: what that fires is recorded) and storing it. A rebuild of
every subject is claimed in the store's metadata, so that clients that need the
same one wait for it, and one that dies is resumed by the next; the model's
fingerprint is stored when every subject is done.
"""

from __future__ import annotations

import functools
import json
import logging
import random
import threading
import time
import uuid
from collections.abc import Sequence
from typing import Literal

from ._events import SubjectKind
from ._firing import Firing
from ._model import Model
from ._replay import Replay
from ._session import Outcome, Session
from ._traits import Traits
from .exceptions import StoreError
from .stores._base import Transaction

__all__ = ["Rebuild", "fingerprint_key"]

logger = logging.getLogger("pqlkit")

_REBUILD_SLICE = 0.05  # seconds a rebuild transaction may take (it rebuilds one subject at least)
_REBUILD_PAUSE = 0.02  # then the write lock is left free this long (SQLite's waiters poll it)
_REBUILD_PAGE = 5_000  # events per transaction while listing the subjects to rebuild
_REBUILD_LEASE = 10.0  # seconds (wall clock) a rebuild's claim lasts unless renewed
_REBUILD_POLL = 0.05  # first pause of a client waiting for another's rebuild (doubling...)
_REBUILD_POLL_MAX = 1.0  # ...up to this


class _Claim:
    """A rebuild in progress, kept in the store's metadata (``model:<name>:rebuild``).

    ``owner`` (one per ``_rebuild_all`` call) renews ``lease`` (wall-clock seconds)
    in each of its transactions; ``after`` is the last subject it rebuilt (the
    subjects go in sorted order), where a client that finds the claim expired
    resumes it.
    """

    __slots__ = ("after", "fingerprint", "lease", "owner")

    def __init__(self, fingerprint: str, owner: str, lease: float, after: tuple[str, str]) -> None:
        self.fingerprint = fingerprint
        self.owner = owner
        self.lease = lease
        self.after = after

    @staticmethod
    def read(tx: Transaction, key: str) -> _Claim | None:
        text = tx.get_meta(key)
        if not text:
            return None
        data = json.loads(text)
        kind, sid = data["after"]
        return _Claim(
            str(data["fingerprint"]), str(data["owner"]), float(data["lease"]), (kind, sid)
        )

    def write(self, tx: Transaction, key: str) -> None:
        data = {
            "fingerprint": self.fingerprint,
            "owner": self.owner,
            "lease": self.lease,
            "after": list(self.after),
        }
        tx.set_meta(key, json.dumps(data))


def fingerprint_key(model: str) -> str:
    """The metadata key of the fingerprint ``model``'s stored states were built with."""
    return f"model:{model}:fingerprint"


class Rebuild:
    """The rebuilds of one model's derived state, as one client runs them."""

    def __init__(
        self, session: Session, model: Model, replay: Replay, traits: Traits, firing: Firing
    ) -> None:
        self._session = session
        self.model = model
        self._replay = replay
        self._traits = traits
        self._firing = firing
        self._lock = threading.Lock()

    def subjects(
        self,
        tx: Transaction,
        keys: Sequence[tuple[SubjectKind, str]],
        out: Outcome,
        *,
        deliver: bool = True,
    ) -> int:
        """Rebuild these subjects from the log and evaluate them; return the users' events.

        The caller holds their locks, and has emptied the warm cache: the states are replaced.
        """
        name = self.model.name
        replayed = 0
        for kind, sid in keys:
            subject = self._replay.subject(tx, kind, sid)
            newest = subject.state.newest
            if newest is None:
                tx.delete_state(name, kind, sid)
                continue
            if kind == "user":
                subject.account = self._traits.account_of(tx, subject)
                replayed += subject.state.events
            due = self._firing.evaluate(tx, subject, newest, out, latch=False, deliver=deliver)
            self._session.store_state(tx, name, subject, due.at)
        return replayed

    @property
    def fingerprint_key(self) -> str:
        """The metadata key of the fingerprint the stored states were built with."""
        return fingerprint_key(self.model.name)

    @property
    def key(self) -> str:
        """The metadata key of the rebuild's claim."""
        return f"model:{self.model.name}:rebuild"

    def ensure(self, *, deliver: bool) -> None:
        """Rebuild if the stored states were built by another version of the model (a
        store with no events yet just takes this one's fingerprint)."""
        with self._session.tx() as tx:
            stored = tx.get_meta(self.fingerprint_key)
            if stored == self.model.fingerprint:
                return
            if stored is None and next(iter(tx.events(limit=1)), None) is None:
                tx.set_meta(self.fingerprint_key, self.model.fingerprint)
                return
        self.run(only_if_stale=True, deliver=deliver)

    def run(self, *, only_if_stale: bool = False, deliver: bool = True) -> tuple[int, Outcome]:
        """Rebuild every subject's state from the log, in short transactions.

        Other writers get in between them: each transaction locks and rebuilds
        a few subjects from their whole log as it is then (a subject tracked
        meanwhile is either rebuilt with its new event or loads the rebuilt
        state and folds it in), and the write lock is then left free for a
        moment. The rebuild is claimed in the store's metadata (see
        :class:`_Claim`): other clients wait for it rather than do it again, and
        the fingerprint is stored only when every subject is done. A rebuild
        that dies (its claim no longer renewed) is resumed by the next client
        that finds the fingerprint stale; one that raises releases its claim.
        Returns the users' events replayed and what was enqueued.
        """
        owner = uuid.uuid4().hex
        out = Outcome()
        replayed = 0
        poll = _REBUILD_POLL
        with self._lock:
            while True:
                status, after = self._session.write(
                    lambda tx: self._claim(tx, owner, only_if_stale)
                )
                if status == "done":
                    return replayed, out
                if status == "wait":  # for another client's rebuild
                    time.sleep(poll * random.uniform(0.5, 1.5))
                    poll = min(poll * 2, _REBUILD_POLL_MAX)
                    continue
                try:
                    done, count = self._run(owner, after, deliver, out)
                except BaseException:
                    self._release(owner)
                    raise
                replayed += count
                if done:
                    return replayed, out
                poll = _REBUILD_POLL  # another client took it over: wait for it

    def _claim(
        self, tx: Transaction, owner: str, only_if_stale: bool
    ) -> tuple[Literal["done", "wait", "run"], tuple[str, str]]:
        """Claim the rebuild for ``owner`` ("run", and the last subject done to resume
        after: ``("", "")`` for none); "wait" while another client's claim is live;
        "done" if the fingerprint is stored already (with ``only_if_stale``)."""
        tx.lock([self.key])
        claim = _Claim.read(tx, self.key)
        now = time.time()
        after = ("", "")
        if claim is not None and claim.owner != owner and claim.lease > now:
            return "wait", after
        fingerprint = self.model.fingerprint
        if only_if_stale:
            if tx.get_meta(self.fingerprint_key) == fingerprint:
                return "done", after  # another client rebuilt it meanwhile
            if claim is not None and claim.fingerprint == fingerprint:
                after = claim.after  # left unfinished: resume it
        if after == ("", ""):  # a fresh rebuild: before any state is rewritten from the log
            tx.check_integrity()
        _Claim(fingerprint, owner, now + _REBUILD_LEASE, after).write(tx, self.key)
        return "run", after

    def _run(
        self, owner: str, after: tuple[str, str], deliver: bool, out: Outcome
    ) -> tuple[bool, int]:
        """Rebuild the subjects after ``after`` in batches; (finished, users' events
        replayed). Not finished: another client took the claim over."""
        keys = self._keys(owner)
        if keys is None:
            return False, 0
        if after != ("", ""):
            keys = [key for key in keys if key > after]
        replayed = 0
        start = 0
        while start < len(keys):
            if start:
                time.sleep(_REBUILD_PAUSE)  # let other writers in
            batch = self._session.write(
                functools.partial(self._batch, owner=owner, keys=keys, start=start, deliver=deliver)
            )
            if batch is None:
                return False, replayed
            start, count, fired = batch
            replayed += count
            out.qualified += fired.qualified
            out.disqualified += fired.disqualified
            out.enqueued = out.enqueued or fired.enqueued
        return self._session.write(lambda tx: self._finish(tx, owner)), replayed

    def _keys(self, owner: str) -> list[tuple[SubjectKind, str]] | None:
        """Every subject in the log (users by their final id), sorted; read in pages.

        The listing ends at the first page that is not full: the end of the log
        then. Subjects first seen after it are new ones, whose writers evaluated
        them with their own events (going on to the end of a log that other
        writers keep growing might never end). None if another client took the
        claim over meanwhile.
        """
        users: dict[str, str] = {}  # user id as recorded -> its final id
        accounts: set[str] = set()

        def page(
            tx: Transaction, after_seq: int
        ) -> tuple[int, int, dict[str, str], set[str]] | None:
            if not self._renew(tx, owner, None):
                return None
            new_users: dict[str, str] = {}
            new_accounts: set[str] = set()
            last = after_seq
            read = 0
            for record in tx.events(after_seq=after_seq, limit=_REBUILD_PAGE):
                last = record.seq
                read += 1
                uid = record.user_id
                if uid not in users and uid not in new_users:
                    new_users[uid] = tx.resolve(uid)
                if record.account_id is not None:
                    new_accounts.add(record.account_id)
            return last, read, new_users, new_accounts

        after_seq = 0
        while True:
            if after_seq:
                time.sleep(_REBUILD_PAUSE)  # let other writers in
            got = self._session.write(functools.partial(page, after_seq=after_seq))
            if got is None:
                return None
            after_seq, read, new_users, new_accounts = got
            users.update(new_users)
            accounts |= new_accounts
            if read < _REBUILD_PAGE:
                keys: set[tuple[SubjectKind, str]] = {("user", uid) for uid in users.values()}
                keys.update(("account", acc) for acc in accounts)
                return sorted(keys)

    def _batch(
        self,
        tx: Transaction,
        owner: str,
        keys: list[tuple[SubjectKind, str]],
        start: int,
        deliver: bool,
    ) -> tuple[int, int, Outcome] | None:
        """Rebuild ``keys[start:]`` for up to ``_REBUILD_SLICE`` s (one subject at
        least); (where to go on, users' events replayed, what fired), None if the
        claim was taken over."""
        if not self._renew(tx, owner, None):
            return None
        self._session.warm.clear()  # the states below are replaced
        out = Outcome()
        replayed = 0
        deadline = time.monotonic() + _REBUILD_SLICE
        end = start
        while end < len(keys) and (end == start or time.monotonic() < deadline):
            kind, sid = keys[end]
            end += 1
            tx.lock([f"{kind}:{sid}"])  # in sorted order, as track() takes them
            if kind == "user" and tx.resolve(sid) != sid:
                continue  # aliased since it was listed: alias() rebuilt its user
            replayed += self.subjects(tx, [(kind, sid)], out, deliver=deliver)
        self._renew(tx, owner, keys[end - 1])
        return end, replayed, out

    def _renew(self, tx: Transaction, owner: str, done: tuple[SubjectKind, str] | None) -> bool:
        """Extend ``owner``'s claim (and record ``done`` as its progress); False if
        the claim is not its own any more."""
        tx.lock([self.key])
        claim = _Claim.read(tx, self.key)
        if claim is None or claim.owner != owner:
            return False
        after = claim.after if done is None else (done[0], done[1])
        _Claim(claim.fingerprint, owner, time.time() + _REBUILD_LEASE, after).write(tx, self.key)
        return True

    def _finish(self, tx: Transaction, owner: str) -> bool:
        """Store the fingerprint and drop the claim, if it is still ``owner``'s."""
        tx.lock([self.key])
        claim = _Claim.read(tx, self.key)
        if claim is None or claim.owner != owner:
            return False
        tx.set_meta(self.fingerprint_key, claim.fingerprint)
        tx.set_meta(self.key, "")
        return True

    def _release(self, owner: str) -> None:
        """Let another client resume ``owner``'s rebuild now (best effort: it failed)."""

        def work(tx: Transaction) -> None:
            tx.lock([self.key])
            claim = _Claim.read(tx, self.key)
            if claim is not None and claim.owner == owner:
                _Claim(claim.fingerprint, owner, 0.0, claim.after).write(tx, self.key)

        try:
            self._session.write(work)
        except StoreError as error:
            logger.debug("pqlkit: rebuild claim not released: %s", error)
