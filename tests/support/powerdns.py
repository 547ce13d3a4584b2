"""A real PowerDNS authoritative server for tests: gsqlite3 backend, HTTP API on.

Everything lives in a temporary directory (config, sqlite database, control
socket); the server listens on 127.0.0.1 only, on free ports, and
``security-poll-suffix=`` is empty so it sends no DNS query out at start.

Use the ``powerdns`` fixture (import it into a test module or conftest). When
``pdns_server`` is missing the fixture fails if ``CI`` is set and otherwise
skips, saying what to install.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import sqlite3
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

INSTALL_HINT = "install pdns-server pdns-backend-sqlite3"

#: Where Debian ships the gsqlite3 schema (the second path is older packages').
SCHEMA_PATHS = (
    Path("/usr/share/pdns-backend-sqlite3/schema/schema.sqlite3.sql"),
    Path("/usr/share/doc/pdns-backend-sqlite3/schema.sqlite3.sql"),
)

#: How long the server may take to answer its API after start.
START_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class PowerDnsServer:
    """Where a running test server answers."""

    host: str
    api_port: int
    dns_port: int
    api_key: str
    workdir: Path

    @property
    def api_url(self) -> str:
        return f"http://{self.host}:{self.api_port}/api/v1"


def find_pdns_server() -> str | None:
    """Path of ``pdns_server`` (PATH or /usr/sbin, which is not on every user's PATH)."""
    found = shutil.which("pdns_server")
    if found:
        return found
    return "/usr/sbin/pdns_server" if os.access("/usr/sbin/pdns_server", os.X_OK) else None


def find_schema() -> Path | None:
    return next((p for p in SCHEMA_PATHS if p.is_file()), None)


def _free_port() -> int:
    """A port free for both TCP and UDP on 127.0.0.1 (DNS listens on both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = int(tcp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
        return port
    raise RuntimeError("no free port on 127.0.0.1 for both TCP and UDP")


def _api_ready(url: str, key: str) -> bool:
    request = urllib.request.Request(f"{url}/servers/localhost", headers={"X-API-Key": key})
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


#: Starts on fresh ports after a port was taken between choosing and binding it.
PORT_ATTEMPTS = 3


def start_powerdns(
    workdir: Path, attempt: int = 1
) -> tuple[subprocess.Popen[bytes], PowerDnsServer]:
    """Start pdns_server in ``workdir`` and return once its API answers.

    Raises ``RuntimeError`` with the server's log when it exits or does not
    answer within ``START_TIMEOUT_S``. The caller stops it (``stop_powerdns``).
    """
    binary = find_pdns_server()
    schema = find_schema()
    if binary is None or schema is None:
        raise FileNotFoundError(INSTALL_HINT)
    database = workdir / "pdns.sqlite3"
    database.unlink(missing_ok=True)  # an earlier attempt's
    with sqlite3.connect(database) as db:
        db.executescript(schema.read_text())
    api_key = secrets.token_hex(16)
    api_port, dns_port = _free_port(), _free_port()
    (workdir / "pdns.conf").write_text(
        "\n".join(
            [
                "launch=gsqlite3",
                f"gsqlite3-database={database}",
                "local-address=127.0.0.1",
                f"local-port={dns_port}",
                "webserver=yes",
                "webserver-address=127.0.0.1",
                f"webserver-port={api_port}",
                "webserver-allow-from=127.0.0.1",
                "api=yes",
                f"api-key={api_key}",
                # Empty: otherwise pdns sends a DNS query out at start.
                "security-poll-suffix=",
                f"socket-dir={workdir}",
                "disable-syslog=yes",
                "loglevel=4",
                "",
            ]
        )
    )
    log = (workdir / "pdns.log").open("wb")
    process = subprocess.Popen(
        [
            binary,
            f"--config-dir={workdir}",
            "--daemon=no",
            "--guardian=no",
            "--write-pid=no",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    log.close()
    server = PowerDnsServer("127.0.0.1", api_port, dns_port, api_key, workdir)
    deadline = time.monotonic() + START_TIMEOUT_S
    while not _api_ready(server.api_url, api_key):
        output = (workdir / "pdns.log").read_text(errors="replace")[-4000:]
        if "Address already in use" in output and attempt < PORT_ATTEMPTS:
            # A free port is free only until someone else binds it (another
            # test's server on a shared machine): start again on new ones.
            stop_powerdns(process)
            return start_powerdns(workdir, attempt=attempt + 1)
        if process.poll() is not None or time.monotonic() > deadline:
            stop_powerdns(process)
            raise RuntimeError(f"pdns_server did not start its API:\n{output}")
        time.sleep(0.05)  # polling the API with a deadline, not synchronising on time
    return process, server


def stop_powerdns(process: subprocess.Popen[bytes]) -> None:
    """Terminate the server (kill after 10 s) and reap it."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def powerdns(tmp_path: Path) -> Iterator[PowerDnsServer]:
    """A running PowerDNS server for one test, stopped afterwards."""
    if find_pdns_server() is None or find_schema() is None:
        if os.environ.get("CI"):
            pytest.fail(f"pdns_server or its sqlite3 schema is missing: {INSTALL_HINT}")
        pytest.skip(INSTALL_HINT)
    workdir = tmp_path / "pdns"
    workdir.mkdir()
    process, server = start_powerdns(workdir)
    try:
        yield server
    finally:
        stop_powerdns(process)
