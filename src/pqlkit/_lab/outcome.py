"""What converting means in a backtest: an event, a condition, or given times (a mapping, a CSV).

:func:`parse_outcome` checks what the caller passed; the backtest then finds each
subject's conversion time: for an event name in its first pass over the events,
for a condition by replaying the condition alone (see ``replay.conversions``),
for given times by reading them (:meth:`Outcome.given_times`).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping
from pathlib import Path

import attrs

from .. import _dsl as d
from .._convert import to_us
from .._model import Model
from .._validation import check_timestamp
from ..exceptions import ModelError, ValidationError
from .source import parse_time

__all__ = ["Outcome", "parse_outcome"]


@attrs.frozen
class Outcome:
    """A checked outcome: exactly one of ``event``, ``model`` and ``times`` is set."""

    description: str
    event: str | None = None  # the first such event is the conversion
    model: Model | None = None  # its pql (users) and pqa (accounts): the condition
    times: Mapping[str, int] | None = None  # subject id -> conversion time (µs)


def parse_outcome(outcome: object) -> Outcome:
    """Check ``outcome`` (see :func:`pqlkit.backtest`) and read a CSV file.

    Raises:
        ValidationError: (field ``outcome``) neither an event name, a condition, a
            mapping nor a CSV file; a CSV without the columns ``subject_id`` and
            ``converted_at``, or with a date that does not parse; a naive datetime.
    """
    if isinstance(outcome, os.PathLike) or (
        isinstance(outcome, str) and outcome.lower().endswith(".csv")
    ):
        path = Path(os.fspath(outcome))
        return Outcome(f"conversions in {path.name}", times=_read_csv(path))
    if isinstance(outcome, str):
        if not outcome.strip():
            raise ValidationError("outcome", "must not be empty")
        return Outcome(f"first {outcome!r} event", event=outcome)
    if isinstance(outcome, d.Condition):
        try:
            model = Model("outcome", pql=outcome, pqa=outcome)
        except ModelError as error:
            raise ValidationError("outcome", f"is not a condition on events: {error}") from None
        return Outcome(f"first time {outcome.describe()} holds", model=model)
    if isinstance(outcome, Mapping):
        times: dict[str, int] = {}
        for key, value in outcome.items():
            if not isinstance(key, str) or not key.strip():
                raise ValidationError("outcome", f"keys must be subject ids (str), got {key!r}")
            when = check_timestamp(value, f"outcome[{key!r}]")
            times[key] = to_us(when)
        return Outcome(f"{len(times)} given conversions", times=times)
    if isinstance(outcome, d.Expr):
        raise ValidationError("outcome", f"{outcome.describe()} is a value, not a condition")
    raise ValidationError(
        "outcome",
        f"got a {type(outcome).__name__}: expected an event name, a condition such as "
        "did('plan_changed', where={'to': 'pro'}), a mapping of subject id to datetime, "
        "or a CSV file (subject_id,converted_at)",
    )


def _read_csv(path: Path) -> dict[str, int]:
    """``subject_id,converted_at`` rows; times without an offset are read as UTC."""
    if not path.is_file():
        raise ValidationError("outcome", f"no such CSV file: {str(path)!r}")
    times: dict[str, int] = {}
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        columns = {(c or "").strip().lower(): c for c in reader.fieldnames or []}
        for needed in ("subject_id", "converted_at"):
            if needed not in columns:
                raise ValidationError(
                    "outcome",
                    f"{path.name} has no column {needed!r} (its columns: "
                    f"{', '.join(repr(c) for c in reader.fieldnames or []) or 'none'})",
                )
        sid_col, at_col = columns["subject_id"], columns["converted_at"]
        for row in reader:
            line = reader.line_num
            subject = (row.get(sid_col) or "").strip()
            if not subject:
                raise ValidationError("outcome", f"{path.name}, line {line}: subject_id is empty")
            try:
                when = to_us(parse_time(row.get(at_col) or "", "converted_at", naive_utc=True))
            except ValidationError as error:
                raise ValidationError(
                    "outcome", f"{path.name}, line {line}: {error.reason}"
                ) from None
            if subject not in times or when < times[subject]:
                times[subject] = when
    return times
