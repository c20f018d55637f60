"""pqlkit: product-qualified leads, in process.

Declare signals and scores in a :class:`Model`, record events with
:meth:`Client.track`, and get called once when a user (PQL) or an account (PQA)
qualifies. Everything public is importable from here.
"""

from __future__ import annotations

import typing

from . import _version
from ._async import AsyncClient
from ._client import Client
from ._default import (
    alias,
    configure,
    flush,
    forget,
    get_client,
    group,
    identify,
    on_disqualified,
    on_play,
    on_pqa,
    on_pql,
    track,
)
from ._dispatch import Callback, Delivery
from ._dsl import (
    absent,
    active_days,
    active_users,
    all_of,
    any_of,
    at_least,
    count,
    days,
    did,
    distinct,
    fit,
    hours,
    idle,
    last,
    minutes,
    points,
    score,
    sequence,
    signal,
    tev,
    time_to,
    total,
    trait,
)
from ._events import BulkResult, Event, Nudge, PruneResult, Qualification, Stats, TrackResult
from ._lab import (
    Calibration,
    DecileRow,
    DistributionRow,
    ModelComparison,
    ModelReport,
    PlayReport,
    ReliabilityRow,
    Report,
    RuleReport,
    ScoreReport,
    SignalReport,
    SimulatedEvents,
    Simulation,
    SweepRow,
    WeekRow,
    backtest,
    calibrate,
    measure_play,
    simulate,
)
from ._model import Model, Play, play
from ._observe import DeliveryFailure
from ._settings import ClientOptions, Settings
from .exceptions import (
    ClientClosedError,
    ModelError,
    PqlkitError,
    SchemaError,
    SinkError,
    StoreError,
    TransientStoreError,
    ValidationError,
)
from .stores import MemoryStore, PostgresStore, SQLiteStore, Store

__all__ = [
    "AsyncClient",
    "BulkResult",
    "Calibration",
    "Callback",
    "Client",
    "ClientClosedError",
    "ClientOptions",
    "DecileRow",
    "Delivery",
    "DeliveryFailure",
    "DistributionRow",
    "Event",
    "MemoryStore",
    "Model",
    "ModelComparison",
    "ModelError",
    "ModelReport",
    "Nudge",
    "Play",
    "PlayReport",
    "PostgresStore",
    "PqlkitError",
    "PruneResult",
    "Qualification",
    "ReliabilityRow",
    "Report",
    "RuleReport",
    "SQLiteStore",
    "SchemaError",
    "ScoreReport",
    "Settings",
    "SignalReport",
    "SimulatedEvents",
    "Simulation",
    "SinkError",
    "Stats",
    "Store",
    "StoreError",
    "SweepRow",
    "TrackResult",
    "TransientStoreError",
    "ValidationError",
    "WeekRow",
    "__version__",
    "absent",
    "active_days",
    "active_users",
    "alias",
    "all_of",
    "any_of",
    "at_least",
    "backtest",
    "calibrate",
    "configure",
    "count",
    "days",
    "did",
    "distinct",
    "fit",
    "flush",
    "forget",
    "get_client",
    "group",
    "hours",
    "identify",
    "idle",
    "last",
    "measure_play",
    "minutes",
    "on_disqualified",
    "on_play",
    "on_pqa",
    "on_pql",
    "play",
    "points",
    "score",
    "sequence",
    "signal",
    "simulate",
    "tev",
    "time_to",
    "total",
    "track",
    "trait",
]

if typing.TYPE_CHECKING:
    __version__: str
    """pqlkit's version, e.g. ``"0.1.0"``, from the installed package's metadata."""
else:

    def __getattr__(name: str) -> str:
        # __version__ is looked up on first use: importlib.metadata takes ~10 ms to import
        if name == "__version__":
            value = globals()["__version__"] = _version.version()
            return value
        raise AttributeError(f"module 'pqlkit' has no attribute {name!r}")
