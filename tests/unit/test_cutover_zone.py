"""The zone model: the export (JSON and BIND) and the live Route53 zone read as the same sets."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.cutover import (
    ZoneSnapshot,
    flatten_in_zone_aliases,
    service_names_pointing_at,
    zone_from_bind,
    zone_from_export,
    zone_from_provider,
    zone_ttls,
)
from orchestrator.errors import ConfigError
from providers.aws import AwsAccount
from providers.dns_route53 import Route53DnsProvider
from providers.interfaces.dns import RecordSet
from tests.support.aws import moto_account
from tests.unit.test_export_route53 import ZONE, export_all, make_zone

APEX = f"{ZONE}."


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[AwsAccount]:
    with moto_account(monkeypatch, ["us-east-1"]) as account:
        make_zone(account.client("route53"))
        yield account


def canonical(snapshot: ZoneSnapshot) -> set[RecordSet]:
    return {rs.canonical() for rs in snapshot.record_sets}


def test_export_files_and_the_live_zone_hold_the_same_sets(aws: AwsAccount, tmp_path: Path) -> None:
    exported = export_all(aws)
    for key, (_, data) in exported.items():
        (tmp_path / Path(key).name).write_bytes(data)
    live = zone_from_provider(Route53DnsProvider("old", aws.client("route53")), ZONE)
    from_json = zone_from_export(tmp_path / f"{ZONE}.json")
    bind_text = (tmp_path / f"{ZONE}.zone").read_text()
    from_bind = zone_from_bind(bind_text, source="export")

    assert live.name == from_json.name == from_bind.name == APEX
    assert from_json.source == f"export:{ZONE}.json"
    assert canonical(from_json) == canonical(live)
    # BIND: plain sets read by dnspython, aliases and weighted sets from the exitplan-json notes.
    assert canonical(from_bind) == canonical(live)
    assert {rs.set_identifier for rs in from_bind.find(f"canary.{ZONE}", "A")} == {"blue", "green"}

    # Given the .zone path with no .json beside it, the BIND file is read.
    (tmp_path / f"{ZONE}.json").unlink()
    assert zone_from_export(tmp_path / f"{ZONE}.zone").source == f"export:{ZONE}.zone"


def test_facts_the_schedule_reads(aws: AwsAccount) -> None:
    live = zone_from_provider(Route53DnsProvider("old", aws.client("route53")), ZONE)
    # moto's SOA: TTL 900, minimum 86400 -> 900 s of negative caching; NS 172800 s.
    assert live.negative_ttl == 900
    ttls = zone_ttls(live, [APEX, f"www.{ZONE}", f"alias.{ZONE}"])
    assert (ttls.ns_ttl, ttls.negative_ttl, ttls.max_record_ttl) == (172800, 900, 86400)
    assert ttls.max_service_ttl == 300  # apex A/AAAA 300, www CNAME 60, alias counted as 60


def test_aliases_to_names_in_the_zone_become_records(aws: AwsAccount) -> None:
    live = zone_from_provider(Route53DnsProvider("old", aws.client("route53")), ZONE)
    flat, notes = flatten_in_zone_aliases(live)
    (alias,) = flat.find(f"alias.{ZONE}", "A")
    assert (alias.alias, alias.ttl, alias.values) == (None, 86400, ("192.0.2.40",))
    assert notes == [f"alias.{ZONE}. A: alias of static.{ZONE}. written as its records"]


def test_service_names_are_found_by_the_old_addresses(aws: AwsAccount) -> None:
    live = zone_from_provider(Route53DnsProvider("old", aws.client("route53")), ZONE)
    assert service_names_pointing_at(live, ["192.0.2.10", "2001:db8::20"]) == [
        f"api.{ZONE}.",
        APEX,
    ]
    assert service_names_pointing_at(live, ["edge.cdn-provider.example.net"]) == [f"*.cdn.{ZONE}."]
    assert service_names_pointing_at(live, [f"static.{ZONE}"]) == [f"alias.{ZONE}."]


def test_a_file_that_is_not_an_export_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "zone.json"
    bad.write_text('{"format": "something-else"}')
    with pytest.raises(
        ConfigError, match=r"export:zone\.json: not an exitplan Route53 zone export"
    ):
        zone_from_export(bad)
    with pytest.raises(ConfigError, match="cannot read the exported zone"):
        zone_from_export(tmp_path / "missing.zone")
    with pytest.raises(ConfigError, match="re-export the zone"):
        zone_from_bind("$ORIGIN x.test.\nwww 60 IN A not-an-address\n", source="f.zone")
