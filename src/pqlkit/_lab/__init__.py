"""The model lab: backtest models against real conversions, compare them, simulate a product.

One idea a module, each importing only those above it in this list:

* ``stats``: the numerics (bootstrap intervals, AUC, deciles, Brier), pure Python;
* ``simulation``: a seeded SaaS history with planted conversion drivers;
* ``source``: where the events come from (a store, a URL, a file, an iterable), read only;
* ``outcome``: what converting means (an event, a condition, given times);
* ``replay``: the events through the engine in time order, measured at snapshots;
* ``table``: the report as a terminal table;
* ``report``: the report records and their JSON form;
* ``backtesting``: ``backtest()``: the passes, the figures, the warnings.
"""

from .backtesting import backtest
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
    "DecileRow",
    "DistributionRow",
    "ModelComparison",
    "ModelReport",
    "ReliabilityRow",
    "Report",
    "RuleReport",
    "ScoreReport",
    "SignalReport",
    "SimulatedEvents",
    "Simulation",
    "WeekRow",
    "backtest",
    "simulate",
]
