"""``LocalDnsProvider`` (zones in a file, served in process) passes the DnsProvider contract."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from providers.dns_local import LocalDnsProvider
from tests.contract.dns_contract import NAMESERVERS, DnsContract


class TestLocalDns(DnsContract):
    __test__ = True

    @pytest.fixture
    def dns(self, tmp_path: Path) -> LocalDnsProvider:
        return LocalDnsProvider("local", tmp_path / "dns" / "zones.json")

    @pytest.fixture
    def new_zone_name(self) -> str:
        return f"z{uuid.uuid4().hex[:10]}.exitplan.test."

    @pytest.fixture
    def zone(self, dns: LocalDnsProvider, new_zone_name: str) -> str:
        dns.create_zone(new_zone_name, nameservers=NAMESERVERS)
        return new_zone_name
