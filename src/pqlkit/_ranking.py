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
        """Store the subject's ranked values ``ev`` found, where the store's differ.

        The stored time at which time alone may change a value needs only be early
        enough: while it is still ahead, a later one (a window's exit pushed back by a
        newer event, an ``idle()`` flip by any event) is not written. At worst the
        subject is re-evaluated once early (``top()``), and its time written then. So a
        ``track()`` writes a rank only when a value changes, or may change sooner than
        the store says.
        """
        held = subject.ranks
        if held is None:
            held = subject.ranks = {}
        changed: list[Rank] = []
        state = subject.state
        for name in self.names:
            value = ev.scores[name]
            changes = self._plan.score_changes(state, name, ev.t)
            stored = held.get(name)
            if stored is not None and stored[0] == value:
                due = stored[1]
                if due == changes:
                    continue
                if due is not None and due > ev.t and (changes is None or changes >= due):
                    continue  # the store's time is still ahead, and early enough
            held[name] = (value, changes)
            changed.append(Rank(name, value, None if changes is None else from_us(changes)))
        if changed:
            # at=: the store keeps a rank of its own that is early enough (when this
            # client did not know it: loaded cold, or another process wrote it)
            tx.save_ranks(self.model, subject.kind, subject.id, changed, at=from_us(ev.t))
