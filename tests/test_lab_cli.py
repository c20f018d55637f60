"""The model lab on the command line: ``pqlkit backtest``, ``compare`` and ``calibrate``."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

import pqlkit
from pqlkit import Model, did, points, score
from pqlkit.cli import main

LIVE = Model(
    "live",
    signals={"projects": did("project_created")},
    scores={"behavior": points(projects=50)},
    pql=score("behavior") >= 50,
)
CANDIDATE = Model(
    "candidate",
    signals={
        "dashboard": did("dashboard_built"),
        "invited": did("teammate_invited"),
    },
    scores={"behavior": points(dashboard=30, invited=30)},
    pql=score("behavior") >= 50,
)
ALSO_LIVE = Model("live", pql=did("dashboard_built"))  # the same name as LIVE
NOT_A_MODEL = 42


@pytest.fixture(name="runner")
def fixture_runner() -> CliRunner:
    return CliRunner()


@pytest.fixture(name="history", scope="module")
def fixture_history(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A simulated history as a ``pqlkit export`` file."""
    path = tmp_path_factory.mktemp("lab") / "history.jsonl"
    pqlkit.simulate(seed=11, users=500, accounts=50, days=100).write(path)
    return path


def _run(runner: CliRunner, *args: str) -> tuple[int, str, str]:
    result = runner.invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_backtest_prints_the_table_and_the_same_figures_as_the_function(
    runner: CliRunner, history: Path
) -> None:
    code, out, err = _run(
        runner, "backtest", "test_lab_cli:LIVE", "--events", str(history),
        "--outcome", "subscription_started", "--horizon", "21d",
    )  # fmt: skip
    assert code == 0, err
    expected = pqlkit.backtest(
        LIVE, str(history), outcome="subscription_started", horizon=pqlkit.days(21)
    )
    assert out.strip() == expected.table().strip()
    assert "Replaying events" in err  # the progress bar, on standard error


def test_backtest_json_is_the_reports_dict(runner: CliRunner, history: Path) -> None:
    code, out, err = _run(
        runner, "backtest", "test_lab_cli:LIVE", "--events", str(history),
        "--outcome", "subscription_started", "--step", "14d", "--json",
    )  # fmt: skip
    assert code == 0, err
    expected = pqlkit.backtest(
        LIVE, str(history), outcome="subscription_started", step=pqlkit.days(14)
    )
    assert json.loads(out) == json.loads(expected.to_json())
    assert json.loads(out)["step"] == 14 * 86400


def test_backtest_reads_a_crm_export(runner: CliRunner, tmp_path: Path, history: Path) -> None:
    sim = pqlkit.simulate(seed=11, users=500, accounts=50, days=100)
    csv = tmp_path / "conversions.csv"
    csv.write_text(
        "subject_id,converted_at\n"
        + "".join(f"{sid},{at.isoformat()}\n" for sid, at in sim.conversions.items())
    )
    code, out, err = _run(
        runner, "backtest", "test_lab_cli:LIVE", "--events", str(history),
        "--outcome", str(csv), "--json",
    )  # fmt: skip
    assert code == 0, err
    data = json.loads(out)
    assert data["outcome"] == f"conversions in {csv.name}"
    assert data["models"]["live"]["pql"]["conversions"] > 0


def test_compare_puts_models_side_by_side(runner: CliRunner, history: Path) -> None:
    code, out, err = _run(
        runner, "compare", "test_lab_cli:LIVE", "test_lab_cli:CANDIDATE",
        "--events", str(history), "--outcome", "subscription_started", "--json",
    )  # fmt: skip
    assert code == 0, err
    data = json.loads(out)
    assert list(data["models"]) == ["live", "candidate"]
    (comparison,) = data["comparisons"]
    assert (comparison["a"], comparison["b"]) == ("live", "candidate")
    code, out, err = _run(
        runner, "compare", "test_lab_cli:LIVE", "test_lab_cli:CANDIDATE",
        "--events", str(history), "--outcome", "subscription_started",
    )  # fmt: skip
    assert code == 0, err
    assert "candidate vs live -- pql (candidate minus live)" in out


def test_compare_names_models_sharing_a_name_by_their_path(
    runner: CliRunner, history: Path
) -> None:
    code, out, err = _run(
        runner, "compare", "test_lab_cli:LIVE", "test_lab_cli:ALSO_LIVE",
        "--events", str(history), "--outcome", "subscription_started", "--json",
    )  # fmt: skip
    assert code == 0, err
    assert list(json.loads(out)["models"]) == ["test_lab_cli:LIVE", "test_lab_cli:ALSO_LIVE"]


def test_compare_needs_two_models(runner: CliRunner, history: Path) -> None:
    result = runner.invoke(
        main, ["compare", "test_lab_cli:LIVE", "--events", str(history), "--outcome", "x"]
    )
    assert result.exit_code == 2
    assert "two or more models" in result.stderr


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["nowhere_at_all:model"], ["MODULE:ATTR", "nowhere_at_all"]),
        (["test_lab_cli:NOT_A_MODEL"], ["MODULE:ATTR", "not a pqlkit.Model"]),
        (["test_lab_cli:LIVE", "--horizon", "0d"], ["--horizon", "positive"]),
        (["test_lab_cli:LIVE", "--step", "soon"], ["--step", "duration"]),
        (["test_lab_cli:LIVE", "--start", "2025-01-01"], ["--start", "offset"]),
        (
            [
                "test_lab_cli:LIVE",
                "--start",
                "2025-03-01T00:00:00+00:00",
                "--end",
                "2025-02-01T00:00:00+00:00",
            ],
            ["--start", "not before end"],
        ),
        (["test_lab_cli:LIVE", "--outcome-file", "missing.csv"], ["No such option"]),
    ],
)
def test_bad_arguments_name_the_option(
    runner: CliRunner, history: Path, args: list[str], names: list[str]
) -> None:
    base = ["--events", str(history)]
    if "--outcome-file" not in args:
        base += ["--outcome", "subscription_started"]
    result = runner.invoke(main, ["backtest", *args, *base])
    assert result.exit_code == 2, result.output
    for name in names:
        assert name in result.stderr


def test_a_missing_store_is_named_and_never_created(runner: CliRunner, tmp_path: Path) -> None:
    db = tmp_path / "nothing.db"
    result = runner.invoke(
        main,
        ["backtest", "test_lab_cli:LIVE", "--events", f"sqlite:///{db}", "--outcome", "x"],
    )
    assert result.exit_code == 2
    assert "--events" in result.stderr
    assert not db.exists()


def test_a_bad_csv_is_named_and_the_source_unchanged(
    runner: CliRunner, tmp_path: Path, history: Path
) -> None:
    csv = tmp_path / "crm.csv"
    csv.write_text("id,when\nu1,2025-01-01\n")
    before = hashlib.sha256(history.read_bytes()).hexdigest()
    result = runner.invoke(
        main,
        ["backtest", "test_lab_cli:LIVE", "--events", str(history), "--outcome", str(csv)],
    )
    assert result.exit_code == 2
    assert "--outcome" in result.stderr
    assert "subject_id" in result.stderr
    assert hashlib.sha256(history.read_bytes()).hexdigest() == before


def test_html_writes_the_page(runner: CliRunner, tmp_path: Path, history: Path) -> None:
    page = tmp_path / "report.html"
    code, out, err = _run(
        runner, "backtest", "test_lab_cli:LIVE", "--events", str(history),
        "--outcome", "subscription_started", "--html", str(page),
    )  # fmt: skip
    assert code == 0, err
    text = page.read_text()
    assert text.startswith("<!DOCTYPE html>")
    assert "<svg" in text
    assert "Backtest of 'live'" in out  # the table is printed too


def test_calibrate_prints_the_code_to_paste_and_the_held_out_report(
    runner: CliRunner, tmp_path: Path
) -> None:
    history = tmp_path / "history.jsonl"
    sim = pqlkit.simulate(seed=3, users=1_500, accounts=150, days=200)
    sim.write(history)
    code, out, err = _run(
        runner, "calibrate", "test_lab_cli:CANDIDATE", "--events", str(history),
        "--outcome", "subscription_started", "--target-rate", "0.08",
    )  # fmt: skip
    assert code == 0, err
    expected = pqlkit.calibrate(
        CANDIDATE, str(history), outcome="subscription_started", target_rate=0.08
    )
    assert out.strip() == expected.table().strip()
    assert f'pql=score("calibrated") >= {expected.threshold},' in out
    assert "Replaying events" in err
    code, out, err = _run(
        runner, "calibrate", "test_lab_cli:CANDIDATE", "--events", str(history),
        "--outcome", "subscription_started", "--capacity", "15", "--json",
    )  # fmt: skip
    assert code == 0, err
    data = json.loads(out)
    assert data["capacity_per_week"] == 15
    assert data["code"].startswith("# pqlkit.calibrate")
    assert list(data["report"]["models"]) == ["original", "suggested"]


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["--target-rate", "2"], "--target-rate"),
        (["--target-rate", "0.1", "--capacity", "5"], "--target-rate"),
        (["--capacity", "-1"], "--capacity"),
        (["--split", "0"], "--split"),
    ],
)
def test_calibrate_names_a_bad_option(
    runner: CliRunner, history: Path, args: list[str], option: str
) -> None:
    result = runner.invoke(
        main,
        [
            "calibrate",
            "test_lab_cli:CANDIDATE",
            "--events",
            str(history),
            "--outcome",
            "subscription_started",
            *args,
        ],
    )
    assert result.exit_code == 2, result.output
    assert option in result.stderr


NO_RULE = Model("no-rule", signals={"x": did("login")})


def test_a_model_with_nothing_to_measure_is_an_error(runner: CliRunner, history: Path) -> None:
    result = runner.invoke(
        main,
        ["backtest", "test_lab_cli:NO_RULE", "--events", str(history), "--outcome", "x"],
    )
    assert result.exit_code == 1
    assert "no pql or pqa rule" in result.stderr


def test_compare_refuses_a_model_given_twice(runner: CliRunner, history: Path) -> None:
    result = runner.invoke(
        main,
        ["compare", "test_lab_cli:LIVE", "test_lab_cli:LIVE", "--events", str(history),
         "--outcome", "x"],
    )  # fmt: skip
    assert result.exit_code == 2
    assert "given twice" in result.stderr


@pytest.mark.parametrize("command", ["backtest", "calibrate"])
def test_html_without_the_lab_extra_says_which_to_install(
    runner: CliRunner, history: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    import sys

    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    page = tmp_path / "report.html"
    result = runner.invoke(
        main,
        [command, "test_lab_cli:CANDIDATE", "--events", str(history),
         "--outcome", "subscription_started", "--split", "0.6", "--html", str(page)]
        if command == "calibrate"
        else [command, "test_lab_cli:CANDIDATE", "--events", str(history),
              "--outcome", "subscription_started", "--html", str(page)],
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    assert "pip install 'pqlkit[lab]'" in result.stderr
    assert not page.exists()


def test_calibrate_writes_the_page(runner: CliRunner, history: Path, tmp_path: Path) -> None:
    page = tmp_path / "calibration.html"
    code, _, err = _run(
        runner, "calibrate", "test_lab_cli:CANDIDATE", "--events", str(history),
        "--outcome", "subscription_started", "--split", "0.6", "--html", str(page),
    )  # fmt: skip
    assert code == 0, err
    assert 'data-chart="sweep"' in page.read_text()
    assert f"wrote the report page to {page}" in err
