"""The model lab: backtest models against real conversions, compare them, simulate a product.

One idea a module, each importing only those above it in this list:

* ``stats``: the numerics (bootstrap intervals, AUC, deciles, Brier), pure Python;
* ``simulation``: a seeded SaaS history with planted conversion drivers;
* ``source``: where the events come from (a store, a URL, a file, an iterable), read only;
* ``outcome``: what converting means (an event, a condition, given times);
* ``replay``: the events through the engine in time order, measured at snapshots;
* ``table``: the report as a terminal table;
* ``page``: the report as one HTML page, its charts drawn by matplotlib (``pqlkit[lab]``);
* ``report``: the report records and their JSON form;
* ``backtesting``: ``backtest()``: the passes, the figures, the warnings;
* ``calibration``: ``calibrate()``: weights fitted on an earlier period, checked on a later one.
"""

from .backtesting import backtest
from .calibration import Calibration, SweepRow, calibrate
from .holdout import PlayReport, measure_play
from .report import (
    ModelComparison,
    ModelReport,
    Report,
    RuleReport,
    ScoreReport,
    SignalReport,
    WeekRow,
)
from .simulation import SimulatedEvents, Simulation, simulate
from .stats import DecileRow, DistributionRow, ReliabilityRow

__all__ = [
    "Calibration",
    "DecileRow",
    "DistributionRow",
    "ModelComparison",
    "ModelReport",
    "PlayReport",
    "ReliabilityRow",
    "Report",
    "RuleReport",
    "ScoreReport",
    "SignalReport",
    "SimulatedEvents",
    "Simulation",
    "SweepRow",
    "WeekRow",
    "backtest",
    "measure_play",
    "calibrate",
    "simulate",
]
