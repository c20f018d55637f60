"""The explanation: the lines that say why a subject's signals, scores and rule are
what they are (``Client.explain()`` and ``Qualification.explanation``)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from .. import _dsl as d
from .accumulators import DistinctAcc
from .evaluate import Context, Eval
from .plan import Plan
from .state import SubjectKind, SubjectState

__all__ = ["explain", "explained"]


def explain(plan: Plan, s: SubjectState, t: int, kind: SubjectKind, ctx: Context) -> list[str]:
    """One line per signal (value, threshold, truth), per score (its parts), the rule,
    and each of the kind's plays (``play <name>: ... -> true``)."""
    return explained(plan, s, t, kind, ctx)[0]


def explained(
    plan: Plan, s: SubjectState, t: int, kind: SubjectKind, ctx: Context
) -> tuple[list[str], dict[str, bool], dict[str, float]]:
    """The explanation lines, and every signal and score they were computed from (what a
    qualification's payload holds: one evaluation serves both)."""
    e = Eval(plan, s, t, kind, ctx)
    lines = []
    for name, expr in plan.model.signals.items():
        truth = e.signal(name)
        lines.append(f"{name}: {_node(e, expr)} -> {_tf(truth)}")
    for name, expr in plan.model.scores.items():
        lines.append(f"{name} = {_fmt(e.score(name))}{_score(e, expr)}")
    rule_expr = plan.model.pql if kind == "user" else plan.model.pqa
    label = "pql" if kind == "user" else "pqa"
    if rule_expr is None:
        lines.append(f"{label}: never (no rule declared)")
    else:
        lines.append(f"{label}: {_node(e, rule_expr)} -> {_tf(bool(e.ev(rule_expr)))}")
    for name, p in plan.model.plays.items():  # the kind's plays, one line each
        if p.of == kind:
            lines.append(f"play {name}: {_node(e, p.condition)} -> {_tf(bool(e.ev(p.condition)))}")
    signals = {name: e.signals[name] for name in plan.model.signals}
    scores = {name: e.scores[name] for name in plan.model.scores}
    return lines, signals, scores


def _node(e: Eval, node: d.Expr) -> str:
    if isinstance(node, d.Compare):
        return f"{_operand(e, node.left)} {node.op} {_operand(e, node.right)}"
    if isinstance(node, (d.All, d.Any_)):
        sep = " & " if isinstance(node, d.All) else " | "
        return "(" + sep.join(_node(e, i) for i in node.items) + ")"
    if isinstance(node, d.AtLeast):
        inner = ", ".join(_node(e, i) for i in node.items)
        return f"at_least({node.k} of: {inner})"
    if isinstance(node, d.Not):
        item = node.item
        if isinstance(item, (d.Compare, d.IsIn, d.All, d.Any_, d.AtLeast)):
            # a statement with its values, true exactly when the item holds
            return f"not ({_node(e, item)})"
        # an item shown as "<text> = <its value>" (a signal, sequence(), absent()):
        # "not (signal('dormant') = false)" would negate a true statement while the
        # negation holds; say the negation's value, as every other part says its own
        return f"not {item.describe()} = {_tf(bool(e.ev(node)))}"
    if isinstance(node, d.IsIn):
        return f"{_operand(e, node.value)} in {d.fmt_value(node.options)}"
    if isinstance(node, d.SignalRef):
        return f"{node.describe()} = {_tf(e.signal(node.signal))}"
    return f"{node.describe()} = {_value(e, node)}"


def _operand(e: Eval, node: d.Expr) -> str:
    if isinstance(node, d.Const):
        return node.describe()
    return f"{node.describe()} = {_value(e, node)}"


def _score(e: Eval, node: d.Expr) -> str:
    if isinstance(node, d.Points):
        return _parts((s, e.signal(s), w) for s, w in node.weights)
    if isinstance(node, d.Fit):
        return _parts((c.describe(), bool(e.ev(c)), p) for c, p in node.rules)
    if isinstance(node, d.Tev):
        tp, ep, vp, elapsed, eng, vir = e.tev_parts(node)
        when = "never" if elapsed is None else _fmt(timedelta(microseconds=elapsed))
        return (
            f": time {tp:.2f} ({node.activation} after {when}; fast "
            f"{_fmt(node.fast)}, slow {_fmt(node.slow)}), engagement {ep:.2f} "
            f"({_fmt(eng)}/{_fmt(node.engagement_target)}), virality {vp:.2f} "
            f"({_fmt(vir)}/{_fmt(node.virality_target)})"
        )
    return f": {_node(e, node)}"


def _parts(parts: Iterable[tuple[str, bool, float]]) -> str:
    """A score's parts: each condition (its text, whether true) with the points it adds."""
    return ": " + ", ".join(
        f"{text} {points:+g}" if true else f"{text} 0 (false, would be {points:+g})"
        for text, true, points in parts
    )


def _value(e: Eval, node: d.Expr) -> str:
    """The node's value as text; a set that stopped growing at the count that settles
    every comparison reading it (see ``DistinctAcc.settle``) reads "N or more"."""
    v = e.ev(node)
    slot = e.plan.slot_of.get(id(node))
    if slot is not None:
        acc = e.plan.accs[slot]
        if isinstance(acc, DistinctAcc) and acc.settled_at is not None and v == acc.settled_at:
            return f"{_fmt(v)} or more"
    return _fmt(v)


def _tf(v: bool) -> str:
    return "true" if v else "false"


def _fmt(v: Any) -> str:
    if v is None:
        return "none"
    if isinstance(v, timedelta):
        secs = v.total_seconds()
        if secs >= 86400:
            return f"{secs / 86400:.3g}d"
        if secs >= 3600:
            return f"{secs / 3600:.3g}h"
        return f"{secs:.3g}s"
    if isinstance(v, float):
        return f"{v:.4g}" if not v.is_integer() else str(int(v))
    if isinstance(v, bool):
        return _tf(v)
    return repr(v) if isinstance(v, str) else str(v)
