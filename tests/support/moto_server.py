"""A moto server on 127.0.0.1: AWS for CLI and end-to-end tests."""

from __future__ import annotations

import socket
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager


def free_port(address: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((address, 0))
        return int(sock.getsockname()[1])


@contextmanager
def moto_server() -> Iterator[str]:
    """Start a ThreadedMotoServer on loopback, emptied, and yield its endpoint URL."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    # Without ip_address it listens on 0.0.0.0.
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    # moto keeps its accounts in process-wide state that every server in this
    # process shares: start each one empty so tests never see each other's data.
    urllib.request.urlopen(urllib.request.Request(f"{url}/moto-api/reset", method="POST"))
    try:
        yield url
    finally:
        server.stop()
