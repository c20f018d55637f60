"""The backtest's report page (``Report.to_html``), opened in a real headless Chromium."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

import pqlkit
from pqlkit import Model, active_days, count, days, did, points, score, tev


@pytest.fixture(name="report", scope="module")
def fixture_report() -> pqlkit.Report:
    live = Model(
        "live",
        signals={"projects": did("project_created"), "key": did("api_key_generated")},
        scores={"behavior": points(projects=30, key=30)},
        pql=score("behavior") >= 50,
    )
    candidate = Model(
        "candidate",
        signals={
            "dashboard": did("dashboard_built"),
            "invited": did("teammate_invited"),
            "pricing": did("page_viewed", where={"path": "/pricing"}, within=days(30)),
        },
        scores={
            "behavior": points(dashboard=30, invited=30, pricing=20),
            "intent": tev(
                activation="dashboard",
                fast=days(2),
                slow=days(14),
                engagement=active_days(within=days(14)),
                engagement_target=5,
                virality=count("teammate_invited"),
                virality_target=2,
            ),
        },
        pql=score("behavior") >= 50,
        pqa=did("teammate_invited"),
    )
    sim = pqlkit.simulate(seed=5, users=800, accounts=80, days=120)
    return pqlkit.backtest(
        {"live": live, "candidate": candidate}, sim, outcome="subscription_started"
    )


def _open(browser: Any, path: Path) -> tuple[Any, list[str]]:
    page = browser.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url}"))
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(path.as_uri())
    page.wait_for_load_state("load")
    assert requests == [path.as_uri()]  # self-contained: nothing else is fetched
    return page, errors


def test_the_page_loads_cleanly_and_every_chart_renders(
    browser: Any, report: pqlkit.Report, tmp_path: Path
) -> None:
    path = tmp_path / "report.html"
    report.to_html(path)
    page, errors = _open(browser, path)
    charts = page.eval_on_selector_all(
        "figure.chart",
        """figs => figs.map(f => {
            const svg = f.querySelector('svg');
            const box = svg ? svg.getBoundingClientRect() : {width: 0, height: 0};
            return {
                name: f.dataset.chart,
                width: box.width,
                height: box.height,
                drawn: svg ? svg.querySelectorAll('path, rect, line, polyline, use').length : 0,
                text: svg ? svg.querySelectorAll('text').length : 0,
            };
        })""",
    )
    names = [c["name"] for c in charts]
    # per rule: the flag rate, a distribution per score, the deciles, the signals
    assert names == [
        "live-pql-flag-rate",
        "live-pql-behavior-distribution",
        "live-pql-deciles",
        "live-pql-signals",
        "candidate-pql-flag-rate",
        "candidate-pql-behavior-distribution",
        "candidate-pql-intent-distribution",
        "candidate-pql-deciles",
        "candidate-pql-signals",
        "candidate-pqa-flag-rate",
        "candidate-pqa-behavior-distribution",
        "candidate-pqa-intent-distribution",
        "candidate-pqa-deciles",
        "candidate-pqa-signals",
    ]
    for chart in charts:
        assert chart["width"] > 100, chart
        assert chart["height"] > 50, chart
        assert chart["drawn"] > 10, chart  # axes, ticks, bars or lines
        assert chart["text"] > 3, chart  # tick labels and legends
    assert errors == []
    page.close()


def _at(data: Any, path: list[str]) -> Any:
    for key in path:
        data = data[int(key)] if isinstance(data, list) else data[key]
    return data


def test_the_figures_on_the_page_equal_the_json(
    browser: Any, report: pqlkit.Report, tmp_path: Path
) -> None:
    path = tmp_path / "report.html"
    report.to_html(path)
    page, _ = _open(browser, path)
    marked = page.eval_on_selector_all(
        "[data-path]",
        """els => els.map(e => ({
            path: JSON.parse(e.dataset.path),
            value: JSON.parse(e.dataset.value),
            format: e.dataset.format,
            text: e.textContent,
        }))""",
    )
    data = report.to_dict()
    paths = {tuple(m["path"]) for m in marked}
    for rule in ("precision", "recall", "lift", "flag_rate", "eligible"):
        assert ("models", "live", "pql", rule) in paths
        assert ("models", "candidate", "pqa", rule) in paths
    assert ("models", "live", "pql", "lift_ci", "0") in paths
    assert ("models", "candidate", "pql", "scores", "intent", "auc") in paths
    assert ("models", "candidate", "pql", "signals", "pricing", "lift") in paths
    assert ("comparisons", "0", "precision_diff") in paths
    for m in marked:
        expected = _at(data, m["path"])
        assert m["value"] == expected, m
        shown = m["text"]
        if expected is None:
            assert shown == "-"
        elif m["format"] == "percent":
            assert float(shown.rstrip("%")) == pytest.approx(expected * 100, abs=0.051), m
        elif m["format"] == "count":
            assert int(shown.replace(",", "")) == expected, m
        elif m["format"] == "days":
            assert float(shown.rstrip("d")) == pytest.approx(expected / 86400, abs=0.051), m
        else:
            assert float(shown) == pytest.approx(expected, abs=0.0051), m
    assert len(marked) > 100
    text = page.text_content("body")
    for warning in report.warnings:
        assert warning in text
    page.close()


def test_the_page_needs_the_lab_extra(
    report: pqlkit.Report, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError
    path = tmp_path / "report.html"
    with pytest.raises(ImportError, match=r"pip install 'pqlkit\[lab\]'"):
        report.to_html(path)
    assert not path.exists()


def test_the_json_paths_hold_plain_values(report: pqlkit.Report) -> None:
    """to_dict() is what the page is checked against: it is JSON as it stands."""
    assert json.loads(json.dumps(report.to_dict())) == report.to_dict()


def test_a_calibrations_page_shows_the_threshold_sweep(browser: Any, tmp_path: Path) -> None:
    model = Model(
        "teams",
        signals={
            "dashboard": did("dashboard_built"),
            "invited": did("teammate_invited"),
            "pricing": did("page_viewed", where={"path": "/pricing"}),
        },
        pql=did("teammate_invited"),
    )
    sim = pqlkit.simulate(seed=5, users=800, accounts=80, days=160)
    calibration = pqlkit.calibrate(model, sim, outcome="subscription_started")
    path = tmp_path / "calibration.html"
    calibration.to_html(path)
    page, errors = _open(browser, path)
    sweep = page.eval_on_selector(
        "figure[data-chart=sweep] svg",
        "svg => ({w: svg.getBoundingClientRect().width,"
        " lines: svg.querySelectorAll('path').length})",
    )
    assert sweep["w"] > 100
    assert sweep["lines"] > 10
    # the sweep; the original: flag rate, signals; the suggested: those, its score, deciles
    assert page.locator("figure.chart").count() == 1 + 2 + 4
    text = page.text_content("body")
    assert "Calibration of 'teams': held-out backtest" in text
    assert errors == []
    page.close()
