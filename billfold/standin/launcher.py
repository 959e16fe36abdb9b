"""Runs localstripe as an in-memory local Stripe stand-in for `billfold dev` and the tests."""

from __future__ import annotations

import argparse
import logging
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from types import TracebackType
from typing import IO, Any, Self

import httpx

#: Any key starting with ``sk_`` works against localstripe; this one is used for probing.
STANDIN_API_KEY = "sk_test_standin"
#: Set to 1 to see localstripe's access log (and webhook delivery log) on stderr.
LOG_ENV = "BILLFOLD_STANDIN_LOG"
DEFAULT_HOST = "127.0.0.1"
START_TIMEOUT_SECONDS = 15.0


def free_port(host: str = DEFAULT_HOST) -> int:
    """Return a TCP port that is free on `host` right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _exit_when_orphaned(parent_pid: int) -> None:
    """Exit this process as soon as `parent_pid` is no longer our parent (it died)."""
    while os.getppid() == parent_pid:
        time.sleep(0.5)
    os._exit(0)


def serve(port: int, host: str = DEFAULT_HOST, parent_pid: int | None = None) -> None:
    """Run localstripe in this process, in memory, from scratch, until terminated."""
    from aiohttp import web
    from localstripe import resources, server

    from billfold.standin import (
        billing,
        checkout,
        discounts,
        fidelity,
        pages,
        portal,
        schedules,
    )
    from billfold.standin import web as standin_web

    def _no_dump(self: Any) -> None:
        return None

    # localstripe pickles its whole store to a fixed /tmp path on every write; skip it.
    resources.Store.dump_to_disk = _no_dump
    fidelity.apply()
    billing.apply()
    schedules.apply()
    discounts.apply()
    checkout.apply()
    portal.apply()
    pages.apply()
    standin_web.install(server.app, f"http://{host}:{port}")
    # localstripe's own start() binds '::' (fails where IPv6 is off); bind `host` instead.
    access_log: logging.Logger | None = None
    if os.environ.get(LOG_ENV, "").strip().lower() not in ("", "0", "false", "no"):
        access_log = logging.getLogger("aiohttp.access")
        access_log.setLevel(logging.DEBUG)
        access_log.addHandler(logging.StreamHandler())
    if parent_pid is not None:
        threading.Thread(target=_exit_when_orphaned, args=(parent_pid,), daemon=True).start()
    print(f"starting localstripe stand-in on http://{host}:{port}", file=sys.stderr, flush=True)
    web.run_app(
        server.app,
        host=host,
        port=port,
        access_log=access_log,
        print=None,
        shutdown_timeout=1.0,
    )


class LocalStripe:
    """A localstripe subprocess listening on 127.0.0.1; stop it with `stop()` or `with`."""

    def __init__(self, process: subprocess.Popen[bytes], port: int, output: IO[bytes] | None):
        self._process = process
        self._port = port
        self._output = output

    @classmethod
    def start(cls, port: int | None = None) -> LocalStripe:
        """Spawn localstripe on `port` (a free one if None) and wait until it answers."""
        attempts = 3 if port is None else 1
        for attempt in range(attempts):
            standin = cls._spawn(port if port is not None else free_port())
            try:
                standin._wait_ready(START_TIMEOUT_SECONDS)
            except RuntimeError:
                standin.stop()
                if attempt == attempts - 1:
                    raise
                continue  # most likely somebody grabbed the free port first
            return standin
        raise AssertionError("unreachable")

    @classmethod
    def _spawn(cls, port: int) -> LocalStripe:
        # Output goes to a temp file (never a pipe nobody reads) unless logging is wanted.
        output: IO[bytes] | None = None
        if not os.environ.get(LOG_ENV):
            output = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
        command = [sys.executable, "-m", "billfold.standin", "--port", str(port)]
        command += ["--exit-with-parent", str(os.getpid())]
        process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            command,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT if output is not None else None,
        )
        return cls(process, port, output)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        headers = {"Authorization": f"Bearer {STANDIN_API_KEY}"}
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"localstripe exited with code {self._process.returncode} before "
                    f"answering on port {self._port}; output:\n{self.output()}"
                )
            try:
                response = httpx.get(f"{self.url}/v1/customers", headers=headers, timeout=1.0)
                if response.status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"localstripe did not answer on {self.url} within {timeout:.0f} s; "
                    f"output:\n{self.output()}"
                )
            time.sleep(0.05)

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        """Base address for the stripe SDK, e.g. ``http://127.0.0.1:8420``."""
        return f"http://{DEFAULT_HOST}:{self._port}"

    def output(self) -> str:
        """What the subprocess printed so far (empty if it logs straight to our stderr)."""
        if self._output is None or self._output.closed:
            return ""
        fd = self._output.fileno()
        # pread leaves the file offset alone: the child shares it and is still appending.
        return os.pread(fd, os.fstat(fd).st_size, 0).decode(errors="replace")

    def register_webhook(
        self, endpoint_id: str, url: str, secret: str, events: list[str] | None = None
    ) -> None:
        """Make localstripe POST events (signed with `secret`) to `url`; None means all events.

        localstripe delivers each event about 1 s after it happens, with a
        ``Stripe-Signature: t=...,v1=...`` header. An empty `events` list also means all.
        """
        data: dict[str, str | list[str]] = {"url": url, "secret": secret}
        if events:
            data["events[]"] = events
        response = httpx.post(f"{self.url}/_config/webhooks/{endpoint_id}", data=data)
        response.raise_for_status()

    def alive(self) -> bool:
        return self._process.poll() is None

    def stop(self) -> None:
        """Terminate the subprocess (kill it if it lingers) and release its output file."""
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        if self._output is not None:
            self._output.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run localstripe in memory as a Stripe stand-in.")
    parser.add_argument("--port", type=int, default=8420)
    parser.add_argument("--host", default=DEFAULT_HOST)
    parser.add_argument("--exit-with-parent", type=int, metavar="PID", default=None)
    args = parser.parse_args(argv)
    serve(args.port, args.host, args.exit_with_parent)


if __name__ == "__main__":
    main()
