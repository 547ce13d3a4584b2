"""Fixtures for the contract suites: real sshd processes, PowerDNS, the DigitalOcean stand-in."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.support.digitalocean import digitalocean
from tests.support.powerdns import (
    INSTALL_HINT,
    PowerDnsServer,
    find_pdns_server,
    find_schema,
    start_powerdns,
    stop_powerdns,
)
from tests.support.sshd import (
    down_address,
    ssh_client_key,
    ssh_stranger_key,
    sshd_host,
    sshd_impostor,
)

__all__ = [
    "digitalocean",
    "down_address",
    "powerdns_server",
    "ssh_client_key",
    "ssh_stranger_key",
    "sshd_host",
    "sshd_impostor",
]


@pytest.fixture(scope="session")
def powerdns_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PowerDnsServer]:
    """One PowerDNS for the session; each test uses its own zone."""
    if find_pdns_server() is None or find_schema() is None:
        if os.environ.get("CI"):
            pytest.fail(f"pdns_server or its sqlite3 schema is missing: {INSTALL_HINT}")
        pytest.skip(INSTALL_HINT)
    process, server = start_powerdns(tmp_path_factory.mktemp("pdns"))
    try:
        yield server
    finally:
        stop_powerdns(process)
