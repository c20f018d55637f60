"""A CRM feed: append qualifications to a JSON Lines file that a reverse-ETL tool syncs.

:class:`pqlkit.sinks.JsonlSink` writes one line per ``Qualification.id`` (a
redelivery adds nothing), safe to share between processes; a tool such as
Hightouch or Census (or a script of yours) reads the file with
:func:`pqlkit.sinks.read_jsonl` and upserts each record into the CRM.

Run it: ``python examples/crm_sync.py [path]`` qualifies two users and prints the file.
"""

from __future__ import annotations

import sys

import pqlkit
from pqlkit.sinks import JsonlSink, read_jsonl


def main(path: str) -> None:
    """Two users qualify; a second delivery of the first (a redelivery) adds no line."""
    model = pqlkit.Model("crm-sync-demo", pql=pqlkit.did("dashboard_built"))
    sink = JsonlSink(path)
    with pqlkit.Client(model, store="memory://") as client:
        client.on_pql(sink, name="crm-file")
        client.on_disqualified(sink, name="crm-file")
        first = client.track("jane", "dashboard_built", account_id="acme").qualified[0]
        client.track("raj", "dashboard_built", account_id="acme")
        sink(first)  # as if pqlkit delivered it again
    for data in read_jsonl(path):
        print(data["type"], data["subject_id"], data["account_id"], data["id"])


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "pqlkit-qualifications.jsonl")
