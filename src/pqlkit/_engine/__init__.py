"""Incremental per-subject state and evaluation: the engine, one idea a module.

A :class:`Plan` is a model compiled once: the distinct aggregates it reads, each
with an accumulator that keeps a small JSON-compatible state, and an index from
event name to the accumulators that event feeds. ``apply_view`` folds one event into
a subject's state; ``evaluate`` reads the state at an evaluation time T.

What each accumulator keeps (all times are integer microseconds since the epoch):

* no window: a running value (a count, a sum, a set of distinct keys);
* ``within=D``: entries ``[ts, x, cum]`` (``cum`` an exact running sum, so a window
  sum is one bisection and one subtraction) for matching events newer than
  ``newest - D``, or for sets each key's latest time and those times sorted; older
  entries can never re-enter the window, since T never goes back, and are dropped
  lazily (in batches: readers bisect on their own cut);
* ``since_first_seen=D``: entries inside ``[F, F + D)``, dropped when a late
  event moves F earlier;
* ``sequence``: the timestamps of its steps' events until the chain completes;
* ``absent``: the first ``after`` time and the watched events' times up to its end.

So the cost of an event depends on the model and on the matching events inside
the windows, never on the length of the subject's history.

The modules, each importing only those above it:

* ``state``: a subject's state and its stored format; what an accumulator sees of an event;
* ``accumulators``: how each aggregate keeps its slot of the state and reads its value;
* ``evaluate``: expressions compiled into closures, and the values they keep between events;
* ``plan``: a model compiled once: slots, the event index, folding events in, evaluation;
* ``explain``: the explanation lines.
"""

from .evaluate import Context, Evaluation
from .explain import explain, explained
from .plan import Plan
from .state import NO_QUALIFICATION, STATE_LAYOUT, EventView, LatestQualification, SubjectState

__all__ = [
    "NO_QUALIFICATION",
    "STATE_LAYOUT",
    "Context",
    "Evaluation",
    "EventView",
    "LatestQualification",
    "Plan",
    "SubjectState",
    "explain",
    "explained",
]
