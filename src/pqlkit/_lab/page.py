"""A backtest's report as one self-contained HTML page, its charts drawn by matplotlib.

:func:`render_page` returns the page: the headline figures of each model's rules,
the comparisons, the warnings, then the charts, each an inline SVG that
matplotlib draws (no script, no external file: the page works offline and can be
mailed). matplotlib is the ``pqlkit[lab]`` extra, imported here only, when a page
is made; without it :func:`render_page` raises an ImportError naming the extra.

Every figure printed on the page carries its place in ``Report.to_dict()``
(``data-path``, a JSON list of keys) and its exact value (``data-value``), so a
test, or a script, can check the page against the JSON.
"""

from __future__ import annotations

import html
import io
import json
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

# matplotlib is the lab extra: the mypyc build hook type-checks this module (the compiled
# ones reach it) without the extras, as a fresh clone's `make mypyc` does; there the
# ignores apply; where matplotlib is installed they are unused, which is allowed
if TYPE_CHECKING:
    from matplotlib.figure import Figure  # type: ignore[import-not-found, unused-ignore]

    from .report import Report, RuleReport

HEALTHY = (0.05, 0.15)  # as report.HEALTHY (this module comes before it)

__all__ = ["LAB_EXTRA", "SweepPoint", "render_page"]

LAB_EXTRA = "pip install 'pqlkit[lab]'"

SweepPoint = tuple[float, float | None, float | None, float | None, float | None]
"""A threshold sweep row: (threshold, flag rate, precision, recall, lift)."""

_CONVERTED = "#d1495b"
_REST = "#8d99ae"
_LINE = "#00798c"
_BAND = "#66a182"

_STYLE = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #222;
       max-width: 1080px; margin: 2em auto; padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: .2em; } h2 { margin-top: 2em; border-bottom: 1px solid #ddd; }
h3 { margin-top: 1.5em; } .meta { color: #555; margin: .1em 0; }
table { border-collapse: collapse; margin: .6em 0; }
td, th { padding: .25em .8em; text-align: right; border-bottom: 1px solid #eee; }
td:first-child, th:first-child { text-align: left; }
.warnings li { color: #8a4b00; } .ok { color: #2b7a3d; } .bad { color: #b3261e; }
.charts { display: flex; flex-wrap: wrap; gap: 1em; }
figure.chart { margin: 0; border: 1px solid #eee; padding: .4em; }
figure.chart figcaption { font-size: .9em; color: #444; max-width: 460px; }
figure.chart svg { display: block; width: 460px; height: auto; }
"""


def _matplotlib() -> Any:
    try:
        import matplotlib  # type: ignore[import-not-found, unused-ignore]
        from matplotlib.figure import Figure  # type: ignore[import-not-found, unused-ignore]
    except ImportError as error:
        raise ImportError(
            f"the HTML report draws its charts with matplotlib, which is not installed: {LAB_EXTRA}"
        ) from error
    return matplotlib, Figure


def render_page(report: Report, sweep: Sequence[SweepPoint] | None = None, title: str = "") -> str:
    """The report as one HTML page (see the module docstring).

    ``sweep``, when given (a calibration's), adds the threshold sweep chart and table.

    Raises:
        ImportError: matplotlib is missing (the message names the ``pqlkit[lab]`` extra).
    """
    matplotlib, figure_class = _matplotlib()
    page = _Page(matplotlib, figure_class)
    data = report.to_dict()
    names = ", ".join(repr(n) for n in report.models)
    heading = title or f"Backtest of {names}"
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_e(heading)}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>{_e(heading)}</h1>",
        f'<p class="meta">events: {_e(report.source)}; outcome: {_e(report.outcome)}</p>',
        f'<p class="meta">horizon {_days(data["horizon"])}, step {_days(data["step"])},'
        f" lookback {_days(data['lookback'])};"
        f" {_fig(['events'], report.events, 'count')} events,"
        f" {_fig(['users'], report.users, 'count')} users,"
        f" {_fig(['accounts'], report.accounts, 'count')} accounts,"
        f" {len(report.snapshots)} snapshots"
        f" ({_e(_date(data['first_event']))} to {_e(_date(data['last_event']))})</p>",
    ]
    if report.warnings:
        out.append('<h2>Warnings</h2><ul class="warnings">')
        out.extend(f"<li>{_e(w)}</li>" for w in report.warnings)
        out.append("</ul>")
    if sweep:
        out.append("<h2>Threshold sweep</h2>")
        out.append(_sweep_table(sweep))
        out.append('<div class="charts">')
        out.append(page.chart("sweep", "Precision and recall against the flag rate", _sweep, sweep))
        out.append("</div>")
    for name, model in report.models.items():
        for rule in (model.pql, model.pqa):
            if rule is not None:
                out.append(_rule_section(page, name, rule, model.recorded))
    if report.comparisons:
        out.append("<h2>Comparisons</h2>")
        out.append(_comparisons(report))
    out.append("</body></html>")
    return "\n".join(out)


# -- figures --------------------------------------------------------------------------------------


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _days(seconds: float) -> str:
    return f"{seconds / 86400:g}d"


def _date(iso: str | None) -> str:
    return "-" if iso is None else iso[:10]


def _text(value: float | int | None, kind: str) -> str:
    if value is None:
        return "-"
    if kind == "percent":
        return f"{value:.1%}"
    if kind == "count":
        return f"{value:,}"
    if kind == "days":
        return f"{value / 86400:.1f}d"
    return f"{value:.2f}"


def _fig(path: Sequence[str], value: Any, kind: str) -> str:
    """A figure as text, marked with its place in ``to_dict()`` and its exact value."""
    if hasattr(value, "total_seconds"):
        value = value.total_seconds()
    return (
        f"<span data-path='{_e(json.dumps(list(path)))}' data-value='{_e(json.dumps(value))}'"
        f" data-format='{kind}'>{_e(_text(value, kind))}</span>"
    )


def _interval(path: Sequence[str], value: tuple[float, float] | None, kind: str) -> str:
    if value is None:
        return "-"
    return f"[{_fig([*path, '0'], value[0], kind)}, {_fig([*path, '1'], value[1], kind)}]"


def _rule_section(page: _Page, name: str, rule: RuleReport, recorded: bool = False) -> str:
    base = ["models", name, rule.kind]
    noun = "users" if rule.kind == "pql" else "accounts"
    healthy = (
        ""
        if rule.healthy is None
        else '<span class="ok">healthy</span>'
        if rule.healthy
        else f'<span class="bad">outside {HEALTHY[0]:.0%}-{HEALTHY[1]:.0%}</span>'
    )

    def row(label: str, field: str, kind: str, ci: bool = False, note: str = "") -> str:
        value = getattr(rule, field)
        cells = f"<td>{_e(label)}</td><td>{_fig([*base, field], value, kind)}</td>"
        interval = (
            _interval([*base, f"{field}_ci"], getattr(rule, f"{field}_ci"), kind) if ci else ""
        )
        return f"<tr>{cells}<td>{interval}</td><td>{note}</td></tr>"

    rows = [
        row("eligible (subject, snapshot) pairs", "eligible", "count"),
        row(f"distinct {noun} eligible", "subjects", "count"),
        row(f"{noun} converting within the horizon", "conversions", "count"),
        row("flag rate", "flag_rate", "percent", note=healthy),
        row("flagged per snapshot (median)", "flagged_per_week", "number"),
        row("precision", "precision", "percent", ci=True),
        row("recall", "recall", "percent", ci=True),
        row("conversion rate of the unflagged", "unflagged_rate", "percent"),
        row("lift", "lift", "number", ci=True),
        row(f"{noun} qualified", "qualified", "count"),
        row(f"{noun} converted", "converted", "count"),
        row("of them qualified 24 h+ before", "converted_after_qualifying_share", "percent"),
        row("lead time, median", "lead_time_median", "days"),
        row("lead time, p90", "lead_time_p90", "days"),
        row(f"time to {rule.kind}, median", "time_to_qualify_median", "days"),
    ]
    out = [
        f"<h2>{_e(name)}: {rule.kind} ({noun}){' as recorded' if recorded else ''}</h2>",
        "<table><tr><th>figure</th><th>value</th><th>95% interval</th><th></th></tr>",
        *rows,
        "</table>",
    ]
    if rule.scores:
        out.append(
            "<table><tr><th>score</th><th>AUC</th><th>top 10%</th><th>top 20%</th>"
            "<th>top 30%</th><th>deciles rising</th><th>Brier</th></tr>"
        )
        for score, s in rule.scores.items():
            p = [*base, "scores", score]
            out.append(
                f"<tr><td>{_e(score)}</td><td>{_fig([*p, 'auc'], s.auc, 'number')}</td>"
                f"<td>{_fig([*p, 'top10'], s.top10, 'percent')}</td>"
                f"<td>{_fig([*p, 'top20'], s.top20, 'percent')}</td>"
                f"<td>{_fig([*p, 'top30'], s.top30, 'percent')}</td>"
                f"<td>{'-' if s.increasing is None else 'yes' if s.increasing else 'no'}</td>"
                f"<td>{_fig([*p, 'brier'], s.brier, 'number') if s.brier is not None else '-'}"
                "</td></tr>"
            )
        out.append("</table>")
    if rule.signals:
        out.append(
            "<table><tr><th>signal</th><th>holds</th><th>converts if true</th>"
            "<th>if false</th><th>lift</th></tr>"
        )
        for signal, g in _by_lift(rule):
            p = [*base, "signals", signal]
            out.append(
                f"<tr><td>{_e(signal)}</td><td>{_fig([*p, 'holds_rate'], g.holds_rate, 'percent')}"
                f"</td><td>{_fig([*p, 'rate_when_true'], g.rate_when_true, 'percent')}</td>"
                f"<td>{_fig([*p, 'rate_when_false'], g.rate_when_false, 'percent')}</td>"
                f"<td>{_fig([*p, 'lift'], g.lift, 'number')}</td></tr>"
            )
        out.append("</table>")
    key = f"{name}-{rule.kind}"
    out.append('<div class="charts">')
    out.append(
        page.chart(
            f"{key}-flag-rate",
            "Flag rate at each snapshot; the band is the healthy 5-15%",
            _flag_rate,
            rule,
        )
    )
    for score, s in rule.scores.items():
        if s.distribution:
            out.append(
                page.chart(
                    f"{key}-{score}-distribution",
                    f"Score {score!r}: how converters and the rest spread (share of each)",
                    _distribution,
                    s,
                )
            )
    if rule.scores:
        out.append(
            page.chart(
                f"{key}-deciles",
                "Lift by decile (conversion rate over the average), highest scores first",
                _deciles,
                rule,
            )
        )
    if rule.signals:
        out.append(
            page.chart(
                f"{key}-signals", "Each signal's lift (1 is no better than chance)", _signals, rule
            )
        )
    out.append("</div>")
    return "\n".join(out)


def _by_lift(rule: RuleReport) -> list[tuple[str, Any]]:
    return sorted(rule.signals.items(), key=lambda kv: -(kv[1].lift or 0.0))


def _comparisons(report: Report) -> str:
    out = [
        "<table><tr><th>rule</th><th>a</th><th>b</th><th>precision b-a</th>"
        "<th>recall b-a</th><th>lift b-a</th><th>only a</th><th>only b</th></tr>"
    ]
    for i, c in enumerate(report.comparisons):
        p = ["comparisons", str(i)]
        cells = []
        for field, kind in (
            ("precision_diff", "percent"),
            ("recall_diff", "percent"),
            ("lift_diff", "number"),
        ):
            cells.append(
                f"<td>{_fig([*p, field], getattr(c, field), kind)}"
                f" {_interval([*p, f'{field}_ci'], getattr(c, f'{field}_ci'), kind)}</td>"
            )
        out.append(
            f"<tr><td>{c.kind}</td><td>{_e(c.a)}</td><td>{_e(c.b)}</td>{''.join(cells)}"
            f"<td>{_fig([*p, 'only_a'], c.only_a, 'count')}</td>"
            f"<td>{_fig([*p, 'only_b'], c.only_b, 'count')}</td></tr>"
        )
    out.append("</table>")
    return "\n".join(out)


def _sweep_table(sweep: Sequence[SweepPoint]) -> str:
    out = [
        "<table><tr><th>threshold</th><th>flag rate</th><th>precision</th><th>recall</th>"
        "<th>lift</th></tr>"
    ]
    for threshold, flag_rate, precision, recall, lift in sweep:
        out.append(
            f"<tr><td>{threshold:g}</td><td>{_text(flag_rate, 'percent')}</td>"
            f"<td>{_text(precision, 'percent')}</td><td>{_text(recall, 'percent')}</td>"
            f"<td>{_text(lift, 'number')}</td></tr>"
        )
    out.append("</table>")
    return "\n".join(out)


# -- charts ---------------------------------------------------------------------------------------


class _Page:
    """Draws the charts: each a matplotlib Figure (no pyplot: no global state, no GUI),
    saved as SVG text and inlined."""

    def __init__(self, matplotlib: Any, figure_class: Any) -> None:
        self.matplotlib = matplotlib
        self.figure_class = figure_class

    def chart(self, key: str, caption: str, draw: Any, data: Any) -> str:
        slug = re.sub(r"[^A-Za-z0-9_-]+", "-", key)
        settings = {"svg.fonttype": "none", "svg.hashsalt": slug, "font.size": 9}
        with self.matplotlib.rc_context(settings):
            figure = self.figure_class(figsize=(5.2, 3.2), layout="constrained")
            draw(figure, data)
            buffer = io.StringIO()
            figure.savefig(buffer, format="svg", metadata={"Date": None})
        svg = buffer.getvalue()
        svg = svg[svg.index("<svg") :]
        return (
            f'<figure class="chart" data-chart="{_e(slug)}">{svg}'
            f"<figcaption>{_e(caption)}</figcaption></figure>"
        )


def _flag_rate(figure: Figure, rule: RuleReport) -> None:
    ax = figure.add_subplot()
    ax.axhspan(HEALTHY[0] * 100, HEALTHY[1] * 100, color=_BAND, alpha=0.18, label="healthy")
    weeks = [w for w in rule.weeks if w.flag_rate is not None]
    ax.plot(
        [w.at for w in weeks],  # type: ignore[arg-type]  # matplotlib plots datetimes
        [(w.flag_rate or 0.0) * 100 for w in weeks],
        marker="o",
        markersize=3,
        color=_LINE,
        label="flag rate",
    )
    ax.set_ylabel("flagged, % of eligible")
    ax.set_ylim(bottom=0)
    ax.legend(loc="upper right", frameon=False)
    figure.autofmt_xdate()


def _distribution(figure: Figure, score: Any) -> None:
    ax = figure.add_subplot()
    rows = score.distribution
    positives = sum(r.positives for r in rows) or 1
    negatives = sum(r.negatives for r in rows) or 1
    centers = [(r.low + r.high) / 2 for r in rows]
    width = max((rows[0].high - rows[0].low) * 0.42, 1e-9)
    ax.bar(
        [c - width / 2 for c in centers],
        [r.negatives / negatives * 100 for r in rows],
        width=width,
        color=_REST,
        label="the rest",
    )
    ax.bar(
        [c + width / 2 for c in centers],
        [r.positives / positives * 100 for r in rows],
        width=width,
        color=_CONVERTED,
        label="converted",
    )
    ax.set_xlabel("score")
    ax.set_ylabel("% of observations")
    ax.legend(frameon=False)


def _deciles(figure: Figure, rule: RuleReport) -> None:
    ax = figure.add_subplot()
    average = rule.positives / rule.eligible if rule.eligible else 0.0
    names = list(rule.scores)
    width = 0.8 / max(len(names), 1)
    for k, name in enumerate(names):
        rows = rule.scores[name].deciles
        lifts = [(r.rate or 0.0) / average if average else 0.0 for r in rows]
        ax.bar(
            [i + 1 + (k - (len(names) - 1) / 2) * width for i in range(len(rows))],
            lifts,
            width=width,
            label=name,
        )
    ax.axhline(1.0, color="#444", linewidth=0.8, linestyle="--")
    ax.set_xlabel("decile (1 = highest scores)")
    ax.set_ylabel("lift")
    ax.set_xticks(range(1, 11))
    ax.legend(frameon=False)


def _signals(figure: Figure, rule: RuleReport) -> None:
    ax = figure.add_subplot()
    rows = [(n, g.lift) for n, g in _by_lift(rule) if g.lift is not None][::-1]
    ax.barh(
        [n for n, _ in rows],
        [v for _, v in rows],
        color=[_CONVERTED if v > 1 else _REST for _, v in rows],
    )
    ax.axvline(1.0, color="#444", linewidth=0.8, linestyle="--")
    ax.set_xlabel("lift (conversion rate when true / when false)")


def _sweep(figure: Figure, sweep: Sequence[SweepPoint]) -> None:
    ax = figure.add_subplot()
    rows = [r for r in sweep if r[1] is not None]
    ax.axvspan(HEALTHY[0] * 100, HEALTHY[1] * 100, color=_BAND, alpha=0.18, label="healthy")
    ax.plot(
        [(r[1] or 0.0) * 100 for r in rows],
        [(r[2] or 0.0) * 100 for r in rows],
        marker="o",
        markersize=3,
        color=_CONVERTED,
        label="precision",
    )
    ax.plot(
        [(r[1] or 0.0) * 100 for r in rows],
        [(r[3] or 0.0) * 100 for r in rows],
        marker="o",
        markersize=3,
        color=_LINE,
        label="recall",
    )
    ax.set_xlabel("flag rate, % of eligible")
    ax.set_ylabel("%")
    ax.legend(frameon=False)
