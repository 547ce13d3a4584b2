"""The contract every ``DnsProvider`` passes.

A provider's test module subclasses ``DnsContract`` and provides ``dns``
(the provider), ``zone`` (an existing, empty zone nobody else uses) and
``new_zone_name`` (an absolute name no zone has yet). Optional abilities are
asked for through ``capabilities``; a missing one is a skip that says so.
"""

from __future__ import annotations

import pytest

from orchestrator.errors import FatalError
from providers.dns import apply_zone
from providers.interfaces.dns import (
    AliasTarget,
    DnsProvider,
    DnsZoneNotFound,
    RecordChange,
    RecordSet,
)

KNOWN_CAPABILITIES = frozenset({"alias", "routing_policies", "create_zone", "managed_soa"})
NAMESERVERS = ["ns1.exitplan.test.", "ns2.exitplan.test."]


def require(dns: DnsProvider, capability: str) -> None:
    if capability not in dns.capabilities:
        pytest.skip(f"{dns.describe()} does not declare {capability!r}")


def ours(dns: DnsProvider, zone: str) -> dict[tuple[str, str], RecordSet]:
    """The zone's sets other than the target-owned apex SOA and NS."""
    return {
        (rs.name, rs.type): rs
        for rs in dns.list_records(zone)
        if not (rs.name == zone and rs.type in ("SOA", "NS"))
    }


class DnsContract:
    """Behaviour every ``DnsProvider`` shows. Subclass and provide the fixtures."""

    __test__ = False

    @pytest.fixture
    def dns(self) -> DnsProvider:
        raise NotImplementedError("a DnsContract subclass must provide `dns`")

    @pytest.fixture
    def zone(self) -> str:
        raise NotImplementedError("a DnsContract subclass must provide `zone`")

    @pytest.fixture
    def new_zone_name(self) -> str:
        raise NotImplementedError("a DnsContract subclass must provide `new_zone_name`")

    def test_capabilities_are_declared_known_strings(self, dns: DnsProvider) -> None:
        assert isinstance(dns.capabilities, frozenset)
        assert dns.capabilities <= KNOWN_CAPABILITIES

    def test_zone_is_listed_with_an_absolute_name(self, dns: DnsProvider, zone: str) -> None:
        assert zone in dns.list_zones()
        assert all(name.endswith(".") for name in dns.list_zones())

    def test_create_zone_is_idempotent(self, dns: DnsProvider, new_zone_name: str) -> None:
        require(dns, "create_zone")
        dns.create_zone(new_zone_name.rstrip("."), nameservers=NAMESERVERS)
        dns.create_zone(new_zone_name, nameservers=NAMESERVERS)
        assert dns.list_zones().count(new_zone_name) == 1
        apex_ns = [rs for rs in dns.list_records(new_zone_name) if rs.type == "NS"]
        assert apex_ns and set(apex_ns[0].values) == set(NAMESERVERS)

    def test_missing_zone_is_named(self, dns: DnsProvider, new_zone_name: str) -> None:
        with pytest.raises(DnsZoneNotFound, match=new_zone_name.rstrip(".")):
            dns.list_records(new_zone_name)

    def test_multi_value_sets_are_created_updated_and_deleted_whole(
        self, dns: DnsProvider, zone: str
    ) -> None:
        www = RecordSet(f"www.{zone}", "A", 300, ("192.0.2.1", "192.0.2.2", "192.0.2.3"))
        txt = RecordSet(zone, "TXT", 60, ('"v=spf1 -all"',))
        dns.apply(zone, [RecordChange("create", www), RecordChange("create", txt)])
        assert ours(dns, zone) == {(www.name, "A"): www, (zone, "TXT"): txt}

        smaller = RecordSet(www.name, "A", 120, ("192.0.2.9",))
        dns.apply(zone, [RecordChange("update", smaller)])
        assert ours(dns, zone)[(www.name, "A")] == smaller

        dns.apply(zone, [RecordChange("delete", smaller)])
        dns.apply(zone, [RecordChange("delete", smaller)])  # a missing set: not an error
        assert set(ours(dns, zone)) == {(zone, "TXT")}

    def test_host_names_in_values_read_back_absolute(self, dns: DnsProvider, zone: str) -> None:
        cname = RecordSet(f"blog.{zone}", "CNAME", 300, ("hosting.example.net",))
        mx = RecordSet(zone, "MX", 300, ("10 mail.example.net",))
        dns.apply(zone, [RecordChange("create", cname), RecordChange("create", mx)])
        got = ours(dns, zone)
        assert got[(cname.name, "CNAME")].values == ("hosting.example.net.",)
        assert got[(zone, "MX")].values == ("10 mail.example.net.",)

    def test_apply_zone_twice_changes_nothing_the_second_time(
        self, dns: DnsProvider, zone: str
    ) -> None:
        sets = [
            RecordSet(f"api.{zone}", "A", 300, ("198.51.100.7",)),
            RecordSet(f"api.{zone}", "AAAA", 300, ("2001:db8::7",)),
        ]
        first = apply_zone(dns, zone, sets)
        assert len(first.applied) == 2
        second = apply_zone(dns, zone, sets)
        assert second.applied == []

    def test_an_alias_needs_the_capability(self, dns: DnsProvider, zone: str) -> None:
        alias = RecordSet(
            f"cdn.{zone}",
            "A",
            None,
            alias=AliasTarget("Z2FDTNDATAQYW2", "d111.cloudfront.net.", False),
        )
        if "alias" in dns.capabilities:
            dns.apply(zone, [RecordChange("create", alias)])
            assert (alias.name, "A") in ours(dns, zone)
        else:
            with pytest.raises(FatalError, match="alias"):
                dns.apply(zone, [RecordChange("create", alias)])
            assert (alias.name, "A") not in ours(dns, zone)
