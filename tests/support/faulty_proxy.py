"""An HTTP proxy on 127.0.0.1 that breaks some responses on purpose.

It sits between exitplan and a moto server and, for object GETs chosen by a
seeded schedule, answers 503 SlowDown (with Retry-After), resets the
connection, cuts the body short, or flips a byte. Listings pass untouched so
the test is about copying, not paging.
"""

from __future__ import annotations

import http.client
import random
import socket
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

FAULTS = ("slowdown", "reset", "truncate", "flip")
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "upgrade"}


class FaultSchedule:
    """Decides, reproducibly, which object GETs fail and how."""

    def __init__(self, rate: float, seed: int = 7, retry_after: str = "0") -> None:
        self.rate = rate
        self.retry_after = retry_after
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self.injected: Counter[str] = Counter()
        self.forwarded = 0

    def pick(self) -> str | None:
        with self._lock:
            if self._random.random() >= self.rate:
                self.forwarded += 1
                return None
            fault = self._random.choice(FAULTS)
            self.injected[fault] += 1
            return fault


def _is_object_get(method: str, path: str) -> bool:
    parts = urlsplit(path)
    segments = [s for s in parts.path.split("/") if s]
    return method == "GET" and len(segments) >= 2 and "list-type" not in parts.query


@contextmanager
def faulty_proxy(upstream: str, schedule: FaultSchedule) -> Iterator[str]:
    """Run the proxy in a thread; yields its URL."""
    target = urlsplit(upstream)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def _forward(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            fault = schedule.pick() if _is_object_get(self.command, self.path) else None
            if fault == "slowdown":
                payload = b"<Error><Code>SlowDown</Code><Message>Reduce your request rate.</Message></Error>"
                self.send_response(503)
                self.send_header("Retry-After", schedule.retry_after)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                return
            if fault == "reset":
                self.connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
                )
                self.close_connection = True
                return
            upstream_conn = http.client.HTTPConnection(target.hostname, target.port, timeout=60)
            try:
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                upstream_conn.request(self.command, self.path, body=body, headers=headers)
                response = upstream_conn.getresponse()
                data = response.read()
                self.send_response(response.status)
                for name, value in response.getheaders():
                    if name.lower() not in _HOP_BY_HOP | {"content-length"}:
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if fault == "truncate" and len(data) > 1:
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if fault == "flip" and data:
                    data = bytes([data[0] ^ 0x01]) + data[1:]
                self.wfile.write(data)
            finally:
                upstream_conn.close()

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
