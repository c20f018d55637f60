"""Traits as evaluations see them: a subject's and its account's, read and written through
the warm cache, and the :class:`~pqlkit._engine.Context` of one evaluation.

A user's account is the one of its latest event with one, else the one ``identify()``
gave it (kept with its traits as ``ACCOUNT_TRAIT``).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from ._engine import Context, Plan
from ._events import SubjectKind
from ._session import Session, Subject
from .stores._base import Transaction

__all__ = ["ACCOUNT_TRAIT", "Traits"]

ACCOUNT_TRAIT = "$account_id"  # the account given to identify(), kept with the user's traits

_NO_TRAITS: Mapping[str, Any] = MappingProxyType({})


class Traits:
    """One client's traits, through its session's warm cache."""

    def __init__(self, session: Session, plan: Plan) -> None:
        self._warm = session.warm
        self._user = plan.reads_user_traits
        self._account = plan.reads_account_traits

    def get(self, tx: Transaction, kind: SubjectKind, sid: str) -> dict[str, Any]:
        """The subject's stored traits (do not modify the dict returned)."""
        warm = self._warm
        if not warm.active:
            return tx.traits(kind, sid)
        traits = warm.traits.get((kind, sid))
        if traits is None:
            traits = warm.traits[(kind, sid)] = tx.traits(kind, sid)
        return traits

    def set(self, tx: Transaction, kind: SubjectKind, sid: str, traits: dict[str, Any]) -> None:
        tx.set_traits(kind, sid, traits)
        if self._warm.active:
            self._warm.traits[(kind, sid)] = traits

    def account_of(self, tx: Transaction, subject: Subject) -> str | None:
        """A user's account: of its latest event with one, else from ``identify()``."""
        if subject.state.account is not None:
            return str(subject.state.account[1])
        acc = self.get(tx, "user", subject.id).get(ACCOUNT_TRAIT)
        return acc if isinstance(acc, str) else None

    def context(self, tx: Transaction, subject: Subject, *, full: bool = True) -> Context:
        """The traits an evaluation sees; with ``full=False`` only those the model reads."""
        user = full or self._user
        account = full or self._account
        # _NO_TRAITS, not a new {}: values stay kept while an evaluation sees the
        # very same traits objects (see SubjectState.memo)
        if subject.kind == "account":
            return Context(
                _NO_TRAITS, self.get(tx, "account", subject.id) if account else _NO_TRAITS
            )
        acc = subject.account
        return Context(
            self.get(tx, "user", subject.id) if user else _NO_TRAITS,
            self.get(tx, "account", acc) if account and acc is not None else _NO_TRAITS,
        )
