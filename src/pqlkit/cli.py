"""The ``pqlkit`` command: move a store's data between stores, and look after one.

For operators (each with ``--store`` and ``--model module:attribute``, a table on
the terminal, ``--json`` for scripts): ``pqlkit stats``, ``pqlkit
qualifications``, ``pqlkit explain USER``, ``pqlkit pending``, ``pqlkit retry``
and ``pqlkit sweep``. They refuse a model whose fingerprint differs from the one
the store's state was built with (a Client would rebuild it): pass the model
your app runs.

``pqlkit export --store URL [-o FILE]`` writes everything a store holds that
cannot be recomputed: the event log, traits, aliases, qualification records
and the outbox. ``pqlkit import --store URL --model module:attr FILE`` loads
such a file (or a hand-written file of events with ``track()``'s parameter
names) into a store, then rebuilds the model's derived state from the log.
Importing a file twice stores nothing new: events are keyed by ``message_id``,
qualifications and deliveries by their ids. Qualifications already recorded
in the file do not fire again in the new store.

Every line is one JSON object with a ``"type"``:

=================== ==========================================================
``"event"``         ``message_id``, ``user_id``, ``event``, ``properties``,
                    ``account_id``, ``timestamp`` (ISO 8601 with an offset).
                    A line without ``"type"`` is an event too; without a
                    ``message_id`` it gets one derived from its line number
                    and content, so re-importing the same file is idempotent.
``"traits"``        ``kind`` (``"user"`` or ``"account"``), ``subject_id``,
                    ``traits``: merged into the stored traits.
``"alias"``         ``previous_id``, ``user_id``.
``"qualification"`` a qualification record (who fired, when, under which model).
``"delivery"``      an outbox entry: a qualification, the name of the
                    ``callback`` it is for (none while no callback took it),
                    its status and attempts.
=================== ==========================================================
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import IO, Any, Literal, Protocol, TypeVar

import click
from click.core import ParameterSource

from . import _core, _version
from ._client import Client
from ._convert import dumps, json_converter
from ._events import Qualification
from ._loading import load_model
from ._model import Model
from ._rebuild import fingerprint_key
from ._settings import STORE_URL, parse_duration
from .exceptions import PqlkitError, ValidationError
from .stores import Store, Transaction, open_store
from .stores._base import DeliveryRecord, DeliveryStatus, NewEvent, QualificationRecord

__all__ = ["main"]

_BATCH = 500
_NAMESPACE = uuid.UUID("8d0f3c4e-2b7a-4e51-9c6d-1f2e3a4b5c6d")  # ids of events given without one


def _version_text() -> str:
    number = _version.version()
    # which build runs: the mypyc-compiled one, or the sources (docs/performance.md, "Builds")
    build = "pure Python" if str(_core.__file__).endswith(".py") else "compiled with mypyc"
    return f"{number} ({build})"


@click.group()
@click.version_option(
    _version_text(), "--version", prog_name="pqlkit", message="%(prog)s %(version)s"
)
def main() -> None:
    """pqlkit: product-qualified leads, in process."""


# -- export ---------------------------------------------------------------------------


def _store_option(example: str = "sqlite:///pqlkit.db.") -> Callable[[_C], _C]:
    """``--store URL`` (or ``PQLKIT_STORE_URL``): what every command on a store takes."""
    return click.option(
        "--store",
        "url",
        required=True,
        envvar=STORE_URL,
        show_envvar=True,
        help=f"The store URL, e.g. {example}",
    )


@main.command("export")
@_store_option()
@click.option(
    "-o",
    "--output",
    type=click.File("w", encoding="utf-8"),
    default="-",
    show_default="standard output",
    help="Where to write the JSON Lines.",
)
def export_command(url: str, output: IO[str]) -> None:
    """Write the store's events, traits, aliases, qualifications and outbox as JSON Lines.

    Events come in arrival order, read a page per transaction, so writers are
    never blocked for long; stop them first for an exact snapshot. Traits and
    aliases are exported for the users and accounts that have events.
    """
    store = _open(url)
    err = sys.stderr
    try:
        users: set[str] = set()
        accounts: set[str] = set()
        events = 0
        with click.progressbar(
            _all_events(store), label="Exporting events", file=err, show_pos=True
        ) as bar:
            for record in bar:
                users.add(record.user_id)
                if record.account_id is not None:
                    accounts.add(record.account_id)
                line = {"type": "event", **json_converter.unstructure(record)}
                del line["seq"]
                _write(output, line)
                events += 1
        others = 0
        with store.transaction() as tx:
            finals = sorted({tx.resolve(u) for u in users})
            for user in sorted(users | set(finals)):
                traits = tx.traits("user", user)
                if traits:
                    _write(output, _traits_line("user", user, traits))
                    others += 1
            for account in sorted(accounts):
                traits = tx.traits("account", account)
                if traits:
                    _write(output, _traits_line("account", account, traits))
                    others += 1
            for user in finals:
                for previous in tx.aliases_of(user):
                    _write(output, {"type": "alias", "previous_id": previous, "user_id": user})
                    others += 1
            deliveries = [d for s in _STATUSES for d in tx.deliveries(s)]
            models = sorted({d.qualification.model for d in deliveries})
            for model in models:
                for q in tx.qualifications(model):
                    _write(output, {"type": "qualification", **json_converter.unstructure(q)})
                    others += 1
            for d in deliveries:
                _write(output, {"type": "delivery", **json_converter.unstructure(d)})
                others += 1
    finally:
        store.close()
    click.echo(f"exported {events} events and {others} other records", err=True)


def _all_events(store: Store) -> Iterator[Any]:
    """Every event in arrival order, one transaction per page."""
    after = 0
    while True:
        with store.transaction() as tx:
            page = list(tx.events(after_seq=after, limit=_BATCH))
        yield from page
        if len(page) < _BATCH:
            return
        after = page[-1].seq


def _traits_line(kind: str, subject: str, traits: dict[str, Any]) -> dict[str, Any]:
    return {"type": "traits", "kind": kind, "subject_id": subject, "traits": traits}


def _write(output: IO[str], line: dict[str, Any]) -> None:
    output.write(dumps(line) + "\n")


# -- import ---------------------------------------------------------------------------


@main.command("import")
@_store_option("postgresql://...")
@click.option(
    "--model",
    "model_path",
    required=True,
    help="The model, as module:attribute (e.g. myapp.pql:model); its state is rebuilt.",
)
@click.argument("source", type=click.File("rb"))
def import_command(url: str, model_path: str, source: IO[bytes]) -> None:
    """Load a JSON Lines file (from `pqlkit export`, or events) into a store.

    Events are stored by message id (a repeated one is skipped), then the
    model's derived state is rebuilt from the whole log: subjects that now
    qualify fire (their callbacks run in your app, not here); qualifications
    recorded in the file do not fire again. Another model sharing the store
    needs its own rebuild (client.rebuild()).
    """
    model = _load_model(model_path)
    store = _open(url)
    try:
        with Client(model, store=store) as client:
            counts = _import(client, source)
            rebuilt = client.rebuild() if any(counts.values()) else 0
    except PqlkitError as error:
        raise click.ClickException(str(error)) from error
    finally:
        store.close()
    stored = ", ".join(f"{n} {kind}" for kind, n in counts.items())
    click.echo(f"imported {stored}; rebuilt {model.name!r} from {rebuilt} events", err=True)


def _import(client: Client, source: IO[bytes]) -> dict[str, int]:
    counts = dict.fromkeys(("events", "traits", "aliases", "qualifications", "deliveries"), 0)
    with client.store.transaction() as tx:
        known = {(d.id, d.callback) for s in _STATUSES for d in tx.deliveries(s)}
    batch: list[tuple[int, dict[str, Any]]] = []
    length = _size(source)
    err = sys.stderr
    # stdin has no length: no bar then
    with click.progressbar(
        length=length or 1, label="Importing", file=err, hidden=length is None
    ) as bar:
        for number, raw in enumerate(source, start=1):
            bar.update(len(raw))
            if not raw.strip():
                continue
            try:
                line = json.loads(raw)
            except ValueError as error:
                raise click.ClickException(f"line {number}: not JSON ({error})") from None
            if not isinstance(line, dict):
                raise click.ClickException(f"line {number}: not a JSON object")
            batch.append((number, line))
            if len(batch) >= _BATCH:
                _write_batch(client, batch, counts, known)
        _write_batch(client, batch, counts, known)
    return counts


def _size(source: IO[bytes]) -> int | None:
    try:
        return os.fstat(source.fileno()).st_size or None
    except (OSError, ValueError, AttributeError):
        return None  # stdin, or an in-memory stream


def _write_batch(
    client: Client,
    batch: list[tuple[int, dict[str, Any]]],
    counts: dict[str, int],
    known: set[tuple[str, str | None]],
) -> None:
    """Validate a batch of lines, then store it in one transaction."""
    writes = [(number, _parse(client, number, line)) for number, line in batch]
    with client.store.transaction() as tx:
        for number, (kind, value) in writes:
            try:
                if _apply(tx, kind, value, known):
                    counts[kind] += 1
            except ValueError as error:
                raise click.ClickException(f"line {number}: {error}") from None
    batch.clear()


def _parse(client: Client, number: int, line: dict[str, Any]) -> tuple[str, Any]:
    fields = dict(line)
    kind = fields.pop("type", "event")
    try:
        if kind == "event":
            fields.pop("seq", None)
            if "timestamp" in fields and isinstance(fields["timestamp"], str):
                fields["timestamp"] = datetime.fromisoformat(fields["timestamp"])
            if fields.get("message_id") is None:
                key = f"{number}\x00{dumps(line)}"
                fields["message_id"] = f"import-{uuid.uuid5(_NAMESPACE, key)}"
            checked = client.check_event(fields)
            assert checked.message_id is not None  # check_event() fills both in
            assert checked.timestamp is not None
            return "events", NewEvent(
                checked.message_id,
                checked.user_id,
                checked.event,
                checked.properties or {},
                checked.account_id,
                checked.timestamp,
            )
        if kind == "traits":
            if fields.get("kind") not in ("user", "account"):
                raise ValidationError("kind", 'must be "user" or "account"')
            subject = _text(fields, "subject_id")
            traits = fields.get("traits")
            if not isinstance(traits, dict):
                raise ValidationError("traits", "must be a JSON object")
            return "traits", (fields["kind"], subject, traits)
        if kind == "alias":
            return "aliases", (_text(fields, "previous_id"), _text(fields, "user_id"))
        if kind == "qualification":
            return "qualifications", json_converter.structure(fields, QualificationRecord)
        if kind == "delivery":
            return "deliveries", json_converter.structure(fields, DeliveryRecord)
    except ValidationError as error:
        raise click.ClickException(f"line {number}: {error}") from None
    except (ValueError, TypeError, KeyError, AttributeError) as error:
        raise click.ClickException(f"line {number}: bad {kind} record ({error})") from None
    raise click.ClickException(f"line {number}: unknown type {kind!r}")


_STATUSES: tuple[DeliveryStatus, ...] = ("pending", "delivered", "dead", "expired")
_LONG_AGO = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _text(fields: dict[str, Any], name: str) -> str:
    value = fields.get(name)
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(name, "must be a non-empty str")
    return value


def _apply(tx: Transaction, kind: str, value: Any, known: set[tuple[str, str | None]]) -> bool:
    """Store one parsed line; True if it added something."""
    if kind == "events":
        assert isinstance(value, NewEvent)
        return tx.insert_event(value) is not None
    if kind == "traits":
        subject_kind, subject, traits = value
        stored = tx.traits(subject_kind, subject)
        merged = {**stored, **traits}
        if merged == stored:
            return False
        tx.set_traits(subject_kind, subject, merged)
        return True
    if kind == "aliases":
        previous, user = value
        target = tx.resolve(user)
        if target == previous:
            raise ValueError(f"{user!r} is an alias of {previous!r} already")
        if tx.resolve(previous) == target:
            return False
        tx.set_alias(previous, target)
        return True
    if kind == "qualifications":
        assert isinstance(value, QualificationRecord)
        return tx.insert_qualification(value)
    assert isinstance(value, DeliveryRecord)
    callback = value.callback
    if callback is None and value.status in ("delivered", "dead"):
        callback = "*"  # exported before callbacks had names: for every callback of its kind
    if (value.id, callback) in known:
        return False
    if callback is None:  # no callback took it yet: open to them from now
        tx.enqueue(value, now=datetime.now(timezone.utc))
    else:
        # its window counts from when it qualified; a "*" one is closed to new callbacks
        opened = _LONG_AGO if callback == "*" else value.qualification.qualified_at
        tx.enqueue(value, [callback], now=opened)
        if value.status != "pending" or value.attempts or value.last_error:
            tx.finish_delivery(
                value.id,
                callback,
                status=value.status,
                attempts=value.attempts,
                next_attempt_at=value.next_attempt_at,
                last_error=value.last_error,
                finished_at=value.finished_at,
            )
    known.add((value.id, callback))
    return True


# -- helpers ----------------------------------------------------------------------------


def _open(url: str) -> Store:
    try:
        return open_store(url)
    except ValidationError as error:
        # name where the URL came from (never the URL: it may hold a password)
        context = click.get_current_context()
        from_environment = context.get_parameter_source("url") == ParameterSource.ENVIRONMENT
        field = STORE_URL if from_environment else "--store"
        raise click.ClickException(f"{field}: {error.reason}") from error
    except PqlkitError as error:
        raise click.ClickException(str(error)) from error


def _load_model(path: str) -> Model:
    """The Model at ``module:attribute`` (the current directory is importable, as in uvicorn)."""
    try:
        return load_model(path, "--model")
    except ValidationError as error:
        raise click.BadParameter(error.reason, param_hint="--model") from None


# -- for operators -----------------------------------------------------------------------------

_C = TypeVar("_C", bound=Callable[..., Any])


def _operator_options(fn: _C) -> _C:
    """``--store``, ``--model`` and ``--json``: what every operator command takes."""
    fn = click.option(
        "--json", "as_json", is_flag=True, help="Print JSON (for scripts) instead of a table."
    )(fn)
    fn = click.option(
        "--model",
        "model_path",
        required=True,
        help="The model your app runs, as module:attribute (e.g. myapp.pql:model).",
    )(fn)
    return _store_option()(fn)


@contextmanager
def _operator_client(url: str, model_path: str) -> Iterator[Client]:
    """A Client on the app's store and model, refusing a model the state was not built with.

    Constructing a Client with another version of the model would rebuild every
    subject's state (and the app would rebuild it back): an operator's command
    never does that.
    """
    model = _load_model(model_path)
    store = _open(url)
    try:
        with store.transaction() as tx:
            stored = tx.get_meta(fingerprint_key(model.name))
        if stored is None:
            raise click.ClickException(
                f"the store holds no state of the model {model.name!r}: check --store, and"
                " that --model is the model your app runs"
            )
        if stored != model.fingerprint:
            raise click.ClickException(
                f"the store's state of {model.name!r} was built by another version of the"
                f" model (fingerprint {stored[:12]}, --model's {model.fingerprint[:12]}):"
                " pass the model your app runs (a Client with this one would rebuild it)"
            )
        with Client(model, store=store) as client:
            yield client
    except PqlkitError as error:
        raise click.ClickException(str(error)) from error
    finally:
        store.close()


def _echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False, allow_nan=False))


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Columns padded to their widest cell, the last one left ragged."""
    if not rows:
        return
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    click.echo(line(headers))
    click.echo(line(["-" * w for w in widths]))
    for row in rows:
        click.echo(line(row))


def _when(value: datetime | None) -> str:
    return "-" if value is None else value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M")


def _duration(value: timedelta | None) -> str:
    if value is None:
        return "-"
    seconds = int(value.total_seconds())
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m" if minutes else f"{seconds}s"


def _cut(text: str | None, width: int = 60) -> str:
    if not text:
        return "-"
    one_line = " ".join(text.split())
    return one_line if len(one_line) <= width else one_line[: width - 1] + "…"


def _scores(q: Qualification, most: int = 3) -> str:
    parts = [f"{name} {value:g}" for name, value in list(q.scores.items())[:most]]
    if len(q.scores) > most:
        parts.append("…")
    return ", ".join(parts) or "-"


def _parse_time(value: str, option: str) -> datetime:
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(
            f"expected an ISO 8601 time with its offset, got {value!r}", param_hint=option
        ) from None
    if when.tzinfo is None:
        raise click.BadParameter(
            "must have a UTC offset (e.g. 2026-01-05T09:00:00+00:00)", param_hint=option
        )
    return when


@main.command("stats")
@_operator_options
def stats_command(url: str, model_path: str, as_json: bool) -> None:
    """Funnel health: users, accounts, PQLs, PQAs, the PQL rate, time to PQL."""
    with _operator_client(url, model_path) as client:
        stats = client.stats()
    if as_json:
        _echo_json(stats.to_dict())
        return
    health = {True: "healthy: 5-15%", False: "outside the healthy 5-15%", None: "no users"}
    rows = [
        ("users", f"{stats.users:,}"),
        ("accounts", f"{stats.accounts:,}"),
        ("PQLs", f"{stats.pqls:,}"),
        ("PQAs", f"{stats.pqas:,}"),
        ("PQL rate", f"{stats.pql_rate:.1%} ({health[stats.pql_rate_healthy]})"),
        ("time to PQL, median", _duration(stats.time_to_pql_median)),
        ("time to PQL, p90", _duration(stats.time_to_pql_p90)),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        click.echo(f"{name.ljust(width)}  {value}")


def _since(value: str | None) -> datetime | timedelta | None:
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError:
        pass
    try:
        return _parse_time(value, "--since")
    except click.BadParameter:
        raise click.BadParameter(
            f"expected a duration back from now (7d, 12h, 30m) or an ISO 8601 time with its"
            f" offset, got {value!r}",
            param_hint="--since",
        ) from None


@main.command("qualifications")
@_operator_options
@click.option(
    "--kind", type=click.Choice(["pql", "pqa", "play"]), help="Only this kind (default: all)."
)
@click.option("--play", "play_name", help="Only this play's.")
@click.option(
    "--since", help="Only those since: a duration back from now (7d, 12h) or an ISO 8601 time."
)
@click.option("--before", help="The id of the last one of the page before: the next page.")
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True)
def qualifications_command(
    url: str,
    model_path: str,
    as_json: bool,
    kind: Literal["pql", "pqa", "play"] | None,
    play_name: str | None,
    since: str | None,
    before: str | None,
    limit: int,
) -> None:
    """Who qualified, newest first (a page of --limit; --before ID for the next one)."""
    start = _since(since)
    with _operator_client(url, model_path) as client:
        page = client.qualifications(
            kind=kind, play=play_name, since=start, before=before, limit=limit
        )
    if as_json:
        _echo_json([q.to_dict() for q in page])
        return
    if not page:
        click.echo("no qualifications", err=True)
        return
    _table(
        ["qualified at (UTC)", "kind", "subject", "account", "scores", "disqualified at", "id"],
        [
            [
                _when(q.qualified_at),
                q.kind,
                q.subject_id,
                q.account_id or "-",
                _scores(q),
                _when(q.disqualified_at),
                q.id,
            ]
            for q in page
        ],
    )
    if len(page) == limit:
        click.echo(f"(more: --before {page[-1].id})", err=True)


@main.command("top")
@click.argument("score")
@_operator_options
@click.option("-n", "n", type=click.IntRange(min=1), default=20, show_default=True)
@click.option(
    "--of",
    "of",
    type=click.Choice(["user", "account"]),
    default="user",
    show_default=True,
    help="Rank users or accounts.",
)
def top_command(
    score: str, url: str, model_path: str, as_json: bool, n: int, of: Literal["user", "account"]
) -> None:
    """Who is closest: the subjects with the highest current value of SCORE.

    SCORE must be one the model ranks (``Model(..., ranked=[...])``): its values
    are read off the store's index, after re-evaluating the subjects that time
    alone may have changed since.
    """
    with _operator_client(url, model_path) as client:
        try:
            ranked = client.top(score, n=n, of=of)
        except ValidationError as error:
            hint = {"score": "SCORE", "n": "-n", "of": "--of"}.get(error.field, error.field)
            raise click.BadParameter(error.reason, param_hint=hint) from None
    if as_json:
        _echo_json([{"subject_id": subject, score: value} for subject, value in ranked])
        return
    if not ranked:
        click.echo(f"no {of} has a value of {score!r} yet", err=True)
        return
    _table(["#", of, score], [[str(i), sid, f"{v:g}"] for i, (sid, v) in enumerate(ranked, 1)])


@main.command("explain")
@click.argument("subject")
@_operator_options
@click.option(
    "--of",
    "of",
    type=click.Choice(["user", "account"]),
    default="user",
    show_default=True,
    help="Explain a user or an account.",
)
def explain_command(
    subject: str, url: str, model_path: str, as_json: bool, of: Literal["user", "account"]
) -> None:
    """Why SUBJECT scores what it does: every signal, every score and its parts, the rule."""
    with _operator_client(url, model_path) as client:
        try:
            lines = client.explain(subject, of=of)
            scores = client.scores(subject, of=of)
            signals = client.signals(subject, of=of)
            fired = client.qualified_at(subject, kind="pql" if of == "user" else "pqa")
        except ValidationError as error:
            raise click.BadParameter(error.reason, param_hint="SUBJECT") from None
    if as_json:
        _echo_json(
            {
                "subject_id": subject,
                "of": of,
                "qualified_at": None if fired is None else fired.isoformat(),
                "scores": scores,
                "signals": signals,
                "explanation": lines,
            }
        )
        return
    rule = "PQL" if of == "user" else "PQA"
    status = f"qualified as a {rule} at {_when(fired)} UTC" if fired else f"not a {rule} yet"
    click.echo(f"{subject} ({of}): {status}")
    for line in lines:
        click.echo(f"  {line}")


@main.command("pending")
@_operator_options
@click.option("--dead", is_flag=True, help="List the dead letters instead.")
@click.option("--callback", help="Only this callback's deliveries.")
def pending_command(
    url: str, model_path: str, as_json: bool, dead: bool, callback: str | None
) -> None:
    """Deliveries not made yet, oldest first: one per qualification and callback.

    Your app's processes make them (on track(), flush() and sweep()); this lists
    them, with their attempts and last error. --dead lists those that used up
    their attempts (`pqlkit retry` makes them pending again).
    """
    with _operator_client(url, model_path) as client:
        found = client.deliveries(status="dead" if dead else "pending", callback=callback)
    if as_json:
        _echo_json([d.to_dict() for d in found])
        return
    if not found:
        click.echo("no dead letters" if dead else "nothing pending", err=True)
        return
    _table(
        ["qualified at (UTC)", "kind", "subject", "callback", "attempts", "next", "last error"],
        [
            [
                _when(d.qualification.qualified_at),
                "disqualified" if d.qualification.disqualified_at else d.qualification.kind,
                d.qualification.subject_id,
                d.callback or "(no callback yet)",
                str(d.attempts),
                "-" if dead else _when(d.next_attempt_at),
                _cut(d.last_error),
            ]
            for d in found
        ],
    )


@main.command("retry")
@_operator_options
@click.option("--callback", help="Only this callback's dead letters.")
def retry_command(url: str, model_path: str, as_json: bool, callback: str | None) -> None:
    """Make dead letters pending again, due now; your app delivers them on its next flush."""
    with _operator_client(url, model_path) as client:
        count = client.retry_dead_letters(callback)
    if as_json:
        _echo_json({"retried": count})
        return
    click.echo(f"{count} dead {'delivery is' if count == 1 else 'deliveries are'} pending again")


@main.command("sweep")
@_operator_options
@click.option("--now", help="Evaluate as of this ISO 8601 time with its offset (default: now).")
def sweep_command(url: str, model_path: str, as_json: bool, now: str | None) -> None:
    """Fire what time alone made due (idle(), windows ending, requalify_after).

    The qualifications it fires are delivered by your app's processes, to the
    callbacks they register (on their next track(), flush() or sweep()): this
    command runs none. Schedule it (cron) when the app does not sweep itself.
    """
    when = None if now is None else _parse_time(now, "--now")
    with _operator_client(url, model_path) as client:
        fired = client.sweep(when)
        pending = len(client.pending())
    if as_json:
        _echo_json({"fired": [q.to_dict() for q in fired], "pending": pending})
        return
    _table(
        ["what", "subject", "account", "at (UTC)"],
        [
            [
                "disqualified" if q.disqualified_at else q.kind,
                q.subject_id,
                q.account_id or "-",
                _when(q.disqualified_at or q.qualified_at),
            ]
            for q in fired
        ],
    )
    click.echo(f"swept: {len(fired)} fired; {pending} waiting for your app's callbacks")


@main.command("forget")
@_operator_options
@click.argument("user")
@click.option(
    "--suppress",
    is_flag=True,
    help="Also drop every later track(), identify() and alias() for the user's ids.",
)
@click.option("--vacuum", is_flag=True, help="PostgreSQL: VACUUM the affected tables after.")
@click.option("--dry-run", is_flag=True, help="Print what would be deleted; change nothing.")
def forget_command(
    url: str,
    model_path: str,
    as_json: bool,
    user: str,
    suppress: bool,
    vacuum: bool,
    dry_run: bool,
) -> None:
    """Delete everything stored about USER (a GDPR erasure); see docs/privacy.md.

    Its events, traits, aliases, nudges, qualifications and states under every
    model go; its accounts are rebuilt, and their stored payloads redacted. With
    --dry-run, prints the rows it would delete per table.
    """
    with _operator_client(url, model_path) as client:
        counts = client.forget_preview(user)
        if not dry_run:
            client.forget(user, suppress=suppress, vacuum=vacuum)
    if as_json:
        _echo_json({"user": user, "dry_run": dry_run, "suppressed": suppress, "rows": counts})
        return
    width = max(len(name) for name in counts)
    for name, count in counts.items():
        click.echo(f"{name.ljust(width)}  {count:,}")
    if dry_run:
        click.echo(f"dry run: nothing deleted (without --dry-run, {user!r} is forgotten)")
    else:
        click.echo(f"forgotten: {user!r}" + (" (and suppressed)" if suppress else ""))


@main.command("prune")
@_operator_options
@click.option(
    "--older-than",
    "older_than",
    help="How old an event must be to go (e.g. 400d). Default: the model's client's"
    " retention setting (PQLKIT_RETENTION).",
)
@click.option(
    "--deliveries-older-than",
    "deliveries_older_than",
    help="Also delete the outbox's finished qualifications that finished this long ago.",
)
@click.option("--dry-run", is_flag=True, help="Print what would be pruned; change nothing.")
def prune_command(
    url: str,
    model_path: str,
    as_json: bool,
    older_than: str | None,
    deliveries_older_than: str | None,
    dry_run: bool,
) -> None:
    """Delete the events older than --older-than without changing any score.

    Each subject's state over those events is kept first as a checkpoint, which
    rebuilds start from (see docs/privacy.md, "Retention"). It runs in short
    transactions: the app keeps tracking meanwhile. Run it from cron.
    """
    age = _age(older_than, "--older-than")
    deliveries = _age(deliveries_older_than, "--deliveries-older-than")
    with _operator_client(url, model_path) as client:
        if age is None and client.settings.retention is None:
            raise click.UsageError("give --older-than (or set PQLKIT_RETENTION)")
        # on stderr (stdout stays the result's); its length is set once the first
        # chunk tells the total
        with click.progressbar(length=1, label="pruning", file=sys.stderr, show_pos=True) as bar:

            def progress(done: int, total: int) -> None:
                bar.length = total
                bar.update(done - bar.pos)

            try:
                result = client.prune(
                    age, dry_run=dry_run, deliveries_older_than=deliveries, progress=progress
                )
            except PqlkitError as error:
                raise click.ClickException(str(error)) from error
    if as_json:
        _echo_json(result.to_dict())
        return
    verb = "would delete" if dry_run else "deleted"
    click.echo(
        f"{verb} {result.events:,} events older than {result.horizon.isoformat()}"
        f" (through seq {result.through_seq:,}); {result.subjects:,} checkpoints"
        + ("" if dry_run else f" ({result.checkpoint_bytes:,} bytes)")
        + (f"; {result.deliveries:,} finished deliveries" if deliveries is not None else "")
    )
    if dry_run:
        click.echo("dry run: nothing deleted")


def _age(value: str | None, option: str) -> timedelta | None:
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint=option) from None


@main.command("vacuum")
@_store_option()
@click.option("--dry-run", is_flag=True, help="Print what it would do; change nothing.")
def vacuum_command(url: str, dry_run: bool) -> None:
    """Give the space of deleted rows back (after prune or forget).

    SQLite: VACUUM rewrites the file without its free pages, then the write-ahead
    log is checkpointed and truncated. It needs the write lock for as long as it
    takes (writers wait) and up to twice the file's size on disk. PostgreSQL:
    VACUUM of pqlkit's tables marks the space of deleted rows free for new rows
    (it takes no exclusive lock; the files do not shrink: VACUUM FULL, not run
    here, would).
    """
    from .stores.postgres import PostgresStore
    from .stores.sqlite import SQLiteStore

    store = _open(url)
    try:
        if isinstance(store, SQLiteStore):
            files = [store.path, f"{store.path}-wal"]
            before = sum(os.path.getsize(f) for f in files if os.path.isfile(f))
            if dry_run:
                click.echo(f"would run VACUUM on {store.path} ({before:,} bytes with its WAL)")
                return
            store.scrub(vacuum=True)
            after = sum(os.path.getsize(f) for f in files if os.path.isfile(f))
            click.echo(f"vacuumed {store.path}: {before:,} -> {after:,} bytes")
        elif isinstance(store, PostgresStore):
            if dry_run:
                click.echo(f"would run VACUUM on the tables of schema {store.schema!r}")
                return
            store.scrub(vacuum=True)
            click.echo(f"vacuumed the tables of schema {store.schema!r}")
        else:
            click.echo(f"nothing to vacuum in a {type(store).__name__}")
    except PqlkitError as error:
        raise click.ClickException(str(error)) from error
    finally:
        store.close()


# -- the model lab -------------------------------------------------------------------------


def _lab_options(fn: _C) -> _C:
    """What ``backtest``, ``compare`` and ``calibrate`` take: the history, the outcome, the
    snapshots."""
    options = [
        click.option(
            "--lookback",
            default="90d",
            show_default=True,
            help="How recent an event makes a subject eligible at a snapshot.",
        ),
        click.option("--step", default="7d", show_default=True, help="The time between snapshots."),
        click.option("--end", help="Where the history ends, ISO 8601 with its offset."),
        click.option(
            "--start", help="When the snapshots start counting, ISO 8601 with its offset."
        ),
        click.option(
            "--horizon",
            default="30d",
            show_default=True,
            help="How soon after a snapshot a conversion counts (e.g. 30d, 12h).",
        ),
        click.option(
            "--outcome",
            required=True,
            help="What converting is: an event name (its first occurrence), or a CSV file"
            " of subject_id,converted_at (a CRM export).",
        ),
        click.option(
            "--events",
            "source",
            required=True,
            help="The history: a store URL (sqlite:///pqlkit.db, opened read-only) or a"
            " JSON Lines file in the `pqlkit export` format.",
        ),
    ]
    for option in options:
        fn = option(fn)
    return fn


def _lab_duration(value: str, option: str) -> timedelta:
    try:
        duration = parse_duration(value)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint=option) from None
    if duration <= timedelta(0):
        raise click.BadParameter(f"must be positive, got {value!r}", param_hint=option)
    return duration


def _lab_model(path: str, option: str) -> Model:
    try:
        return load_model(path, option)
    except ValidationError as error:
        raise click.BadParameter(error.reason, param_hint=option) from None


_LAB_FIELDS = {
    "events": "--events",
    "outcome": "--outcome",
    "horizon": "--horizon",
    "step": "--step",
    "lookback": "--lookback",
    "start": "--start",
    "end": "--end",
    "target_rate": "--target-rate",
    "capacity_per_week": "--capacity",
    "split": "--split",
    "recorded": "--recorded",
}


@contextmanager
def _lab_errors() -> Iterator[None]:
    """A lab function's ValidationError as the option it names (the source is never changed)."""
    try:
        yield
    except ValidationError as error:
        root = error.field.split("[", 1)[0]
        if root in _LAB_FIELDS:
            raise click.BadParameter(error.reason, param_hint=_LAB_FIELDS[root]) from None
        raise click.ClickException(str(error)) from None
    except PqlkitError as error:
        raise click.ClickException(str(error)) from None


@contextmanager
def _lab_progress(label: str) -> Iterator[Callable[[int, int], None]]:
    """A progress bar on standard error, made when the replay reports its first progress
    (the number of events is known once the history is scanned)."""
    bars: list[Any] = []

    def progress(done: int, total: int) -> None:
        if not bars:
            bar = click.progressbar(length=max(total, 1), label=label, file=sys.stderr)
            bar.__enter__()
            bars.append(bar)
        bar = bars[0]
        bar.update(max(0, min(done, total) - bar.pos))

    try:
        yield progress
    finally:
        if bars:
            bars[0].__exit__(None, None, None)


def _lab_kwargs(
    source: str,
    outcome: str,
    horizon: str,
    start: str | None,
    end: str | None,
    step: str,
    lookback: str,
) -> dict[str, Any]:
    return {
        "events": source,
        "outcome": outcome,
        "horizon": _lab_duration(horizon, "--horizon"),
        "step": _lab_duration(step, "--step"),
        "lookback": _lab_duration(lookback, "--lookback"),
        "start": None if start is None else _parse_time(start, "--start"),
        "end": None if end is None else _parse_time(end, "--end"),
    }


def _run_backtest(
    models: Model | dict[str, Model],
    kwargs: dict[str, Any],
    as_json: bool,
    html: str | None,
) -> None:
    from ._lab import backtest

    with _lab_errors(), _lab_progress("Replaying events") as progress:
        report = backtest(models, progress=progress, **kwargs)
    _lab_output(report, html, as_json)


class _LabResult(Protocol):
    def to_html(self, path: str) -> object: ...
    def to_dict(self) -> dict[str, Any]: ...
    def table(self) -> str: ...


def _lab_output(result: _LabResult, html: str | None, as_json: bool) -> None:
    """A backtest's or a calibration's page (--html), then its JSON (--json) or its table."""
    if html is not None:
        try:
            result.to_html(html)
        except ImportError as error:
            raise click.ClickException(str(error)) from None
        click.echo(f"wrote the report page to {html}", err=True)
    if as_json:
        _echo_json(result.to_dict())
    else:
        click.echo(result.table())


_HTML_HELP = "Also write the report as one self-contained HTML page (needs pqlkit[lab])."
_RECORDED_HELP = (
    "Measure the qualifications the store (--events) recorded for each model, live or as a"
    " shadow, instead of replaying its rule (scores and signals are still replayed)."
)


@main.command("backtest")
@click.argument("model_path", metavar="MODULE:ATTR")
@_lab_options
@click.option("--json", "as_json", is_flag=True, help="Print report.to_dict() as JSON.")
@click.option("--html", type=click.Path(dir_okay=False), help=_HTML_HELP)
@click.option("--recorded", is_flag=True, help=_RECORDED_HELP)
def backtest_command(
    model_path: str,
    source: str,
    outcome: str,
    horizon: str,
    start: str | None,
    end: str | None,
    step: str,
    lookback: str,
    as_json: bool,
    html: str | None,
    recorded: bool,
) -> None:
    """Replay a history through a model and measure its rules against conversions.

    The history is only read. See docs/lab.md for the method and every figure.
    """
    model = _lab_model(model_path, "MODULE:ATTR")
    kwargs = _lab_kwargs(source, outcome, horizon, start, end, step, lookback)
    _run_backtest(model, {**kwargs, "recorded": recorded}, as_json, html)


@main.command("compare")
@click.argument("model_paths", metavar="MODULE:ATTR MODULE:ATTR...", nargs=-1, required=True)
@_lab_options
@click.option("--json", "as_json", is_flag=True, help="Print report.to_dict() as JSON.")
@click.option("--html", type=click.Path(dir_okay=False), help=_HTML_HELP)
@click.option("--recorded", is_flag=True, help=_RECORDED_HELP)
def compare_command(
    model_paths: tuple[str, ...],
    source: str,
    outcome: str,
    horizon: str,
    start: str | None,
    end: str | None,
    step: str,
    lookback: str,
    as_json: bool,
    html: str | None,
    recorded: bool,
) -> None:
    """Backtest two or more models on the same snapshots, side by side.

    Each model is named by its Model name, or by its MODULE:ATTR when two share a
    name. Differences (the later model minus the earlier) come with 95% intervals.
    """
    if len(model_paths) < 2:
        raise click.BadParameter("give two or more models to compare", param_hint="MODULE:ATTR")
    loaded = [(path, _lab_model(path, "MODULE:ATTR")) for path in model_paths]
    names = [model.name for _, model in loaded]
    models: dict[str, Model] = {}
    for path, model in loaded:
        name = model.name if names.count(model.name) == 1 else path
        if name in models:
            raise click.BadParameter(f"{path!r} is given twice", param_hint="MODULE:ATTR")
        models[name] = model
    kwargs = _lab_kwargs(source, outcome, horizon, start, end, step, lookback)
    _run_backtest(models, {**kwargs, "recorded": recorded}, as_json, html)


@main.command("calibrate")
@click.argument("model_path", metavar="MODULE:ATTR")
@_lab_options
@click.option(
    "--target-rate",
    type=float,
    help="The share of eligible subjects to flag (default 0.10, the middle of 5-15%).",
)
@click.option(
    "--capacity", type=float, help="How many leads sales can take a week (instead of a rate)."
)
@click.option(
    "--split",
    type=float,
    default=0.5,
    show_default=True,
    help="The share of the history to fit on; the rest is held out to check the fit.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the calibration as JSON.")
@click.option(
    "--html",
    type=click.Path(dir_okay=False),
    help="Also write the held-out report and the threshold sweep as one HTML page"
    " (needs pqlkit[lab]).",
)
def calibrate_command(
    model_path: str,
    source: str,
    outcome: str,
    horizon: str,
    start: str | None,
    end: str | None,
    step: str,
    lookback: str,
    target_rate: float | None,
    capacity: float | None,
    split: float,
    as_json: bool,
    html: str | None,
) -> None:
    """Fit points for a model's signals and a threshold, checked on held-out history.

    The earlier part of the history fits the weights (a regularised logistic
    regression) and picks the threshold; the later part backtests the original
    and the suggested model side by side. Prints the points(...) and rule to
    paste into the model. See docs/lab.md.
    """
    from ._lab import calibrate

    model = _lab_model(model_path, "MODULE:ATTR")
    kwargs = _lab_kwargs(source, outcome, horizon, start, end, step, lookback)
    with _lab_errors(), _lab_progress("Replaying events") as progress:
        calibration = calibrate(
            model,
            target_rate=target_rate,
            capacity_per_week=capacity,
            split=split,
            progress=progress,
            **kwargs,
        )
    _lab_output(calibration, html, as_json)
