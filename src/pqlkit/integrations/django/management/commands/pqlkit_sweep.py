"""``python manage.py pqlkit_sweep [--now ISO]``: fire and deliver what time alone made due.

Run it from cron or a scheduler every few minutes: it re-evaluates the subjects
whose truth can change with time alone (``idle()``, windows ending,
``requalify_after``), delivers what is due to the callbacks of ``settings.PQLKIT``
(and retries due ones), and prints one line per qualification or disqualification.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from .....exceptions import ValidationError
from ... import get_client

__all__ = ["Command"]


class Command(BaseCommand):
    """The ``pqlkit_sweep`` command."""

    help = "Run pqlkit's sweep: fire and deliver what time alone made due."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--now",
            help="evaluate as of this aware ISO 8601 time (default: the client's clock)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        now = None
        if options["now"]:
            try:
                now = datetime.fromisoformat(options["now"])
            except ValueError as error:
                raise CommandError(f"--now: {error}") from None
        client = get_client()
        try:
            fired = client.sweep(now)
        except ValidationError as error:
            raise CommandError(f"--now: {error.reason}") from None
        client.flush()
        for q in fired:
            what = "disqualified" if q.disqualified_at is not None else q.kind
            self.stdout.write(f"{what} {q.subject_id}")
        self.stdout.write(f"pqlkit sweep: {len(fired)} fired, {len(client.pending())} pending")
