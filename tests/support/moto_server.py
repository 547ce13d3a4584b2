"""A moto server on 127.0.0.1: AWS for CLI and end-to-end tests."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager


def free_port(address: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((address, 0))
        return int(sock.getsockname()[1])


@contextmanager
def moto_server() -> Iterator[str]:
    """Start a ThreadedMotoServer on loopback and yield its endpoint URL."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    # Without ip_address it listens on 0.0.0.0.
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()
