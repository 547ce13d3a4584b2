"""Route53 hosted zones -> a BIND zone file and a lossless JSON file per zone.

The JSON file is the truth (every record set as Route53 lists it, alias
targets and routing policies included) and is what ``parse_zone_json`` loads
to re-apply the zone elsewhere. The BIND file is for people and for any DNS
server that imports RFC 1035 text; what BIND cannot say (aliases, routing
policies) is written there as comments carrying the JSON of the set.

Zones are small (10,000 records at most), so a zone's records are listed
once in ``list_items`` and kept by the exporter: ``open`` renders from them
without listing again, and the idempotency key is the sha256 of the JSON, so
an unchanged zone is skipped on a later run and a changed one is exported again.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from orchestrator.errors import FatalError
from orchestrator.export.exporters.base import (
    BytesStream,
    ExportContext,
    Exporter,
    ExportItem,
    SourceStream,
    TierOf,
)
from providers.aws import AwsAccount, call_aws
from providers.dns import AliasTarget, RecordSet, absolute_name, canonical_value

#: Format marker of the JSON file; bump when its shape changes.
ZONE_JSON_FORMAT = "exitplan.route53.zone/1"

#: Route53 fields that make a set a routing-policy set.
_ROUTING_FIELDS = (
    "Weight",
    "Region",
    "Failover",
    "GeoLocation",
    "GeoProximityLocation",
    "CidrRoutingConfig",
    "MultiValueAnswer",
    "HealthCheckId",
    "TrafficPolicyInstanceId",
)

# moto 5.2 lists the SOA value as the repr of a dict ("{'Value': '...'}");
# real Route53 never does. Unwrapped at listing so exports from the sandbox
# are valid zones.
_MOTO_SOA_REPR = re.compile(r"""^\{'Value': '(?P<value>[^']*)'\}$""")

_CHUNK = 64 * 1024


@dataclass(frozen=True)
class _RenderedZone:
    zone_id: str
    digest: str
    json_bytes: bytes
    bind_bytes: bytes


def _set_sort_key(rrset: Mapping[str, Any]) -> tuple[str, str, str]:
    return (absolute_name(rrset["Name"]), rrset["Type"], rrset.get("SetIdentifier", ""))


def _normalise_rrset(rrset: Mapping[str, Any]) -> dict[str, Any]:
    """A listed set with values sorted and moto's SOA quirk undone; nothing else changes."""
    out = dict(rrset)
    if "ResourceRecords" in out:
        values = []
        for record in out["ResourceRecords"]:
            value = record["Value"]
            match = _MOTO_SOA_REPR.match(value) if out["Type"] == "SOA" else None
            values.append({"Value": match.group("value") if match else value})
        # DNS answers carry no order; sorting makes the JSON (and its hash) stable.
        out["ResourceRecords"] = sorted(values, key=lambda r: r["Value"])
    if "AliasTarget" in out:
        # Aliases have no TTL of their own; moto reports 0, AWS omits it.
        out.pop("TTL", None)
    return out


def record_set_from_route53(rrset: Mapping[str, Any]) -> RecordSet:
    """A ``RecordSet`` from one Route53 ``ResourceRecordSet`` dict."""
    alias = None
    if "AliasTarget" in rrset:
        target = rrset["AliasTarget"]
        alias = AliasTarget(
            hosted_zone_id=target["HostedZoneId"],
            dns_name=absolute_name(target["DNSName"]),
            evaluate_target_health=bool(target.get("EvaluateTargetHealth", False)),
        )
    routing = {k: rrset[k] for k in _ROUTING_FIELDS if k in rrset}
    return RecordSet(
        name=absolute_name(rrset["Name"]),
        type=rrset["Type"],
        ttl=None if alias is not None else int(rrset.get("TTL", 0)),
        values=tuple(sorted(r["Value"] for r in rrset.get("ResourceRecords", []))),
        alias=alias,
        set_identifier=rrset.get("SetIdentifier"),
        routing=json.dumps(routing, sort_keys=True, separators=(",", ":")) if routing else None,
    )


def zone_json(zone: Mapping[str, Any], rrsets: Sequence[Mapping[str, Any]]) -> bytes:
    """The canonical JSON file of a zone: deterministic bytes for the same content."""
    doc = {
        "format": ZONE_JSON_FORMAT,
        "zone": {
            "id": zone["Id"].rsplit("/", 1)[-1],
            "name": absolute_name(zone["Name"]),
            "private": bool(zone.get("Config", {}).get("PrivateZone", False)),
        },
        "record_sets": sorted((_normalise_rrset(r) for r in rrsets), key=_set_sort_key),
    }
    return (json.dumps(doc, sort_keys=True, indent=1, ensure_ascii=False) + "\n").encode()


def parse_zone_json(data: bytes) -> list[RecordSet]:
    """The record sets of a zone JSON file written by this exporter.

    Raises ``ValueError`` when ``data`` is not such a file (wrong format
    marker or shape). Pure: safe to call any number of times.
    """
    doc = json.loads(data)
    if not isinstance(doc, dict) or doc.get("format") != ZONE_JSON_FORMAT:
        raise ValueError(f"not an exitplan Route53 zone export (expected {ZONE_JSON_FORMAT})")
    return [record_set_from_route53(r) for r in doc["record_sets"]]


def parse_zone_name(data: bytes) -> str:
    """The absolute zone name recorded in a zone JSON file."""
    doc = json.loads(data)
    if not isinstance(doc, dict) or doc.get("format") != ZONE_JSON_FORMAT:
        raise ValueError(f"not an exitplan Route53 zone export (expected {ZONE_JSON_FORMAT})")
    return str(doc["zone"]["name"])


def _bind_name(name: str) -> str:
    # absolute_name decoded \ooo escapes; BIND needs specials other than '*' escaped.
    return "".join(c if c.isalnum() or c in "-_.*" else f"\\{ord(c):03d}" for c in name)


def render_bind(zone: Mapping[str, Any], rrsets: Sequence[Mapping[str, Any]]) -> bytes:
    """An RFC 1035 zone file for the zone: SOA first, then NS, then the rest by name.

    Every record carries its TTL and an absolute owner name, so the file
    means the same whatever ``$ORIGIN``/``$TTL`` a reader assumes. Alias and
    routing-policy sets are comments holding the set's JSON.
    """
    origin = absolute_name(zone["Name"])
    sets = sorted((_normalise_rrset(r) for r in rrsets), key=_set_sort_key)
    order = {"SOA": 0, "NS": 1}
    sets.sort(key=lambda r: (absolute_name(r["Name"]) != origin, order.get(r["Type"], 2)))
    soa_ttl = next((int(r.get("TTL", 300)) for r in sets if r["Type"] == "SOA"), 300)
    lines = [
        f"; Route53 hosted zone {zone['Id'].rsplit('/', 1)[-1]} ({origin}), exported by exitplan",
        f"$ORIGIN {origin}",
        f"$TTL {soa_ttl}",
    ]
    for rrset in sets:
        name = _bind_name(absolute_name(rrset["Name"]))
        rtype = rrset["Type"]
        note = json.dumps(rrset, sort_keys=True, ensure_ascii=False)
        if "AliasTarget" in rrset:
            target = rrset["AliasTarget"]
            lines.append(
                f"; ALIAS {name} {rtype} -> {absolute_name(target['DNSName'])} "
                f"(zone {target['HostedZoneId']}): BIND has no alias record"
            )
            lines.append(f"; exitplan-json {note}")
            continue
        routing = [k for k in _ROUTING_FIELDS if k in rrset]
        if routing:
            # Written as records, BIND would merge e.g. a failover pair into one
            # round-robin set and serve the standby: a comment keeps it honest.
            lines.append(
                f"; ROUTING-POLICY {name} {rtype} set {rrset.get('SetIdentifier', '')!r} "
                f"({', '.join(routing)}): plain DNS cannot express it"
            )
            lines.append(f"; exitplan-json {note}")
            continue
        ttl = int(rrset.get("TTL", soa_ttl))
        for record in rrset.get("ResourceRecords", []):
            value = canonical_value(rtype, record["Value"])
            lines.append(f"{name}\t{ttl}\tIN\t{rtype}\t{value}")
    return ("\n".join(lines) + "\n").encode()


class Route53Exporter(Exporter):
    """Every hosted zone as ``route53/<zone>.zone`` (BIND) and ``route53/<zone>.json``.

    A private zone, or a public zone whose name another public zone shares,
    gets its zone id in the key (``route53/<zone>.<id>.zone``), so two zones
    never overwrite each other.
    """

    kind: ClassVar[str] = "route53"

    def __init__(
        self, account: AwsAccount, *, tier_of: TierOf, context: ExportContext | None = None
    ) -> None:
        super().__init__(account, tier_of=tier_of, context=context)
        self._lock = threading.Lock()
        self._rendered: dict[str, _RenderedZone] = {}

    def _client(self) -> Any:
        # Route53 is global: the region only picks the signing endpoint.
        return self.account.client("route53")

    def _aws(self, what: str, fn: Callable[[], Any]) -> Any:
        return call_aws(what, fn)

    def _list_zones(self) -> list[dict[str, Any]]:
        pages = self._client().get_paginator("list_hosted_zones").paginate()
        return self._aws(
            "list Route53 hosted zones", lambda: [z for p in pages for z in p["HostedZones"]]
        )

    def _list_rrsets(self, zone_id: str) -> list[dict[str, Any]]:
        pages = (
            self._client().get_paginator("list_resource_record_sets").paginate(HostedZoneId=zone_id)
        )
        return self._aws(
            f"list record sets of Route53 zone {zone_id}",
            lambda: [r for p in pages for r in p["ResourceRecordSets"]],
        )

    def _render(self, zone: Mapping[str, Any]) -> _RenderedZone:
        zone_id = zone["Id"].rsplit("/", 1)[-1]
        rrsets = self._list_rrsets(zone["Id"])
        json_bytes = zone_json(zone, rrsets)
        rendered = _RenderedZone(
            zone_id=zone_id,
            digest=hashlib.sha256(json_bytes).hexdigest(),
            json_bytes=json_bytes,
            bind_bytes=render_bind(zone, rrsets),
        )
        with self._lock:
            self._rendered[zone_id] = rendered
        return rendered

    def list_items(self) -> Iterator[ExportItem]:
        """Two items per zone, listing each zone's records once (kept for ``open``)."""
        zones = self._list_zones()
        # Only public zones compete for the plain name: private zones always
        # carry their id, so creating one never renames a public zone's files.
        name_count: dict[str, int] = {}
        for zone in zones:
            if not zone.get("Config", {}).get("PrivateZone", False):
                name_count[zone["Name"]] = name_count.get(zone["Name"], 0) + 1
        for zone in zones:
            rendered = self._render(zone)
            name = absolute_name(zone["Name"]).rstrip(".")
            private = bool(zone.get("Config", {}).get("PrivateZone", False))
            stem = (
                name
                if not private and name_count[zone["Name"]] == 1
                else (f"{name}.{rendered.zone_id}")
            )
            for suffix, data in (("zone", rendered.bind_bytes), ("json", rendered.json_bytes)):
                source = {
                    "kind": self.kind,
                    "zone_id": rendered.zone_id,
                    "zone": name,
                    "private": private,
                    "format": "bind" if suffix == "zone" else "json",
                }
                yield self.new_item(
                    # One key per file: both files of a zone share the content hash.
                    idem_key=f"route53:{rendered.zone_id}:{rendered.digest}:{suffix}",
                    dest_key=f"route53/{stem}.{suffix}",
                    size=len(data),
                    source=source,
                )

    def open(self, item: ExportItem) -> SourceStream:
        """The zone's file as rendered at listing time.

        If this exporter did not list the zone (a fresh process), the zone is
        listed again; if it changed since the item was listed, raises
        ``FatalError`` (the item's key no longer names these bytes: list again).
        Retry-safe: yes.
        """
        zone_id = str(item.source["zone_id"])
        _, _, digest, suffix = item.idem_key.split(":")
        with self._lock:
            rendered = self._rendered.get(zone_id)
        if rendered is None or rendered.digest != digest:
            zone = self._aws(
                f"get Route53 zone {zone_id}",
                lambda: self._client().get_hosted_zone(Id=zone_id)["HostedZone"],
            )
            rendered = self._render(zone)
        if rendered.digest != digest:
            raise FatalError(
                f"Route53 zone {item.source.get('zone')} ({zone_id}) changed after it was "
                "listed; list the items again to export the new version"
            )
        return BytesStream(
            rendered.bind_bytes if suffix == "zone" else rendered.json_bytes,
            f"the rendered {item.dest_key}",
        )
