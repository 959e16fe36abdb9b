"""A fault-injecting TCP proxy between the app and localstripe, to simulate Stripe outages."""

from __future__ import annotations

import contextlib
import re
import socket
import struct
import threading
from types import TracebackType
from typing import Literal, Self

Mode = Literal["up", "down", "drop", "hold", "hold_requests"]
_CHUNK = 65536
# An HTTP request line to Stripe's API, as the SDK sends one.
_REQUEST_LINE = re.compile(rb"(?:GET|POST|DELETE) /v1/[^ \r\n]* HTTP/1\.[01]\r\n")


def _abort(sock: socket.socket) -> None:
    """Reset the connection (RST, not FIN) and wake any thread blocked on it."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _refuse(sock: socket.socket) -> None:
    """Close a just-accepted connection with a bare RST (the client fails at once)."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def _response_complete(data: bytes | bytearray) -> bool:
    """Whether `data` starts with at least one complete HTTP response (length or chunked)."""
    head_end = data.find(b"\r\n\r\n")
    if head_end < 0:
        return False
    head = bytes(data[:head_end]).lower()
    body = data[head_end + 4 :]
    length = re.search(rb"\r\ncontent-length:\s*(\d+)", head)
    if length:
        return len(body) >= int(length.group(1))
    if re.search(rb"\r\ntransfer-encoding:[^\r]*chunked", head):
        return b"0\r\n\r\n" in body
    return False  # delimited by connection close: complete once the target closes


class _Conn:
    def __init__(self, client: socket.socket, target: socket.socket) -> None:
        self.client = client
        self.target = target
        self.send_lock = threading.Lock()  # orders live bytes after flushed held bytes
        self.held = bytearray()
        self.target_eof = False
        self.closed = False
        self.pumps_left = 2
        self.request_line = b""  # of the latest request sent on this connection
        self.held_request = bytearray()  # request bytes kept back (hold_requests)
        self.request_lock = threading.Lock()  # orders live request bytes after held ones


class FaultyLink:
    """Listens on 127.0.0.1:PORT and forwards to a target, misbehaving on request.

    Traffic is treated as byte streams per TCP connection: in drop/hold modes, whatever
    the target sends back is dropped/held, whichever HTTP request it answers.
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self._mode: Mode = "up"
        self._cond = threading.Condition()
        self._conns: set[_Conn] = set()
        self._held_complete = False
        self._request_held = False
        self._hold_only: bytes | None = None
        self._stopped = False
        self.counts = {"accepted": 0, "refused": 0, "dropped": 0, "requests": 0}
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(128)
        self._listener.settimeout(0.1)
        self._port: int = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._accept_loop, daemon=True, name="faultylink")

    @classmethod
    def start(cls, target_host: str, target_port: int) -> FaultyLink:
        link = cls(target_host, target_port)
        link._thread.start()
        return link

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    @property
    def mode(self) -> Mode:
        return self._mode

    # --- modes -------------------------------------------------------------------------

    def up(self) -> None:
        """Forward transparently; deliver any held request and response bytes first."""
        with self._cond:
            self._mode = "up"
            conns = list(self._conns)
        for conn in conns:
            with conn.request_lock:
                request, conn.held_request = bytes(conn.held_request), bytearray()
                if request:
                    with contextlib.suppress(OSError):
                        conn.target.sendall(request)
        for conn in conns:
            with conn.send_lock:
                with self._cond:
                    data, conn.held = bytes(conn.held), bytearray()
                    finished = conn.target_eof
                try:
                    if data:
                        conn.client.sendall(data)
                except OSError:
                    finished = True
                if finished:
                    self._close(conn, reset=False)

    def down(self) -> None:
        """Reset every open connection and every new one (Stripe unreachable)."""
        with self._cond:
            self._mode = "down"
            conns = list(self._conns)
        for conn in conns:
            self._close(conn, reset=True)

    def retarget(self, target_host: str, target_port: int) -> None:
        """Send new connections elsewhere (a fresh stand-in after the old one died); call it
        while `down()`, so no connection to the old target lives on."""
        with self._cond:
            self._target = (target_host, target_port)

    def drop_responses(self) -> None:
        """Forward requests, but on the first response byte reset the connection."""
        with self._cond:
            self._mode = "drop"

    def hold_responses(self, only: bytes | None = None) -> None:
        """Forward requests, keep responses back until `up()` (or the client gives up).

        With `only` (the start of a request line, e.g. ``b"POST /v1/payment_intents HTTP"``),
        only the answers to such requests are held; the others pass."""
        with self._cond:
            self._mode = "hold"
            self._hold_only = only
            self._held_complete = False

    def hold_requests(self, only: bytes) -> None:
        """Keep back the requests whose request line starts with `only` (Stripe has not seen
        them) until `up()`; the others pass."""
        with self._cond:
            self._mode = "hold_requests"
            self._hold_only = only
            self._request_held = False

    def wait_for_held_request(self, timeout: float) -> bool:
        """True once a request has been held since `hold_requests()`."""
        with self._cond:
            return self._cond.wait_for(lambda: self._request_held, timeout)

    def wait_for_held_response(self, timeout: float) -> bool:
        """True once a complete response has been held since `hold_responses()`."""
        with self._cond:
            return self._cond.wait_for(lambda: self._held_complete, timeout)

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            conns = list(self._conns)
        for conn in conns:
            self._close(conn, reset=True)
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self._listener.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- plumbing ----------------------------------------------------------------------

    def _accept_loop(self) -> None:
        while not self._stopped:
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            self._count("accepted")
            if self._mode == "down":
                self._count("refused")
                _refuse(client)
                continue
            try:
                target = socket.create_connection(self._target, timeout=5)
            except OSError:
                self._count("refused")
                _refuse(client)
                continue
            target.settimeout(None)
            for sock in (client, target):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _Conn(client, target)
            with self._cond:
                self._conns.add(conn)
            threading.Thread(target=self._pump_requests, args=(conn,), daemon=True).start()
            threading.Thread(target=self._pump_responses, args=(conn,), daemon=True).start()

    def _pump_requests(self, conn: _Conn) -> None:
        tail = b""  # the end of the previous chunk, so a request line split in two counts
        try:
            while data := conn.client.recv(_CHUNK):
                seen = tail + data
                found = [m for m in _REQUEST_LINE.finditer(seen) if m.end() > len(tail)]
                if found:
                    with self._cond:
                        self.counts["requests"] += len(found)
                        conn.request_line = found[-1].group(0).rstrip(b"\r\n")
                tail = seen[-512:]
                with conn.request_lock:
                    with self._cond:
                        only = self._hold_only
                        hold = bool(conn.held_request) or (
                            self._mode == "hold_requests"
                            and only is not None
                            and conn.request_line.startswith(only)
                        )
                        if hold:
                            self._request_held = True
                            self._cond.notify_all()
                    if hold:
                        conn.held_request += data
                        continue
                    conn.target.sendall(data)
        except OSError:
            pass
        self._close(conn, reset=False)  # client gone: nobody to deliver held bytes to
        self._pump_done(conn)

    def _pump_responses(self, conn: _Conn) -> None:
        try:
            while data := conn.target.recv(_CHUNK):
                with conn.send_lock:
                    with self._cond:
                        mode = self._mode
                        only = self._hold_only
                        if mode == "hold_requests":
                            mode = "up"
                        if mode == "hold" and only and not conn.request_line.startswith(only):
                            mode = "up"  # not an answer we were asked to hold
                        if mode == "hold" or (conn.held and mode == "up"):
                            conn.held += data
                            if _response_complete(conn.held):
                                self._held_complete = True
                                self._cond.notify_all()
                            continue
                    if mode == "up":
                        conn.client.sendall(data)
                        continue
                self._count("dropped")
                self._close(conn, reset=True)  # drop (or down): the answer is lost
                break
        except OSError:
            pass
        with conn.send_lock, self._cond:
            conn.target_eof = True
            if conn.held and not conn.closed:
                # Target closed (or answered without a length): that too completes a response.
                self._held_complete = True
                self._cond.notify_all()
                keep_for_up = True
            else:
                keep_for_up = False
        if not keep_for_up:
            self._close(conn, reset=False)
        self._pump_done(conn)

    def _count(self, what: str) -> None:
        with self._cond:
            self.counts[what] += 1

    def _close(self, conn: _Conn, *, reset: bool) -> None:
        with self._cond:
            if conn.closed:
                return
            conn.closed = True
            conn.held = bytearray()
            self._conns.discard(conn)
        for sock in (conn.client, conn.target):
            if reset:
                _abort(sock)
            else:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def _pump_done(self, conn: _Conn) -> None:
        with self._cond:
            conn.pumps_left -= 1
            last = conn.pumps_left == 0
        if last:  # both threads are out of recv(): now the sockets can be closed safely
            conn.client.close()
            conn.target.close()
