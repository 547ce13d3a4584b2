"""A moto server in a process of its own: an S3-compatible destination whose state
is apart from the source's (moto servers in one process share one account)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.moto_server import free_port


@contextmanager
def moto_server_process(log: Path) -> Iterator[str]:
    """Start ``python -m moto.server`` on 127.0.0.1; yield its endpoint URL."""
    port = free_port()
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"moto.server exited with {process.returncode}; see {log}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"moto.server is not listening after 60 s; see {log}"
                    ) from None
                time.sleep(0.1)  # polling a port that is not open yet, not synchronising work
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
