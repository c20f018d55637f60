"""A week at a small company, scored by the data-tooling model (``make demo``).

Four people at "acme" (600 employees) and one hobbyist on a gmail address use a
data tool from Monday to Sunday. A frozen clock moves the story a day at a time;
pqlkit records every event in an SQLite file (the default store), fires the PQL
and PQA alerts below the moment someone qualifies, and at the end explains who did
not qualify and why. Then it backtests the model on a simulated history
(``pqlkit.simulate``, ``pqlkit.backtest``) and prints the report's table.

Run it from the repository root: ``python examples/demo.py [path/to/file.db]`` (default:
``pqlkit-demo/pqlkit-demo.db`` in the temporary directory, deleted at start).
"""

from __future__ import annotations

import sys
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from data_tooling import T0, model

import pqlkit
from pqlkit.testing import FrozenClock

DEFAULT_DB = Path(tempfile.gettempdir()) / "pqlkit-demo" / "pqlkit-demo.db"

WORDS = {
    "signed_up": "signed up",
    "warehouse_connected": "connected a warehouse",
    "dashboard_built": "built a dashboard",
    "teammate_invited": "invited a teammate",
    "api_key_generated": "generated an API key",
    "page_viewed": "looked at a page",
    "usage_reported": "reported usage",
    "login": "logged in",
}

# (user, account, event, properties), by day of the week; the hour is 09:00 + position.
Step = tuple[str, str | None, str, dict[str, Any]]
WEEK: list[list[Step]] = [
    [  # Monday
        ("jane", "acme", "signed_up", {}),
        ("jane", "acme", "warehouse_connected", {"warehouse": "snowflake"}),
        ("sam", None, "signed_up", {}),
        ("sam", None, "warehouse_connected", {"warehouse": "postgres"}),
    ],
    [  # Tuesday
        ("jane", "acme", "dashboard_built", {"name": "Revenue"}),
        ("sam", None, "dashboard_built", {"name": "Side project"}),
    ],
    [  # Wednesday
        ("jane", "acme", "teammate_invited", {"email": "raj@acme.io"}),
        ("jane", "acme", "teammate_invited", {"email": "mei@acme.io"}),
        ("raj", "acme", "signed_up", {}),
        ("sam", None, "api_key_generated", {}),
    ],
    [  # Thursday
        ("mei", "acme", "signed_up", {}),
        ("mei", "acme", "warehouse_connected", {"warehouse": "bigquery"}),
        ("raj", "acme", "page_viewed", {"path": "/pricing"}),
    ],
    [  # Friday
        ("sam", None, "page_viewed", {"path": "/pricing"}),
        ("sam", None, "usage_reported", {"rows": 900_000}),
        ("mei", "acme", "usage_reported", {"rows": 850_000}),
    ],
    [],  # Saturday: nobody works
    [  # Sunday
        ("tom", "acme", "signed_up", {}),
        ("tom", "acme", "login", {}),
        ("jane", "acme", "login", {}),
    ],
]

PEOPLE = {
    # user: (traits, account given to identify)
    "jane": ({"email": "jane@acme.io", "email_domain": "acme.io"}, "acme"),
    "raj": ({"email": "raj@acme.io", "email_domain": "acme.io"}, "acme"),
    "mei": ({"email": "mei@acme.io", "email_domain": "acme.io"}, "acme"),
    "tom": ({"email": "tom@acme.io", "email_domain": "acme.io"}, "acme"),
    "sam": ({"email": "sam@gmail.com", "email_domain": "gmail.com"}, None),
}
FREE_ROW_LIMIT = 1_000_000


def describe(event: str, props: dict[str, Any]) -> str:
    """An event in plain words."""
    words = WORDS.get(event, event)
    if event == "page_viewed":
        return f"looked at {props['path']}"
    if event == "teammate_invited":
        return f"invited {props['email']}"
    if event == "usage_reported":
        return f"used {props['rows']:,} of {FREE_ROW_LIMIT:,} free rows"
    return words


def print_alert(q: pqlkit.Qualification) -> None:
    """What a sales or success team would get: who, when, and why (the explanation lines)."""
    who = f"user {q.subject_id}" if q.kind == "pql" else f"account {q.subject_id}"
    print(f"\n    *** {q.kind.upper()} ALERT: {who} qualified on {q.qualified_at:%A at %H:%M} ***")
    for line in q.explanation:
        print(f"        {line}")
    print()


def build_line() -> str:
    """Which build of pqlkit runs the demo, and how to run the other.

    The same check as ``pqlkit --version``: in the compiled build, pqlkit's hot path
    (``pqlkit._core`` among others) is a C extension module, not a ``.py`` file.
    """
    import pqlkit._core

    if str(pqlkit._core.__file__).endswith(".py"):
        return (
            "Running the pure-Python build of pqlkit (what `make demo` and `pip install .`"
            " give). The compiled build, less CPU per event (docs/performance.md, Builds):"
            " `make demo-mypyc`."
        )
    return (
        "Running the compiled (mypyc) build of pqlkit (`make demo-mypyc`, or a release's"
        " platform wheel). The pure-Python build, which behaves the same: `make demo`."
    )


def main(db_path: Path | None = None) -> None:
    """Simulate the week on a fresh SQLite file and print what happened."""
    path = Path(db_path) if db_path is not None else DEFAULT_DB
    path.parent.mkdir(parents=True, exist_ok=True)
    for leftover in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        leftover.unlink(missing_ok=True)  # start from scratch: reruns print the same story

    clock = FrozenClock(T0)
    leads: set[str] = set()
    with pqlkit.Client(model, store=f"sqlite:///{path}", clock=clock) as client:

        @client.on_pql
        @client.on_pqa
        def alert(q: pqlkit.Qualification) -> None:
            leads.add(q.subject_id)
            print_alert(q)

        print(f"pqlkit demo: model {model.name!r}; the events are stored in {path}")
        print(build_line())
        print("acme is a 600-person data company; sam signs up alone, with a gmail address.")
        client.group("acme", {"employees": 600, "industry": "data"})
        for user, (traits, account) in PEOPLE.items():
            client.identify(user, {**traits, "row_limit": FREE_ROW_LIMIT}, account_id=account)

        tracked = 0
        for day, steps in enumerate(WEEK):
            morning = clock.set(T0 + timedelta(days=day))
            print(f"\n{morning:%A %Y-%m-%d}")
            if not steps:
                print("  (nobody used the product)")
                continue
            for hour, (user, account, event, props) in enumerate(steps):
                now = clock.set(morning + timedelta(hours=hour))
                where = f" ({account})" if account else ""
                print(f"  {now:%H:%M} {user}{where} {describe(event, props)}")
                client.track(user, event, props, account_id=account)  # alerts print in here
                tracked += 1
            board = []
            for user in dict.fromkeys(step[0] for step in steps):
                b, f = client.scores(user)["behavior"], client.scores(user)["fit"]
                board.append(f"{user} {b:g}{f:+g}={b + f:g}" + (" (PQL)" if user in leads else ""))
            print("  end of day, behavior+fit (PQL at 50): " + ", ".join(board))

        stats = client.stats()
        print("\nThe week in numbers")
        print(
            f"  {tracked} events from {stats.users} users at {stats.accounts} account:"
            f" {stats.pqls} PQL ({', '.join(sorted(u for u in leads if u in PEOPLE))}),"
            f" {stats.pqas} PQA ({', '.join(sorted(a for a in leads if a not in PEOPLE))})."
        )
        verdict = "inside" if stats.pql_rate_healthy else "outside"
        print(f"  PQL rate {stats.pql_rate:.0%}: {verdict} the 5-15% band called healthy.")

        print("\nWho did not qualify, and why (client.explain())")
        for user in PEOPLE:
            if user in leads:
                continue
            b, f = client.scores(user)["behavior"], client.scores(user)["fit"]
            print(f"  {user}: behavior {b:g} + fit {f:g} = {b + f:g}, below 50")
            for line in client.explain(user):
                if line.startswith(("behavior =", "fit =", "pql:")):
                    print(f"      {line}")
        print(f"\nThe data stays in {path} (sqlite3 can open it); a rerun starts afresh.")
    backtest_on_a_simulated_history()


def backtest_on_a_simulated_history() -> None:
    """Is the model any good? Backtest it on five months of a simulated product (docs/lab.md)."""
    print("\nIs the model any good? A backtest on five simulated months of 1,500 users")
    print("(pqlkit.simulate; with your own history: pqlkit backtest examples.data_tooling:model")
    print(" --events sqlite:///pqlkit.db --outcome subscription_started)\n")
    history = pqlkit.simulate(seed=7, users=1_500, accounts=150, days=150)
    print(pqlkit.backtest(model, history, outcome="subscription_started"))


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else None)
