"""Ranked scores: each subject's latest values kept in the store's index as they change.

A model's ``ranked`` scores are written to the store (``Transaction.save_ranks``)
whenever an evaluation finds a value, or the time at which time alone may change
it, different from what the store holds; ``client.top()`` then reads the highest
values straight off the index. A value that time alone may have changed since (a
window's exit, an ``idle()`` flip) is re-evaluated first (``stale_ranks``), so
what ``top()`` returns is current at the time it is asked.
"""

from __future__ import annotations

from ._convert import from_us
from ._engine import Evaluation, Plan
from ._model import Model
from ._session import Subject
from .stores._base import Rank, Transaction

__all__ = ["Ranking"]


class Ranking:
    """The ranked scores of one model, and their writes (see the module docstring)."""

    def __init__(self, model: Model, plan: Plan) -> None:
        self.model = model.name
        self.names = model.ranked
        self._plan = plan

    def record(self, tx: Transaction, subject: Subject, ev: Evaluation) -> None:
        """Store the subject's ranked values ``ev`` found (those the store lacks)."""
        held = subject.ranks
        if held is None:
            held = subject.ranks = {}
        changed: list[Rank] = []
        state = subject.state
        for name in self.names:
            value = ev.scores[name]
            changes = self._plan.score_changes(state, name, ev.t)
            if held.get(name) != (value, changes):
                held[name] = (value, changes)
                changed.append(Rank(name, value, None if changes is None else from_us(changes)))
        if changed:
            tx.save_ranks(self.model, subject.kind, subject.id, changed)
