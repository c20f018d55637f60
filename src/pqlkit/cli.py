"""The ``pqlkit`` command: move a store's data between stores as JSON Lines.

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
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import IO, Any

import click
from click.core import ParameterSource

from . import _core, _version
from ._client import Client
from ._convert import dumps, json_converter
from ._loading import load_model
from ._model import Model
from ._settings import STORE_URL
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


@main.command("export")
@click.option(
    "--store",
    "url",
    required=True,
    envvar=STORE_URL,
    show_envvar=True,
    help="The store URL, e.g. sqlite:///pqlkit.db.",
)
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
@click.option(
    "--store",
    "url",
    required=True,
    envvar=STORE_URL,
    show_envvar=True,
    help="The store URL, e.g. postgresql://...",
)
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
