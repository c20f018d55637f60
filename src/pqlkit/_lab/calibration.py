"""``pqlkit.calibrate``: fit signal weights on an earlier period, check them on a later one.

The history is replayed once with the model (as a backtest does), noting at each
snapshot every eligible subject's signal truth values and whether it converts
within the horizon. The snapshots whose horizon ends before the *cutoff* (by
default, half-way through the history) are the fitting period: an L2-regularised
logistic regression of converting on the signals (Newton's method on the counts of
each pattern of signal values: exact, and quick for tens of signals), whose
weights become integer points, and whose threshold is the one meeting the target
flag rate or weekly capacity on that period. The snapshots after the cutoff are
the held-out period: the original and the suggested model are backtested on them
side by side. No figure of the held-out backtest was seen by the fit.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import attrs

from .. import _dsl as d
from .._convert import from_us, micros, to_us
from .._engine import Evaluation
from .._events import SubjectKind
from .._model import Model
from ..exceptions import ValidationError
from .backtesting import backtest, measure
from .page import SweepPoint
from .report import Report

__all__ = ["Calibration", "SweepRow", "calibrate"]

_SCORE = "calibrated"
_SCALE = 50  # the strongest signal's points


@attrs.frozen
class SweepRow:
    """One threshold of the suggested score, on the fitting period.

    Attributes:
        threshold: Flag when the score is at least this.
        flag_rate: The share of eligible (subject, snapshot) pairs flagged.
        flagged_per_week: How many were flagged a week, on average.
        precision: The conversion rate of the flagged.
        recall: The share of conversions flagged first.
        lift: ``precision`` over the conversion rate of the unflagged.
    """

    threshold: int
    flag_rate: float
    flagged_per_week: float
    precision: float | None
    recall: float | None
    lift: float | None


@attrs.frozen
class Calibration:
    """What :func:`pqlkit.calibrate` suggests, and how it did on held-out data.

    Attributes:
        model: The suggested :class:`~pqlkit.Model`: the original's signals and
            scores, a score ``"calibrated"`` (the fitted points) and a rule
            ``score("calibrated") >= threshold`` (``pql``, or ``pqa`` for a model
            with only that rule; the other rule is kept).
        points: Signal name to its integer points (signals fitted to 0 left out).
        threshold: The suggested rule's threshold.
        weights: Signal name to its fitted log-odds weight (``intercept`` apart).
        intercept: The fitted intercept.
        sweep: Every useful threshold on the fitting period (:class:`SweepRow`).
        kind: ``"pql"`` (users) or ``"pqa"`` (accounts): the rule fitted.
        cutoff: Where the fitting period ends and the held-out one starts.
        fitted_pairs: (subject, snapshot) pairs the fit learned from.
        fitted_positives: Of them, the ones that converted within the horizon.
        report: The held-out backtest, ``"original"`` beside ``"suggested"``
            (``report.comparison("original", "suggested")``).
        target_rate: The flag rate asked for (None when a capacity was).
        capacity_per_week: The weekly volume asked for (None when a rate was).
    """

    model: Model
    points: Mapping[str, int]
    threshold: int
    weights: Mapping[str, float]
    intercept: float
    sweep: tuple[SweepRow, ...]
    kind: str
    cutoff: datetime
    fitted_pairs: int
    fitted_positives: int
    report: Report
    target_rate: float | None
    capacity_per_week: float | None

    def as_code(self) -> str:
        """The suggested score and rule as Python, to paste into the model's ``Model(...)``."""
        noun = "users" if self.kind == "pql" else "accounts"
        fitted = f"{self.fitted_pairs:,} snapshots of {noun}"
        lines = [
            f"# pqlkit.calibrate: fitted on {fitted} up to {self.cutoff:%Y-%m-%d},"
            f" checked on the snapshots after it",
            f'scores={{"{_SCORE}": {_points_code(self.points)}}},',
            f'{self.kind}=score("{_SCORE}") >= {self.threshold},',
        ]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """Everything as JSON-ready data: the fields (``report`` as its ``to_dict()``,
        ``cutoff`` ISO 8601, the suggested model as ``model``'s name) and ``code``."""
        return {
            "model": self.model.name,
            "kind": self.kind,
            "points": dict(self.points),
            "threshold": self.threshold,
            "weights": dict(self.weights),
            "intercept": self.intercept,
            "cutoff": self.cutoff.isoformat(),
            "fitted_pairs": self.fitted_pairs,
            "fitted_positives": self.fitted_positives,
            "target_rate": self.target_rate,
            "capacity_per_week": self.capacity_per_week,
            "code": self.as_code(),
            "sweep": [attrs.asdict(row) for row in self.sweep],
            "report": self.report.to_dict(),
        }

    def table(self) -> str:
        """The suggestion, the sweep around its threshold, and the held-out report, as text."""
        target = (
            f"at most {self.capacity_per_week:g} a week"
            if self.capacity_per_week is not None
            else f"a flag rate of at most {self.target_rate:.0%}"
        )
        lines = [
            f"Calibration of {self.report['original'].model!r}: {self.kind} fitted on"
            f" {self.fitted_pairs:,} snapshots ({self.fitted_positives:,} converting) up to"
            f" {self.cutoff:%Y-%m-%d}, for {target}",
            "",
            "Paste into the model:",
            *(f"    {line}" for line in self.as_code().splitlines()[1:]),
            "",
            "Threshold sweep on the fitting period:",
            "  threshold  flag rate  per week  precision  recall   lift",
        ]
        for row in self.sweep:
            mark = "  <- suggested" if row.threshold == self.threshold else ""
            lines.append(
                f"  {row.threshold:>9}  {row.flag_rate:>9.1%}  {row.flagged_per_week:>8.1f}"
                f"  {_pct(row.precision):>9}  {_pct(row.recall):>6}  {_num(row.lift):>5}{mark}"
            )
        lines += ["", "On the held-out period (never seen by the fit):", "", self.report.table()]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()

    def to_html(self, path: str | os.PathLike[str]) -> None:
        """The held-out report page, with the threshold sweep (needs ``pqlkit[lab]``)."""
        from .page import render_page

        sweep: list[SweepPoint] = [
            (float(r.threshold), r.flag_rate, r.precision, r.recall, r.lift) for r in self.sweep
        ]
        title = f"Calibration of {self.report['original'].model!r}: held-out backtest"
        Path(path).write_text(render_page(self.report, sweep, title), encoding="utf-8")


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _points_code(points: Mapping[str, int]) -> str:
    if all(name.isidentifier() for name in points):
        return "points(" + ", ".join(f"{n}={v}" for n, v in points.items()) + ")"
    return "points(**{" + ", ".join(f"{n!r}: {v}" for n, v in points.items()) + "})"


def calibrate(
    model: Model,
    events: object,
    *,
    outcome: object,
    horizon: timedelta = timedelta(days=30),
    target_rate: float | None = None,
    capacity_per_week: float | None = None,
    split: float = 0.5,
    l2: float = 1.0,
    step: timedelta = timedelta(days=7),
    lookback: timedelta = timedelta(days=90),
    start: datetime | None = None,
    end: datetime | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Calibration:
    """Fit weights for a model's signals and suggest a threshold, checked on held-out data.

    Replays the history as :func:`pqlkit.backtest` does; the snapshots whose horizon
    ends before the cutoff (``split`` of the way through the history) fit an
    L2-regularised logistic regression of converting on the signals' truth values,
    whose weights become integer points (the strongest signal 50), and the threshold
    is chosen on the same period: the lowest one flagging at most ``target_rate`` of
    the eligible subjects (default 10%), or at most ``capacity_per_week`` a week. The
    original and the suggested model are then backtested on the snapshots after the
    cutoff, which the fit never saw.

    Args:
        model: The model whose signals to weigh (its ``pql`` over users; its ``pqa``
            over accounts when it has no ``pql``).
        events: The history, as for :func:`pqlkit.backtest`.
        outcome: What converting is, as for :func:`pqlkit.backtest`.
        horizon: How soon after a snapshot a conversion counts.
        target_rate: The share of eligible subjects to flag (0 < rate < 1).
        capacity_per_week: How many subjects sales can take a week (instead of
            ``target_rate``).
        split: The share of the history to fit on (the rest is held out).
        l2: The strength of the L2 penalty on the weights (0: none).
        step: The time between snapshots.
        lookback: How recent an event must be for a subject to be eligible.
        start: Where the history starts counting (as for the backtest).
        end: Where it ends.
        progress: Called with (events replayed, events in all), as the backtest's.

    Returns:
        The :class:`Calibration`: ``.model``, ``.as_code()``, ``.sweep``, ``.report``.

    Raises:
        ValidationError: A bad argument, naming it; a model with no signals; a
            history too short for both periods, or with no conversion to fit.
    """
    if not isinstance(model, Model):
        raise ValidationError("model", f"must be a pqlkit.Model, got {type(model).__name__}")
    if not model.signals:
        raise ValidationError("model", f"{model.name!r} has no signals to weigh")
    if target_rate is not None and capacity_per_week is not None:
        raise ValidationError("target_rate", "give target_rate or capacity_per_week, not both")
    if capacity_per_week is not None:
        if not _number(capacity_per_week) or not capacity_per_week > 0:
            raise ValidationError(
                "capacity_per_week", f"must be a positive number, got {capacity_per_week!r}"
            )
    else:
        if target_rate is None:
            target_rate = 0.10
        if not _number(target_rate) or not 0 < target_rate < 1:
            raise ValidationError("target_rate", f"must be between 0 and 1, got {target_rate!r}")
    if not _number(split) or not 0 < split < 1:
        raise ValidationError("split", f"must be between 0 and 1, got {split!r}")
    if not _number(l2) or not l2 >= 0:
        raise ValidationError("l2", f"must be a number >= 0, got {l2!r}")
    kind: SubjectKind = "user" if model.pql is not None else "account"
    names = list(model.signals)
    # (snapshot time, signal values as bits) -> [pairs, positives]
    cells: dict[tuple[int, int], list[int]] = {}

    def observe(t: int, k: SubjectKind, _: str, __: str, ev: Evaluation, positive: bool) -> None:
        if k != kind:
            return
        signals = ev.signals
        bits = 0
        for i, name in enumerate(names):
            if signals[name]:
                bits |= 1 << i
        cell = cells.get((t, bits))
        if cell is None:
            cell = cells[(t, bits)] = [0, 0]
        cell[0] += 1
        if positive:
            cell[1] += 1

    full = measure(
        model,
        events,
        outcome=outcome,
        horizon=horizon,
        start=start,
        end=end,
        step=step,
        lookback=lookback,
        progress=progress,
        observe=observe,
    )
    assert full.start is not None
    assert full.end is not None
    first, last = to_us(full.start), to_us(full.end)
    cutoff = first + int((last - first) * split)
    horizon_us = micros(horizon)
    fit_cells = {key: c for key, c in cells.items() if key[0] + horizon_us <= cutoff}
    fit_times = sorted({to_us(s) for s in full.snapshots if to_us(s) + horizon_us <= cutoff})
    held_out = [s for s in full.snapshots if to_us(s) > cutoff]
    if not fit_times or not held_out:
        raise ValidationError(
            "events",
            f"the history ({full.start:%Y-%m-%d} to {full.end:%Y-%m-%d}) is too short to fit"
            f" on a part and check on the rest with a {horizon.days}-day horizon and"
            f" {step.days}-day step (split {split:g})",
        )
    patterns: dict[int, list[int]] = {}
    for (_, bits), (n, pos) in fit_cells.items():
        cell = patterns.setdefault(bits, [0, 0])
        cell[0] += n
        cell[1] += pos
    pairs = sum(c[0] for c in patterns.values())
    positives = sum(c[1] for c in patterns.values())
    if positives == 0 or positives == pairs:
        raise ValidationError(
            "outcome",
            f"no {'conversions' if positives == 0 else 'non-conversions'} in the fitting period"
            f" (up to {from_us(cutoff):%Y-%m-%d}): there is nothing to fit",
        )
    intercept, weights = fit_logistic(
        [(_bits(b, len(names)), n, pos) for b, (n, pos) in patterns.items()], float(l2)
    )
    strongest = max(abs(w) for w in weights) or 1.0
    pts = {
        name: round(w / strongest * _SCALE)
        for name, w in sorted(zip(names, weights, strict=True), key=lambda nw: -nw[1])
    }
    points = {name: p for name, p in pts.items() if p != 0}
    weeks = len(fit_times) * (step / timedelta(days=7))
    sweep = _sweep(fit_cells, points, names, weeks)
    threshold = _pick(sweep, target_rate, capacity_per_week)
    suggested = _suggest(model, points, threshold, kind)
    report = backtest(
        {"original": model, "suggested": suggested},
        events,
        outcome=outcome,
        horizon=horizon,
        start=from_us(cutoff),
        end=full.end,
        step=step,
        lookback=lookback,
    )
    return Calibration(
        model=suggested,
        points=points,
        threshold=threshold,
        weights=dict(zip(names, weights, strict=True)),
        intercept=intercept,
        sweep=tuple(sweep),
        kind="pql" if kind == "user" else "pqa",
        cutoff=from_us(cutoff),
        fitted_pairs=pairs,
        fitted_positives=positives,
        report=report,
        target_rate=None if capacity_per_week is not None else target_rate,
        capacity_per_week=capacity_per_week,
    )


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _bits(bits: int, n: int) -> list[float]:
    return [1.0 if bits >> i & 1 else 0.0 for i in range(n)]


def fit_logistic(
    rows: Sequence[tuple[Sequence[float], int, int]], l2: float, iterations: int = 50
) -> tuple[float, list[float]]:
    """An L2-regularised logistic regression by Newton's method on grouped rows.

    Each row is ``(features, trials, successes)``. Minimises the negative
    log-likelihood plus ``l2 / 2 * |w|^2`` (the intercept is not penalised).
    Returns ``(intercept, weights)``.
    """
    k = len(rows[0][0]) if rows else 0
    beta = [0.0] * (k + 1)  # intercept first
    for _ in range(iterations):
        grad = [0.0] * (k + 1)
        hess = [[0.0] * (k + 1) for _ in range(k + 1)]
        for features, n, pos in rows:
            x = [1.0, *features]
            z = sum(b * v for b, v in zip(beta, x, strict=True))
            p = 1.0 / (1.0 + math.exp(-z)) if z > -700 else 0.0
            residual = n * p - pos
            weight = n * p * (1.0 - p)
            for i in range(k + 1):
                if x[i]:
                    grad[i] += residual * x[i]
                    row = hess[i]
                    for j in range(k + 1):
                        if x[j]:
                            row[j] += weight * x[i] * x[j]
        for i in range(1, k + 1):
            grad[i] += l2 * beta[i]
            hess[i][i] += l2
        for i in range(k + 1):
            hess[i][i] += 1e-9  # a signal that never holds: keep the system solvable
        delta = _solve(hess, grad)
        beta = [b - s for b, s in zip(beta, delta, strict=True)]
        if max(abs(s) for s in delta) < 1e-9:
            break
    return beta[0], beta[1:]


def _solve(a: list[list[float]], b: list[float]) -> list[float]:
    """``a x = b`` by Gaussian elimination with partial pivoting (``a`` is small, and
    positive definite: the Hessian plus a ridge)."""
    n = len(b)
    m = [[*row, rhs] for row, rhs in zip(a, b, strict=True)]
    for col in range(n):
        pivot = max(range(col, n), key=lambda r: abs(m[r][col]))
        m[col], m[pivot] = m[pivot], m[col]
        for r in range(col + 1, n):
            factor = m[r][col] / m[col][col]
            for c in range(col, n + 1):
                m[r][c] -= factor * m[col][c]
    x = [0.0] * n
    for r in range(n - 1, -1, -1):
        x[r] = (m[r][n] - sum(m[r][c] * x[c] for c in range(r + 1, n))) / m[r][r]
    return x


def _sweep(
    cells: Mapping[tuple[int, int], list[int]],
    points: Mapping[str, int],
    names: Sequence[str],
    weeks: float,
) -> list[SweepRow]:
    """Every threshold at which the flagged set changes, from the highest score down."""
    by_score: dict[int, list[int]] = {}
    for (_, bits), (n, pos) in cells.items():
        total = sum(points.get(name, 0) for i, name in enumerate(names) if bits >> i & 1)
        cell = by_score.setdefault(total, [0, 0])
        cell[0] += n
        cell[1] += pos
    eligible = sum(c[0] for c in by_score.values())
    positives = sum(c[1] for c in by_score.values())
    rows: list[SweepRow] = []
    flagged = tp = 0
    for value in sorted(by_score, reverse=True):
        n, pos = by_score[value]
        flagged += n
        tp += pos
        precision = tp / flagged if flagged else None
        rest = eligible - flagged
        unflagged = (positives - tp) / rest if rest else None
        rows.append(
            SweepRow(
                threshold=value,
                flag_rate=flagged / eligible,
                flagged_per_week=flagged / weeks,
                precision=precision,
                recall=tp / positives if positives else None,
                lift=precision / unflagged if precision is not None and unflagged else None,
            )
        )
    return rows


def _pick(sweep: Sequence[SweepRow], rate: float | None, capacity: float | None) -> int:
    """The lowest threshold within the target (the most conversions it can flag), or the
    highest when even that flags too many."""
    fits = [
        row
        for row in sweep
        if (capacity is not None and row.flagged_per_week <= capacity)
        or (capacity is None and rate is not None and row.flag_rate <= rate)
    ]
    return fits[-1].threshold if fits else sweep[0].threshold


def _suggest(model: Model, points: Mapping[str, int], threshold: int, kind: SubjectKind) -> Model:
    rule = d.score(_SCORE) >= threshold
    scores = {n: e for n, e in model.scores.items() if n != _SCORE}
    scores[_SCORE] = d.points(**points)
    return Model(
        f"{model.name}-calibrated",
        signals=dict(model.signals),
        scores=scores,
        pql=rule if kind == "user" else model.pql,
        pqa=rule if kind == "account" else model.pqa,
        requalify_after=model.requalify_after,
        on_retune=model.on_retune,
        ranked=model.ranked,
    )
