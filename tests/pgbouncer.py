"""A PgBouncer in transaction pooling mode in front of the test server, for the ``pgbouncer`` tests.

:func:`pgbouncer` starts one on the first call (Debian's ``pgbouncer``, which ``make
pgbouncer`` installs: .ci/ensure-pgbouncer) on a free port of its own, with its
configuration, log and pid file in a temporary directory, and the suite's session
fixture in conftest.py stops it when the session ends. ``PQLKIT_TEST_PGBOUNCER_DSN``
names one already running instead (then nothing is started, nor stopped, and the test
that restarts PgBouncer skips). Without pgbouncer the tests skip with a message; under
``CI=true`` they fail.

PgBouncer refuses to run as root: as root it is started with ``-u postgres`` (it
drops to that user after reading its configuration).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import IN_CI, POSTGRES_DSN, require_postgres

__all__ = ["PgBouncer", "pgbouncer", "pgbouncer_dsn", "stop_pgbouncer"]

_EXISTING = os.environ.get("PQLKIT_TEST_PGBOUNCER_DSN")


def _binary() -> str | None:
    found = shutil.which("pgbouncer")
    if found is None and os.access("/usr/sbin/pgbouncer", os.X_OK):
        found = "/usr/sbin/pgbouncer"
    return found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PgBouncer:
    """One pgbouncer process in transaction pooling mode, in front of the test server."""

    def __init__(self, binary: str, upstream: str) -> None:
        from psycopg.conninfo import conninfo_to_dict

        params = conninfo_to_dict(upstream)
        self.binary = binary
        self.port = _free_port()
        self.directory = Path(tempfile.mkdtemp(prefix="pqlkit-pgbouncer-"))
        self.directory.chmod(0o777)  # pgbouncer, as postgres, writes its log and pid here
        user = params.get("user", "postgres")
        dbname = params.get("dbname", "test")
        host = params.get("host", "127.0.0.1")
        port = params.get("port", "5432")
        server = f"host={host} port={port} user={user}"
        if params.get("password"):
            server += f" password={params['password']}"
        (self.directory / "pgbouncer.ini").write_text(
            "[databases]\n"
            f"{dbname} = {server} dbname={dbname}\n"
            "[pgbouncer]\n"
            "listen_addr = 127.0.0.1\n"
            f"listen_port = {self.port}\n"
            "unix_socket_dir =\n"
            "auth_type = any\n"
            "pool_mode = transaction\n"
            "max_client_conn = 400\n"
            "default_pool_size = 8\n"
            "ignore_startup_parameters = extra_float_digits,options\n"
            f"logfile = {self.directory / 'pgbouncer.log'}\n"
            f"pidfile = {self.directory / 'pgbouncer.pid'}\n"
        )
        self.dsn = f"postgresql://{user}@127.0.0.1:{self.port}/{dbname}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start pgbouncer and wait until it accepts connections (up to 10 s)."""
        command = [self.binary]
        if os.geteuid() == 0:
            command += ["-u", "postgres"]
        command.append(str(self.directory / "pgbouncer.ini"))
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
        )
        deadline = time.monotonic() + 10
        while True:
            if self.process.poll() is not None:
                stderr = self.process.stderr.read().decode() if self.process.stderr else ""
                raise RuntimeError(f"pgbouncer exited with {self.process.returncode}: {stderr}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"pgbouncer did not listen on port {self.port}") from None
                time.sleep(0.02)

    def stop(self) -> None:
        """Stop it at once (SIGTERM: PgBouncer's immediate shutdown closes every connection)."""
        process, self.process = self.process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:  # pragma: no cover - a stuck pgbouncer
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()

    def restart(self, down: float = 0.0) -> None:
        """Stop it (dropping every client connection), wait ``down`` seconds, start it again."""
        self.stop()
        time.sleep(down)
        self.start()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


_started: list[PgBouncer] = []
_failed: list[str] = []


def _unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: the pgbouncer tests must run)", pytrace=False)
    pytest.skip(reason)


def pgbouncer() -> PgBouncer | None:
    """This session's PgBouncer (started on first use), or None when
    ``PQLKIT_TEST_PGBOUNCER_DSN`` names one already running. Skips the test when there is
    none and none can be started (fails it under ``CI=true``)."""
    require_postgres()
    if _EXISTING:
        return None
    if _started:
        return _started[0]
    if _failed:
        _unavailable(_failed[0])
    binary = _binary()
    if binary is None:
        _failed.append("pgbouncer is not installed (make pgbouncer installs it)")
        _unavailable(_failed[0])
    assert binary is not None
    bouncer = PgBouncer(binary, POSTGRES_DSN)
    try:
        bouncer.start()
    except (OSError, RuntimeError) as error:
        bouncer.close()
        _failed.append(f"pgbouncer cannot start: {error}")
        _unavailable(_failed[0])
    _started.append(bouncer)
    return bouncer


def pgbouncer_dsn() -> str:
    """The DSN of this session's PgBouncer (see :func:`pgbouncer`)."""
    bouncer = pgbouncer()
    if bouncer is None:
        assert _EXISTING is not None
        return _EXISTING
    return bouncer.dsn


def stop_pgbouncer() -> None:
    """Stop the PgBouncer this session started, if any (the session fixture calls it)."""
    while _started:
        _started.pop().close()
