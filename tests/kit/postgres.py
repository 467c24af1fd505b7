"""A real PostgreSQL for the tests: one ``pgserver`` cluster per session, a database per test.

``pgserver`` (in the ``test`` extra) bundles PostgreSQL binaries and runs the server on a unix
socket in a folder of its own, so nothing listens on the network. Registered as a pytest plugin
from tests/conftest.py; the server starts only when a test asks for ``pg_server`` / ``pg_url``.
"""

from __future__ import annotations

import itertools
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

_COUNTER = itertools.count()


@dataclass
class PgServer:
    """A running test cluster: make databases, stop it hard, start it again."""

    folder: Path
    server: Any = field(default=None)

    def start(self) -> PgServer:
        import pgserver

        self.server = pgserver.get_server(self.folder, cleanup_mode="stop")
        return self

    def uri(self, database: str = "postgres") -> str:
        uri: str = self.server.get_uri(database)
        return uri

    def new_database(self, prefix: str = "t") -> str:
        name = f"{prefix}_{next(_COUNTER)}"
        self.server.psql(f"CREATE DATABASE {name};")
        return self.uri(name)

    def psql(self, command: str, database: str = "postgres") -> str:
        """Run SQL through the bundled psql (as the superuser) in ``database``."""
        from pgserver._commands import POSTGRES_BIN_PATH

        out = subprocess.run(
            [str(POSTGRES_BIN_PATH / "psql"), "-v", "ON_ERROR_STOP=1", "-At", self.uri(database)],
            input=command,
            text=True,
            capture_output=True,
            check=True,
            timeout=60,
        )
        return out.stdout

    def pg_ctl(self, *args: str) -> None:
        from pgserver._commands import pg_ctl

        pg_ctl(list(args), pgdata=self.server.pgdata, user=self.server.system_user, timeout=60)

    def stop_immediate(self) -> None:
        """``pg_ctl stop -m immediate``: the server dies without a checkpoint, like a crash."""
        self.pg_ctl("-w", "-m", "immediate", "stop")

    def restart(self) -> None:
        self.server.ensure_postgres_running()

    def cleanup(self) -> None:
        if self.server is not None:
            self.server.cleanup()


@contextmanager
def running_server() -> Iterator[PgServer]:
    """A new cluster in a folder of its own, stopped and deleted afterwards.

    Not under pytest's tmp folder: as root, pgserver runs PostgreSQL as the user ``pgserver``,
    which must be able to traverse every parent folder (pytest keeps its own at 0700)."""
    folder = Path(tempfile.mkdtemp(prefix="dws-pg-"))
    folder.chmod(0o755)
    server = PgServer(folder / "data")
    try:
        yield server.start()
    finally:
        server.cleanup()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """The session's PostgreSQL (started on first use, stopped when the session ends)."""
    with running_server() as server:
        yield server


@pytest.fixture
def pg_url(pg_server: PgServer) -> str:
    """A URL to a fresh, empty database of this test's own."""
    return pg_server.new_database()


@pytest.fixture(params=["sqlite", "postgres"])
def any_ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """A ledger on each backend in turn: SQLite in the test's folder, then PostgreSQL in a
    database of the test's own (``open_ledger``, as the library opens them)."""
    from dagster_wandb_secure.core.ledger_api import open_ledger

    spec = None if request.param == "sqlite" else str(request.getfixturevalue("pg_url"))
    opened = open_ledger(spec, tmp_path)
    yield opened
    opened.close()
