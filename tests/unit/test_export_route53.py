"""Route53 zones export to BIND text and lossless JSON, keyed by content."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from typing import Any

import boto3
import pytest

from orchestrator.errors import ChecksumMismatch
from orchestrator.export.exporters.base import ExportItem, load_exporter
from orchestrator.export.exporters.route53 import Route53Exporter, parse_zone_json, parse_zone_name
from providers.aws import AwsAccount
from providers.dns import absolute_name, canonical_value
from tests.support.aws import moto_account

ZONE = "shop.example.com"

#: (name, type, ttl, values): every type the exporter promises, multi-value
#: sets, TXT with quotes/escapes/several strings, a wildcard, a delegation.
PLAIN_SETS: list[tuple[str, str, int, list[str]]] = [
    ("shop.example.com", "A", 300, ["192.0.2.10", "192.0.2.11"]),
    ("shop.example.com", "AAAA", 300, ["2001:db8::10"]),
    ("shop.example.com", "MX", 3600, ["10 mx1.shop.example.com.", "20 mx2.shop.example.com"]),
    (
        "shop.example.com",
        "TXT",
        300,
        ['"v=spf1 include:_spf.example.net ~all"', '"google-site-verification=abc123"'],
    ),
    ("shop.example.com", "SPF", 300, ['"v=spf1 -all"']),
    ("shop.example.com", "CAA", 3600, ['0 issue "letsencrypt.org"', '0 iodef "mailto:s@x.org"']),
    ("www.shop.example.com", "CNAME", 60, ["shop.example.com."]),
    ("api.shop.example.com", "A", 60, ["192.0.2.20"]),
    ("api.shop.example.com", "AAAA", 60, ["2001:db8::20", "2001:db8::21"]),
    ("mx1.shop.example.com", "A", 3600, ["192.0.2.25"]),
    ("mx2.shop.example.com", "A", 3600, ["192.0.2.26"]),
    ("_sip._tcp.shop.example.com", "SRV", 600, ["10 60 5060 sip.shop.example.com."]),
    ("sip.shop.example.com", "A", 600, ["192.0.2.30"]),
    (
        "quoted.shop.example.com",
        "TXT",
        120,
        ['"say \\"hi\\"; semi;colon"', '"part one" "part two"'],
    ),
    ("dkim._domainkey.shop.example.com", "TXT", 300, ['"v=DKIM1; k=rsa; p=MIGfMA0GCSq"']),
    ("_dmarc.shop.example.com", "TXT", 300, ['"v=DMARC1; p=reject"']),
    ("dev.shop.example.com", "NS", 86400, ["ns1.dev-dns.example.net.", "ns2.dev-dns.example.net"]),
    ("10.2.0.192.shop.example.com", "PTR", 3600, ["api.shop.example.com."]),
    ("*.cdn.shop.example.com", "CNAME", 300, ["edge.cdn-provider.example.net."]),
    ("static.shop.example.com", "A", 86400, ["192.0.2.40"]),
    ("mail.shop.example.com", "CNAME", 300, ["mx1.shop.example.com"]),
]


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[AwsAccount]:
    with moto_account(monkeypatch, ["us-east-1"]) as account:
        yield account


class FixedTier:
    """A ``TierOf`` that puts everything in one tier (the planner's job is elsewhere)."""

    def __init__(self, tier: str) -> None:
        self.tier = tier

    def __call__(self, source: Mapping[str, Any]) -> str:
        return self.tier

    def rank(self, source: Mapping[str, Any]) -> int:
        return 0


def make_zone(client: Any, name: str = ZONE) -> str:
    zone_id: str = client.create_hosted_zone(Name=name, CallerReference=name)["HostedZone"]["Id"]
    changes: list[dict[str, Any]] = [
        {
            "Action": "CREATE",
            "ResourceRecordSet": {
                "Name": rname,
                "Type": rtype,
                "TTL": ttl,
                "ResourceRecords": [{"Value": v} for v in values],
            },
        }
        for rname, rtype, ttl, values in PLAIN_SETS
    ]
    changes.append(
        {
            "Action": "CREATE",
            "ResourceRecordSet": {
                "Name": f"alias.{name}",
                "Type": "A",
                "AliasTarget": {
                    "HostedZoneId": zone_id.rsplit("/", 1)[-1],
                    "DNSName": f"static.{name}",
                    "EvaluateTargetHealth": False,
                },
            },
        }
    )
    for ident, weight, ip in (("blue", 90, "192.0.2.50"), ("green", 10, "192.0.2.51")):
        changes.append(
            {
                "Action": "CREATE",
                "ResourceRecordSet": {
                    "Name": f"canary.{name}",
                    "Type": "A",
                    "SetIdentifier": ident,
                    "Weight": weight,
                    "TTL": 30,
                    "ResourceRecords": [{"Value": ip}],
                },
            }
        )
    client.change_resource_record_sets(HostedZoneId=zone_id, ChangeBatch={"Changes": changes})
    return zone_id


def read_item(exporter: Route53Exporter, item: ExportItem) -> bytes:
    """Read an item the way the transfer engine does: iterate, hash, verify."""
    stream = exporter.open(item)
    data = b"".join(stream)
    stream.verify(
        size=len(data),
        md5_hex=hashlib.md5(data).hexdigest(),
        sha256_hex=hashlib.sha256(data).hexdigest(),
    )
    stream.close()
    return data


def export_all(account: AwsAccount) -> dict[str, tuple[ExportItem, bytes]]:
    exporter = load_exporter("route53")(account, tier_of=FixedTier("critical"))
    assert isinstance(exporter, Route53Exporter)
    return {item.dest_key: (item, read_item(exporter, item)) for item in exporter.list_items()}


def bind_records(text: str) -> set[tuple[str, str, int, str]]:
    """(name, type, ttl, value) of every record line of a zone file we wrote."""
    out = set()
    for line in text.splitlines():
        if not line or line.startswith((";", "$")):
            continue
        name, ttl, klass, rtype, value = line.split("\t")
        assert klass == "IN"
        out.add((name, rtype, int(ttl), value))
    return out


def test_zone_exports_as_bind_and_json_with_every_record(aws: AwsAccount) -> None:
    make_zone(aws.client("route53"))
    exported = export_all(aws)

    assert set(exported) == {f"route53/{ZONE}.zone", f"route53/{ZONE}.json"}
    bind_item, bind_bytes = exported[f"route53/{ZONE}.zone"]
    json_item, json_bytes = exported[f"route53/{ZONE}.json"]
    for item, data in ((bind_item, bind_bytes), (json_item, json_bytes)):
        assert item.kind == "route53" and item.tier == "critical"
        assert item.size == len(data)
    assert bind_item.idem_key != json_item.idem_key

    text = bind_bytes.decode()
    lines = text.splitlines()
    assert f"$ORIGIN {ZONE}." in lines
    assert any(line.startswith("$TTL ") for line in lines)
    records = bind_records(text)
    # SOA first, then the apex NS (moto's values lack the dot: the file must add it).
    first = [line for line in lines if line and not line.startswith((";", "$"))]
    assert first[0].split("\t")[3] == "SOA"
    assert "{'Value'" not in text  # moto's SOA repr quirk is undone
    ns = {r for r in records if r[1] == "NS" and r[0] == f"{ZONE}."}
    assert ns and all(r[3].endswith(".") for r in ns)

    for name, rtype, ttl, values in PLAIN_SETS:
        for value in values:
            # TXT/SPF/CAA exactly as given (quotes, escapes, several strings);
            # host names made absolute, since BIND reads dotless names as relative.
            assert (absolute_name(name), rtype, ttl, canonical_value(rtype, value)) in records
    assert ("quoted.shop.example.com.", "TXT", 120, '"part one" "part two"') in records
    assert ("mail.shop.example.com.", "CNAME", 300, "mx1.shop.example.com.") in records

    # Alias and weighted sets: never served as plain records, kept as comments + JSON.
    assert not any(r[0].startswith(("alias.", "canary.")) for r in records)
    notes = [line for line in lines if line.startswith("; exitplan-json ")]
    noted = [json.loads(line.removeprefix("; exitplan-json ")) for line in notes]
    alias_note = next(n for n in noted if "AliasTarget" in n)
    assert alias_note["AliasTarget"]["DNSName"] == f"static.{ZONE}"
    assert sorted(n["SetIdentifier"] for n in noted if "SetIdentifier" in n) == ["blue", "green"]
    assert any(line.startswith(f"; ALIAS alias.{ZONE}. A -> static.{ZONE}.") for line in lines)


def test_json_round_trips_losslessly(aws: AwsAccount) -> None:
    client = aws.client("route53")
    zone_id = make_zone(client)
    _, json_bytes = export_all(aws)[f"route53/{ZONE}.json"]

    assert parse_zone_name(json_bytes) == f"{ZONE}."
    loaded = {rs.key: rs for rs in parse_zone_json(json_bytes)}
    for name, rtype, ttl, values in PLAIN_SETS:
        rs = loaded[(absolute_name(name), rtype, "")]
        assert (rs.ttl, rs.values) == (ttl, tuple(sorted(values)))
    alias = loaded[(f"alias.{ZONE}.", "A", "")]
    assert alias.alias is not None and alias.ttl is None
    assert alias.alias.dns_name == f"static.{ZONE}."
    assert alias.alias.hosted_zone_id == zone_id.rsplit("/", 1)[-1]
    blue = loaded[(f"canary.{ZONE}.", "A", "blue")]
    assert json.loads(blue.routing or "{}") == {"Weight": 90}
    assert blue.values == ("192.0.2.50",)
    soa = loaded[(f"{ZONE}.", "SOA", "")]
    assert soa.values[0].split()[2:] == ["1", "7200", "900", "1209600", "86400"]

    # Every set Route53 lists is in the file, with nothing extra.
    listed = client.list_resource_record_sets(HostedZoneId=zone_id)["ResourceRecordSets"]
    assert len(loaded) == len(listed) == len(PLAIN_SETS) + 2 + 1 + 2
    with pytest.raises(ValueError, match="not an exitplan Route53 zone export"):
        parse_zone_json(b'{"format": "something-else"}')


def test_unchanged_zone_keeps_its_key_and_a_changed_one_gets_a_new_one(aws: AwsAccount) -> None:
    client = aws.client("route53")
    zone_id = make_zone(client)
    first = {key: item.idem_key for key, (item, _) in export_all(aws).items()}
    again = {key: item.idem_key for key, (item, _) in export_all(aws).items()}
    assert first == again
    assert all(k.startswith(f"route53:{zone_id.rsplit('/', 1)[-1]}:") for k in first.values())

    client.change_resource_record_sets(
        HostedZoneId=zone_id,
        ChangeBatch={
            "Changes": [
                {
                    "Action": "UPSERT",
                    "ResourceRecordSet": {
                        "Name": f"api.{ZONE}",
                        "Type": "A",
                        "TTL": 60,
                        "ResourceRecords": [{"Value": "192.0.2.99"}],
                    },
                }
            ]
        },
    )
    changed = export_all(aws)
    assert set(changed) == set(first)
    for key, (item, _) in changed.items():
        assert item.idem_key != first[key]
    assert ("api.shop.example.com.", "A", 60, "192.0.2.99") in bind_records(
        changed[f"route53/{ZONE}.zone"][1].decode()
    )


def test_open_renders_from_the_listing_and_verify_catches_a_short_read(aws: AwsAccount) -> None:
    client = aws.client("route53")
    make_zone(client)
    exporter = Route53Exporter(aws, tier_of=FixedTier("critical"))
    items = list(exporter.list_items())
    # Delete the zone's records at the source: open() must still give what was listed.
    zone_id = client.list_hosted_zones()["HostedZones"][0]["Id"]
    client.change_resource_record_sets(
        HostedZoneId=zone_id,
        ChangeBatch={
            "Changes": [
                {
                    "Action": "DELETE",
                    "ResourceRecordSet": {
                        "Name": f"static.{ZONE}",
                        "Type": "A",
                        "TTL": 86400,
                        "ResourceRecords": [{"Value": "192.0.2.40"}],
                    },
                }
            ]
        },
    )
    bind_item = next(i for i in items if i.dest_key.endswith(".zone"))
    data = read_item(exporter, bind_item)
    assert b"static.shop.example.com.\t86400\tIN\tA\t192.0.2.40" in data

    stream = exporter.open(bind_item)
    short = b"".join(stream)[:-1]
    with pytest.raises(ChecksumMismatch):
        stream.verify(
            size=len(short),
            md5_hex=hashlib.md5(short).hexdigest(),
            sha256_hex=hashlib.sha256(short).hexdigest(),
        )


def test_private_and_duplicate_zone_names_get_distinct_keys(aws: AwsAccount) -> None:
    client = aws.client("route53")
    make_zone(client)
    ec2 = boto3.client("ec2", region_name="us-east-1")
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    private = client.create_hosted_zone(
        Name=ZONE,
        CallerReference="private",
        VPC={"VPCRegion": "us-east-1", "VPCId": vpc},
        HostedZoneConfig={"PrivateZone": True, "Comment": "internal"},
    )["HostedZone"]["Id"]
    keys = set(export_all(aws))
    private_id = private.rsplit("/", 1)[-1]
    assert f"route53/{ZONE}.{private_id}.zone" in keys
    assert f"route53/{ZONE}.{private_id}.json" in keys
    assert {f"route53/{ZONE}.zone", f"route53/{ZONE}.json"} < keys  # public keeps its name
    assert len(keys) == 4
    for key in keys:
        assert all(part not in ("", ".", "..") for part in key.split("/"))
