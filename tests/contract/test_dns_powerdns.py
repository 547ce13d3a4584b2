"""``LibcloudDnsProvider`` passes the DnsProvider contract against a real PowerDNS."""

from __future__ import annotations

import uuid

import pytest

from orchestrator.errors import FatalError
from providers.dns import LibcloudDnsProvider
from tests.contract.dns_contract import NAMESERVERS, DnsContract
from tests.support.powerdns import PowerDnsServer


def pdns(server: PowerDnsServer, key: str | None = None) -> LibcloudDnsProvider:
    return LibcloudDnsProvider(
        "pdns", host=server.host, port=server.api_port, key=key or server.api_key
    )


class TestPowerDns(DnsContract):
    __test__ = True

    @pytest.fixture
    def dns(self, powerdns_server: PowerDnsServer) -> LibcloudDnsProvider:
        return pdns(powerdns_server)

    @pytest.fixture
    def new_zone_name(self) -> str:
        return f"z{uuid.uuid4().hex[:10]}.exitplan.test."

    @pytest.fixture
    def zone(self, dns: LibcloudDnsProvider, new_zone_name: str) -> str:
        dns.create_zone(new_zone_name, nameservers=NAMESERVERS)
        return new_zone_name


def test_a_wrong_api_key_is_fatal_and_not_quoted(powerdns_server: PowerDnsServer) -> None:
    with pytest.raises(FatalError, match="rejected the API key") as refused:
        pdns(powerdns_server, key="wrong-key-123").list_zones()
    assert "wrong-key-123" not in str(refused.value)
