"""An HTTP proxy on 127.0.0.1 that breaks some responses on purpose.

It sits between exitplan and a moto server and, for object GETs (whole or
ranged) chosen by a seeded schedule, answers 503 SlowDown (with
Retry-After), resets the connection, cuts the body short, or flips a byte at
a seeded place in the body. Everything else (listings, HEADs, uploads,
GetObjectAttributes) passes untouched, headers included, so the tests are
about copying, not paging. Bodies are streamed through, never held whole.
"""

from __future__ import annotations

import http.client
import random
import socket
import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

FAULTS = ("slowdown", "reset", "truncate", "flip")
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "upgrade"}
#: Query parameters an object GET may carry; any other (``attributes``,
#: ``tagging``, ``uploads``...) makes it an API call, not a body.
_OBJECT_GET_PARAMS = {"versionId", "partNumber"}
_CHUNK = 256 * 1024


class FaultSchedule:
    """Decides, reproducibly, which object GETs fail and how."""

    def __init__(
        self,
        rate: float,
        seed: int = 7,
        retry_after: str = "0",
        faults: Sequence[str] = FAULTS,
        zero_part_sizes: bool = False,
    ) -> None:
        unknown = set(faults) - set(FAULTS)
        if unknown or not faults:
            raise ValueError(f"faults must be some of {FAULTS}, not {tuple(faults)}")
        self.rate = rate
        self.retry_after = retry_after
        self.faults = tuple(faults)
        #: Answer every HEAD of a part (``?partNumber=``) with Content-Length: 0,
        #: as a broken source (or this proxy, once) did.
        self.zero_part_sizes = zero_part_sizes
        self.seed = seed
        self._seen: Counter[str] = Counter()
        self._lock = threading.Lock()
        self.injected: Counter[str] = Counter()
        self.forwarded = 0

    def pick(self, request: str = "") -> tuple[str | None, random.Random]:
        """The fault for this request (None: forwarded as it is), and the generator
        that places it. Decided by the seed, the request (its path and range) and
        how many times that request was made before, never by the order in which
        concurrent requests arrive: a campaign is reproducible object by object."""
        with self._lock:
            nth = self._seen[request]
            self._seen[request] += 1
            rng = random.Random(f"{self.seed}:{request}:{nth}")
            if rng.random() >= self.rate:
                self.forwarded += 1
                return None, rng
            fault = rng.choice(self.faults)
            self.injected[fault] += 1
            return fault, rng

    @staticmethod
    def where(length: int, rng: random.Random) -> int:
        """The offset in a body of ``length`` bytes to damage."""
        return rng.randrange(length)


def _is_object_get(method: str, path: str) -> bool:
    parts = urlsplit(path)
    segments = [s for s in parts.path.split("/") if s]
    params = {name for name, _ in parse_qsl(parts.query, keep_blank_values=True)}
    return method == "GET" and len(segments) >= 2 and params <= _OBJECT_GET_PARAMS


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
            fault, rng = (
                schedule.pick(f"{self.path} {self.headers.get('Range', '')}")
                if _is_object_get(self.command, self.path)
                else (None, None)
            )
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
                declared = response.getheader("Content-Length")
                if self.command == "HEAD":
                    # A HEAD's Content-Length is the object's (or the part's)
                    # size; there is no body to measure it by.
                    if schedule.zero_part_sizes and "partNumber=" in urlsplit(self.path).query:
                        declared = "0"
                    self._send_head(response, declared)
                    return
                if declared is None:
                    data = response.read()
                    self._send_head(response, str(len(data)))
                    self._send_body(iter([data]), len(data), fault, rng)
                    return
                size = int(declared)
                self._send_head(response, declared)
                self._send_body(_stream(response), size, fault, rng)
            finally:
                upstream_conn.close()

        def _send_head(self, response: http.client.HTTPResponse, length: str | None) -> None:
            self.send_response(response.status)
            for name, value in response.getheaders():
                if name.lower() not in _HOP_BY_HOP | {"content-length"}:
                    self.send_header(name, value)
            if length is not None:
                self.send_header("Content-Length", length)
            self.end_headers()

        def _send_body(
            self,
            chunks: Iterator[bytes],
            size: int,
            fault: str | None,
            rng: random.Random | None,
        ) -> None:
            cut = size // 2 if fault == "truncate" and size > 1 else None
            flip = schedule.where(size, rng) if fault == "flip" and size and rng else None
            sent = 0
            for chunk in chunks:
                if cut is not None and sent + len(chunk) >= cut:
                    self.wfile.write(chunk[: cut - sent])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if flip is not None and sent <= flip < sent + len(chunk):
                    at = flip - sent
                    chunk = chunk[:at] + bytes([chunk[at] ^ 0x01]) + chunk[at + 1 :]
                self.wfile.write(chunk)
                sent += len(chunk)

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

    class Server(ThreadingHTTPServer):
        def handle_error(self, request: object, client_address: object) -> None:
            pass  # a client that hangs up mid-body (it found the damage) is no news

    server = Server(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _stream(response: http.client.HTTPResponse) -> Iterator[bytes]:
    while chunk := response.read(_CHUNK):
        yield chunk
