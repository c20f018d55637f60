"""The terminal table of a backtest report (what ``print(report)`` shows)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .report import ModelComparison, Report, RuleReport

__all__ = ["render"]

_WIDTH = 78


def render(report: Report) -> str:
    """The report as plain text, one block per model and rule, then comparisons and warnings."""
    lines: list[str] = []
    title = f"Backtest of {', '.join(repr(n) for n in report.models)} on {report.source}"
    lines += [title, "=" * min(_WIDTH, len(title))]
    lines.append(
        f"outcome: {report.outcome}; horizon {_span(report.horizon)}, step {_span(report.step)},"
        f" lookback {_span(report.lookback)}"
    )
    if report.first_event is not None and report.last_event is not None:
        extra = f", {report.duplicates:,} duplicates skipped" if report.duplicates else ""
        lines.append(
            f"history: {report.events:,} events{extra}, {report.users:,} users,"
            f" {report.accounts:,} accounts, {report.first_event:%Y-%m-%d} to"
            f" {report.last_event:%Y-%m-%d}; {len(report.snapshots)} snapshots"
        )
    for name, model in report.models.items():
        for rule in (model.pql, model.pqa):
            if rule is not None:
                lines.append("")
                lines += _rule(f"{name} (as recorded)" if model.recorded else name, rule)
    for comparison in report.comparisons:
        lines.append("")
        lines += _comparison(comparison)
    if report.warnings:
        lines += ["", "Warnings:"]
        lines += [f"  ! {w}" for w in report.warnings]
    return "\n".join(lines)


def _rule(name: str, r: RuleReport) -> list[str]:
    noun = "users" if r.kind == "pql" else "accounts"
    band = "" if r.healthy is None else ("  (healthy 5-15%)" if r.healthy else "  (outside 5-15%!)")
    out = [
        f"{name} -- {r.kind} ({noun})",
        "-" * len(f"{name} -- {r.kind} ({noun})"),
        f"  eligible       {r.eligible:>10,} {noun[:-1]}-snapshots of {r.subjects:,} {noun};"
        f" {r.conversions:,} converted",
        f"  flag rate      {_pct(r.flag_rate):>10}{band};"
        f" {_num(r.flagged_per_week, '.0f')} flagged a week (median)",
        f"  precision      {_pct(r.precision):>10}  {_ci(r.precision_ci, _pct)}"
        f"   (unflagged convert at {_pct(r.unflagged_rate)})",
        f"  recall         {_pct(r.recall):>10}  {_ci(r.recall_ci, _pct)}",
        f"  lift           {_num(r.lift, '.2f'):>10}  {_ci(r.lift_ci, lambda v: _num(v, '.2f'))}",
        f"  qualified      {r.qualified:>10,} {noun}; median time to {r.kind}"
        f" {_span(r.time_to_qualify_median)}",
        f"  converted      {r.converted:>10,}; {_pct(r.converted_after_qualifying_share)} of them"
        f" qualified 24 h+ before (lead time median {_span(r.lead_time_median)},"
        f" p90 {_span(r.lead_time_p90)})",
    ]
    if r.scores:
        out.append("")
        out += _grid(
            ["score", "AUC", "top 10%", "top 20%", "top 30%", "deciles", "Brier"],
            [
                [
                    score,
                    _num(s.auc, ".3f"),
                    _pct(s.top10),
                    _pct(s.top20),
                    _pct(s.top30),
                    "-" if s.increasing is None else "rising" if s.increasing else "NOT rising",
                    _num(s.brier, ".4f"),
                ]
                for score, s in r.scores.items()
            ],
        )
        out.append("  conversion rate by decile, highest scores first:")
        width = max(len(name) for name in r.scores)
        for score, s in r.scores.items():
            rates = " ".join(_pct(d.rate) for d in s.deciles) or "-"
            out.append(f"    {score:<{width}}  {rates}")
    if r.signals:
        out.append("")
        ranked = sorted(r.signals.items(), key=lambda kv: -(kv[1].lift or 0.0))
        out += _grid(
            ["signal", "holds", "converts if true", "if false", "lift"],
            [
                [
                    signal,
                    _pct(s.holds_rate),
                    _pct(s.rate_when_true),
                    _pct(s.rate_when_false),
                    _num(s.lift, ".2f"),
                ]
                for signal, s in ranked
            ],
        )
    return out


def _comparison(c: ModelComparison) -> list[str]:
    head = f"{c.b} vs {c.a} -- {c.kind} ({c.b} minus {c.a})"
    return [
        head,
        "-" * len(head),
        f"  precision  {_pts(c.precision_diff):>12}  {_ci(c.precision_diff_ci, _pts)}",
        f"  recall     {_pts(c.recall_diff):>12}  {_ci(c.recall_diff_ci, _pts)}",
        f"  lift       {_num(c.lift_diff, '+.2f'):>12}"
        f"  {_ci(c.lift_diff_ci, lambda v: _num(v, '+.2f'))}",
        f"  flagged by {c.a} only: {c.only_a:,} subjects"
        + (f" (e.g. {', '.join(c.only_a_sample[:3])})" if c.only_a_sample else ""),
        f"  flagged by {c.b} only: {c.only_b:,} subjects"
        + (f" (e.g. {', '.join(c.only_b_sample[:3])})" if c.only_b_sample else ""),
    ]


def _grid(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    fmt = "  " + "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    return [fmt.format(*header), *(fmt.format(*row) for row in rows)]


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _pts(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:+.1f} pts"


def _num(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _ci(interval: tuple[float, float] | None, fmt: object) -> str:
    if interval is None:
        return ""
    show = fmt if callable(fmt) else str
    return f"[{show(interval[0])}, {show(interval[1])}]"


def _span(value: timedelta | None) -> str:
    if value is None:
        return "-"
    hours = value.total_seconds() / 3600
    if hours < 48:
        return f"{hours:.0f}h" if hours >= 1 else f"{value.total_seconds() / 60:.0f}min"
    return f"{hours / 24:.1f}d".replace(".0d", "d")
