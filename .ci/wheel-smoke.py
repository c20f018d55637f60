"""A smoke test of an installed pqlkit wheel (cibuildwheel's test-command runs it).

Checks which build is installed (``--expect mypyc``: the compiled one, whose hot path
is C extension modules; ``--expect pure``: the sources), then records events on a
MemoryStore and an SQLiteStore and checks that the rule fires once, the scores add up
and a bad input is refused naming its field. Needs only pqlkit's runtime
dependencies; prints one line and exits 0, or fails with a message.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--expect", choices=["mypyc", "pure"], required=True)
    args = parser.parse_args(argv)

    import pqlkit
    import pqlkit._core
    from pqlkit.testing import START, FrozenClock

    build = "pure" if str(pqlkit._core.__file__).endswith(".py") else "mypyc"
    if build != args.expect:
        sys.exit(f"expected the {args.expect} build, but {pqlkit._core.__file__} is the {build}")

    model = pqlkit.Model(
        "smoke", scores={"logins": pqlkit.count("login")}, pql=pqlkit.count("login") >= 3
    )
    with tempfile.TemporaryDirectory() as tmp:
        stores = {
            "memory": pqlkit.MemoryStore(),
            "sqlite": pqlkit.SQLiteStore(Path(tmp) / "smoke.db"),
        }
        for name, store in stores.items():
            fired: list[str] = []
            with pqlkit.Client(model, store=store, clock=FrozenClock(START)) as client:
                client.on_pql(lambda q, fired=fired: fired.append(q.subject_id))
                for i in range(5):
                    client.track("ada", "login", message_id=f"m{i}", timestamp=START)
                client.flush()
                if client.scores("ada")["logins"] != 5 or fired != ["ada"]:
                    sys.exit(f"{name}: logins {client.scores('ada')}, fired {fired}")
                try:
                    client.track("", "login")
                except pqlkit.ValidationError as error:
                    if error.field != "user_id":
                        sys.exit(f"{name}: ValidationError names {error.field!r}")
                else:
                    sys.exit(f"{name}: an empty user_id was accepted")
            store.close()
    print(f"pqlkit {pqlkit.__version__} ({build} build) on Python {sys.version.split()[0]}: ok")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
