"""A Route53 zone exported from moto re-applies to a real PowerDNS through libcloud."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest

from orchestrator.errors import FatalError
from orchestrator.export.exporters.route53 import Route53Exporter, parse_zone_json, parse_zone_name
from providers.aws import AwsAccount
from providers.dns import (
    DnsZoneNotFound,
    LibcloudDnsProvider,
    RecordChange,
    RecordSet,
    apply_zone,
    portable_record_sets,
)
from tests.support.aws import moto_account
from tests.support.powerdns import PowerDnsServer
from tests.support.powerdns import powerdns as powerdns  # the fixture
from tests.unit.test_export_route53 import PLAIN_SETS, ZONE, FixedTier, make_zone

TARGET_NS = ["ns1.exitplan.test.", "ns2.exitplan.test."]


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[AwsAccount]:
    with moto_account(monkeypatch, ["us-east-1"]) as account:
        yield account


def exported_zone_json(account: AwsAccount) -> bytes:
    exporter = Route53Exporter(account, tier_of=FixedTier("critical"))
    item = next(i for i in exporter.list_items() if i.dest_key == f"route53/{ZONE}.json")
    stream = exporter.open(item)
    data = b"".join(stream)
    stream.verify(size=len(data), md5_hex="", sha256_hex=hashlib.sha256(data).hexdigest())
    return data


def provider_for(server: PowerDnsServer, key: str | None = None) -> LibcloudDnsProvider:
    return LibcloudDnsProvider(
        "pdns", host=server.host, port=server.api_port, key=key or server.api_key
    )


def test_exported_zone_applies_to_powerdns_and_reads_back_the_same(
    aws: AwsAccount, powerdns: PowerDnsServer
) -> None:
    make_zone(aws.client("route53"))
    data = exported_zone_json(aws)
    zone_name = parse_zone_name(data)
    record_sets = parse_zone_json(data)

    provider = provider_for(powerdns)
    with pytest.raises(DnsZoneNotFound):
        provider.list_records(zone_name)
    provider.create_zone(zone_name, nameservers=TARGET_NS)
    provider.create_zone(zone_name, nameservers=TARGET_NS)  # exists: no error
    assert provider.list_zones() == [zone_name]

    result = apply_zone(provider, zone_name, record_sets)
    skipped = {
        (s.record_set.name, s.record_set.type, s.record_set.set_identifier) for s in result.skipped
    }
    assert skipped == {
        (zone_name, "SOA", None),
        (zone_name, "NS", None),
        (f"alias.{zone_name}", "A", None),
        (f"canary.{zone_name}", "A", "blue"),
        (f"canary.{zone_name}", "A", "green"),
    }
    assert len(result.applied) == len(PLAIN_SETS)

    back = {rs.key: rs for rs in provider.list_records(zone_name)}
    portable, _ = portable_record_sets(record_sets, zone_name, provider.capabilities)
    for rs in portable:
        # Compared in canonical form: PowerDNS stores host names with their
        # trailing dot, which Route53 (and our export) may leave off.
        assert back[rs.key].canonical() == rs.canonical(), rs.key
    # The target owns its SOA and apex NS.
    assert back[(zone_name, "NS", "")].values == tuple(TARGET_NS)
    assert back[(zone_name, "SOA", "")].values[0].startswith("ns1.exitplan.test. ")
    assert set(back) == {rs.key for rs in portable} | {
        (zone_name, "NS", ""),
        (zone_name, "SOA", ""),
    }

    # Applying again finds nothing to change (a resumed cutover is a no-op).
    assert apply_zone(provider, zone_name, record_sets).applied == []


def test_apply_updates_and_deletes_whole_sets(aws: AwsAccount, powerdns: PowerDnsServer) -> None:
    provider = provider_for(powerdns)
    zone = "cutover.example."
    provider.create_zone(zone, nameservers=TARGET_NS)
    web = RecordSet(f"web.{zone}", "A", 60, ("192.0.2.1", "192.0.2.2", "192.0.2.3"))
    txt = RecordSet(zone, "TXT", 300, ('"a b" "c"',))
    provider.apply(zone, [RecordChange("create", web), RecordChange("create", txt)])
    back = {rs.key: rs for rs in provider.list_records(zone)}
    assert back[web.key] == web  # all three values: one set, not the last value only
    assert back[txt.key] == txt

    # PowerDNS rewrites IPv6 to its compressed form; canonical() compares equal.
    v6 = RecordSet(f"web.{zone}", "AAAA", 60, ("2001:0DB8:0000::0001",))
    provider.apply(zone, [RecordChange("create", v6)])
    v6_back = {rs.key: rs for rs in provider.list_records(zone)}[v6.key]
    assert v6_back.values == ("2001:db8::1",) and v6_back.canonical() == v6.canonical()

    moved = RecordSet(f"web.{zone}", "A", 30, ("198.51.100.7",))
    provider.apply(zone, [RecordChange("update", moved), RecordChange("delete", txt)])
    provider.apply(zone, [RecordChange("delete", txt)])  # deleting again is fine
    back = {rs.key: rs for rs in provider.list_records(zone)}
    assert back[web.key] == moved
    assert txt.key not in back


def test_bad_api_key_is_fatal_and_not_echoed(powerdns: PowerDnsServer) -> None:
    wrong = "not-the-key-" + powerdns.api_key[:4]
    with pytest.raises(FatalError) as caught:
        provider_for(powerdns, key=wrong).list_zones()
    assert "API key" in str(caught.value)
    assert wrong not in str(caught.value) and powerdns.api_key not in str(caught.value)
