"""A throwaway PostgreSQL server (initdb in a temp dir, trust auth, no fsync) for a test session."""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Self

import psycopg
from psycopg import sql

SUPERUSER = "postgres"
# PostgreSQL refuses to run as root; as root we run it as this existing unprivileged user.
UNPRIVILEGED_USER = "nobody"
START_TIMEOUT_SECONDS = 30


def find_pg_bin() -> Path | None:
    """Directory holding initdb/pg_ctl: $PG_BIN, else newest /usr/lib/postgresql/*/bin, else
    `pg_config --bindir`; None if there is none."""
    if os.environ.get("PG_BIN"):
        return Path(os.environ["PG_BIN"])

    def version(path: str) -> tuple[int, ...]:
        return tuple(int(part) for part in re.findall(r"\d+", Path(path).parent.name))

    candidates = [
        path for path in glob.glob("/usr/lib/postgresql/*/bin") if Path(path, "initdb").exists()
    ]
    if candidates:
        return Path(max(candidates, key=version))
    if shutil.which("pg_config"):
        bindir = subprocess.run(
            ["pg_config", "--bindir"], capture_output=True, text=True, check=False
        ).stdout.strip()
        if bindir and Path(bindir, "initdb").exists():
            return Path(bindir)
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ThrowawayPostgres:
    """One postmaster on 127.0.0.1:PORT with its data in a temp dir that `stop()` deletes."""

    def __init__(self, bin_dir: Path, root: Path, run_as: list[str]) -> None:
        self._bin = bin_dir
        self._root = root
        self._data = root / "data"
        self._log = root / "postgres.log"
        self._run_as = run_as
        self._port = 0
        self._running = False

    @classmethod
    def start(cls) -> ThrowawayPostgres:
        bin_dir = find_pg_bin()
        if bin_dir is None or not (bin_dir / "initdb").exists():
            raise RuntimeError(
                "PostgreSQL server binaries (initdb, pg_ctl) not found: install them "
                "(`apt-get install -y postgresql`) or set PG_BIN to their directory"
            )
        root = Path(tempfile.mkdtemp(prefix="billfold-pg-"))
        run_as: list[str] = []
        if os.geteuid() == 0:
            user = pwd.getpwnam(UNPRIVILEGED_USER)
            os.chown(root, user.pw_uid, user.pw_gid)
            root.chmod(0o700)
            if shutil.which("runuser"):
                run_as = ["runuser", "-u", UNPRIVILEGED_USER, "--"]
            else:
                run_as = ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}"]
                run_as += ["--clear-groups", "--"]
        server = cls(bin_dir, root, run_as)
        try:
            server._init_and_start()
        except BaseException:
            server.stop()
            raise
        atexit.register(server.stop)
        return server

    def _run(self, *args: str) -> None:
        command = [*self._run_as, *args]
        result = subprocess.run(
            command,
            cwd=self._root,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT_SECONDS + 30,
            check=False,
        )
        if result.returncode != 0:
            log = self._log.read_text(errors="replace") if self._log.exists() else ""
            raise RuntimeError(
                f"{' '.join(command)} failed ({result.returncode}):\n"
                f"{result.stdout}{result.stderr}{log}"
            )

    def _init_and_start(self) -> None:
        self._run(
            str(self._bin / "initdb"),
            "-D",
            str(self._data),
            "-U",
            SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            "--no-locale",
            "--no-sync",
        )
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": f"'{self._root}'",
            "max_connections": "200",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
        }
        with (self._data / "postgresql.conf").open("a") as conf:
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())
        for attempt in range(3):  # a "free" port can be taken before postgres binds it
            self._port = _free_port()
            with (self._data / "postgresql.conf").open("a") as conf:
                conf.write(f"port = {self._port}\n")
            try:
                self._pg_ctl("-w", "-t", str(START_TIMEOUT_SECONDS), "-l", str(self._log), "start")
            except RuntimeError:
                if attempt == 2:
                    raise
                continue
            self._running = True
            return

    def _pg_ctl(self, *args: str) -> None:
        self._run(str(self._bin / "pg_ctl"), "-D", str(self._data), *args)

    @property
    def port(self) -> int:
        return self._port

    def url_for(self, database: str) -> str:
        """SQLAlchemy URL (psycopg 3 driver) of `database` on this server."""
        return f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{self._port}/{database}"

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the default `postgres` database."""
        return self.url_for("postgres")

    def create_database(self, name: str) -> str:
        """Create an empty database `name` and return its SQLAlchemy URL."""
        conninfo = f"host=127.0.0.1 port={self._port} user={SUPERUSER} dbname=postgres"
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url_for(name)

    def stop(self) -> None:
        """Stop the server immediately (no checkpoint) and delete its directory."""
        if self._running:
            self._running = False
            # On failure still delete the directory: a dead server is what we want anyway.
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                self._pg_ctl("-m", "immediate", "stop")
        shutil.rmtree(self._root, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
