"""From a CRM export to a calibrated model (docs/cookbook.md, "From a CRM export...").

Your product's events are in pqlkit's store (or a ``pqlkit export`` file); who paid
is in the CRM, exported as ``subject_id,converted_at``. ``pqlkit.calibrate`` fits
the model's points on the earlier half of the history, picks the threshold that
flags what sales can handle, and checks both on the later half.

Here a simulated product stands in for both (``pqlkit.simulate``): its history is
written as an export file, and its conversions as the CRM's CSV. Run it:
``python examples/calibrate.py`` (a few seconds). On the command line:
``pqlkit calibrate calibrate:model --events history.jsonl --outcome crm.csv --capacity 40``.
"""

from __future__ import annotations

import csv
import tempfile
from pathlib import Path

import pqlkit
from pqlkit import Model, active_days, days, did, points, score

# The model as it is today: weights someone guessed.
model = Model(
    "self-serve",
    signals={
        "warehouse": did("warehouse_connected"),
        "dashboard": did("dashboard_built"),
        "invited": did("teammate_invited"),
        "pricing": did("page_viewed", where={"path": "/pricing"}, within=days(30)),
        "api_key": did("api_key_generated"),
        "habit": active_days(within=days(7)) >= 2,
    },
    scores={
        "behavior": points(warehouse=30, dashboard=20, invited=10, pricing=10, api_key=20, habit=10)
    },
    pql=score("behavior") >= 50,
)


def export(folder: Path) -> tuple[Path, Path]:
    """The history as a ``pqlkit export`` file and the conversions as a CRM's CSV."""
    sim = pqlkit.simulate(seed=21, users=4_000, accounts=400, days=240)
    history = folder / "history.jsonl"
    sim.write(history)
    crm = folder / "crm.csv"
    with open(crm, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["subject_id", "converted_at"])
        for subject, when in sim.conversions.items():
            if subject.startswith("user-"):
                writer.writerow([subject, when.isoformat()])
    return history, crm


def main() -> None:
    """Export, calibrate for 40 leads a week, print the suggestion and the held-out verdict."""
    with tempfile.TemporaryDirectory() as tmp:
        history, crm = export(Path(tmp))
        calibration = pqlkit.calibrate(model, history, outcome=crm, capacity_per_week=40)
    print("Paste into the model:")
    print(calibration.as_code())
    original = calibration.report["original"].pql
    suggested = calibration.report["suggested"].pql
    assert original is not None
    assert suggested is not None
    c = calibration.report.comparison("original", "suggested")
    low, high = c.precision_diff_ci or (0.0, 0.0)
    print(
        f"\nOn the held-out months: precision {original.precision:.1%} -> {suggested.precision:.1%}"
        f" ({c.precision_diff:+.1%}, 95% interval {low:+.1%} to {high:+.1%}),"
        f" {original.flagged_per_week:.0f} -> {suggested.flagged_per_week:.0f} flagged a week."
    )


if __name__ == "__main__":
    main()
