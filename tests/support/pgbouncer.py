"""A throwaway PgBouncer in transaction-pooling mode in front of a ThrowawayPostgres, as
deployments run it: each transaction may land on another server connection, so nothing may
rely on session state (prepared statements, SET, session advisory locks, LISTEN)."""

from __future__ import annotations

import atexit
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from support.postgres import SUPERUSER, UNPRIVILEGED_USER, ThrowawayPostgres, _free_port

START_TIMEOUT_SECONDS = 20


def find_pgbouncer() -> str | None:
    return shutil.which("pgbouncer") or (
        "/usr/sbin/pgbouncer" if Path("/usr/sbin/pgbouncer").exists() else None
    )


class ThrowawayPgBouncer:
    def __init__(self, root: Path, process: subprocess.Popen[bytes], port: int) -> None:
        self._root = root
        self._process = process
        self.port = port

    @classmethod
    def start(cls, postgres: ThrowawayPostgres) -> ThrowawayPgBouncer:
        binary = find_pgbouncer()
        if binary is None:
            raise RuntimeError("pgbouncer not found: install it (`apt-get install -y pgbouncer`)")
        root = Path(tempfile.mkdtemp(prefix="billfold-pgbouncer-"))
        run_as: list[str] = []
        if os.geteuid() == 0:  # like PostgreSQL, it refuses to run as root
            user = pwd.getpwnam(UNPRIVILEGED_USER)
            os.chown(root, user.pw_uid, user.pw_gid)
            run_as = ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}"]
            run_as += ["--clear-groups", "--"]
        for _attempt in range(3):  # a "free" port can be taken before pgbouncer binds it
            port = _free_port()
            (root / "userlist.txt").write_text(f'"{SUPERUSER}" ""\n')
            (root / "pgbouncer.ini").write_text(
                "[databases]\n"
                f"* = host=127.0.0.1 port={postgres.port}\n"
                "[pgbouncer]\n"
                "listen_addr = 127.0.0.1\n"
                f"listen_port = {port}\n"
                "unix_socket_dir =\n"
                "auth_type = trust\n"
                f"auth_file = {root / 'userlist.txt'}\n"
                "pool_mode = transaction\n"
                "max_client_conn = 1000\n"
                "default_pool_size = 40\n"
                # SQLAlchemy's psycopg dialect and libpq send these at connect.
                "ignore_startup_parameters = extra_float_digits,options\n"
                f"logfile = {root / 'pgbouncer.log'}\n"
            )
            for path in root.iterdir():
                shutil.chown(path, *_owner(run_as))
            process = subprocess.Popen(
                [*run_as, binary, str(root / "pgbouncer.ini")],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            if _wait_for_port(port, process):
                bouncer = cls(root, process, port)
                atexit.register(bouncer.stop)
                return bouncer
            process.kill()
            process.wait(timeout=10)
        log = (root / "pgbouncer.log").read_text(errors="replace") if root.exists() else ""
        shutil.rmtree(root, ignore_errors=True)
        raise RuntimeError(f"pgbouncer did not start:\n{log}")

    def url_for(self, database: str) -> str:
        """SQLAlchemy URL of `database` through the pooler."""
        return f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
        shutil.rmtree(self._root, ignore_errors=True)


def _owner(run_as: list[str]) -> tuple[int, int]:
    if not run_as:
        return os.getuid(), os.getgid()
    user = pwd.getpwnam(UNPRIVILEGED_USER)
    return user.pw_uid, user.pw_gid


def _wait_for_port(port: int, process: subprocess.Popen[bytes]) -> bool:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
        except OSError:
            time.sleep(0.1)
    return False
