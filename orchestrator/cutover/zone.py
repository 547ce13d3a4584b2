"""The zone being moved, as read from its export or from the live Route53 zone.

A ``ZoneSnapshot`` is the zone's record sets (``providers.interfaces.dns.RecordSet``)
at one moment, from one place. It is what the cutover plans from: the sets
to create on the new provider, the TTLs the schedule is computed from, the
service names the flip moves.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dns.exception
import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.zone

from orchestrator.errors import ConfigError
from orchestrator.export.exporters.route53 import (
    parse_zone_json,
    parse_zone_name,
    record_set_from_route53,
)
from providers.interfaces.dns import DnsProvider, RecordSet, absolute_name

#: Types whose targets the flip moves (Route53 aliases are A/AAAA sets with an alias target).
SERVICE_TYPES = ("A", "AAAA", "CNAME")

_EXITPLAN_JSON_NOTE = "; exitplan-json "


@dataclass(frozen=True)
class ZoneSnapshot:
    """Every record set of one zone, read at ``read_at`` from ``source``.

    ``name`` is absolute. ``source`` says where the sets came from, e.g.
    ``export:route53/shop.example.com.json`` or ``route53 (live)``.
    """

    name: str
    record_sets: tuple[RecordSet, ...]
    source: str

    def find(self, name: str, rtype: str) -> list[RecordSet]:
        """The sets at (name, type): one, or several for routing-policy sets, or none."""
        owner = absolute_name(name)
        return [rs for rs in self.record_sets if rs.name == owner and rs.type == rtype]

    @property
    def soa(self) -> RecordSet | None:
        return next((rs for rs in self.find(self.name, "SOA")), None)

    @property
    def apex_ns(self) -> RecordSet | None:
        return next((rs for rs in self.find(self.name, "NS")), None)

    @property
    def negative_ttl(self) -> int | None:
        """How long resolvers may cache "no such name": min(SOA TTL, SOA minimum) (RFC 2308).

        None when the zone has no readable SOA.
        """
        soa = self.soa
        if soa is None or not soa.values or soa.ttl is None:
            return None
        fields = soa.values[0].split()
        if len(fields) != 7 or not fields[6].isdigit():
            return None
        return min(soa.ttl, int(fields[6]))

    def names(self) -> set[str]:
        return {rs.name for rs in self.record_sets}


def zone_from_export(path: Path) -> ZoneSnapshot:
    """The zone in an exported ``route53/<zone>.json`` (lossless) or ``.zone`` (BIND) file.

    The JSON file is preferred where both exist: give either path. Raises
    ``ConfigError`` naming the file when it is not an exitplan zone export.
    """
    json_path = path.with_suffix(".json")
    chosen = json_path if json_path.is_file() else path
    try:
        data = chosen.read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"{path}: cannot read the exported zone ({exc.strerror}); export route53 first"
        ) from None
    if chosen.suffix == ".json":
        return zone_from_export_json(data, source=f"export:{chosen.name}")
    return zone_from_bind(data.decode("utf-8"), source=f"export:{chosen.name}")


def zone_from_export_json(data: bytes, *, source: str = "export") -> ZoneSnapshot:
    """The zone in the bytes of an exported zone JSON file. ``ConfigError`` if it is not one."""
    try:
        return ZoneSnapshot(parse_zone_name(data), tuple(parse_zone_json(data)), source)
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{source}: not an exitplan Route53 zone export: {exc}") from None


def zone_from_bind(text: str, *, source: str = "export") -> ZoneSnapshot:
    """The zone in an exported BIND file, aliases and routing-policy sets included.

    Plain records are read with dnspython; the alias and routing-policy sets
    the exporter writes as ``; exitplan-json {...}`` comments are read back
    from those comments, so nothing the JSON file holds is lost. Raises
    ``ConfigError`` naming ``source`` and the line when the file does not parse.
    """
    try:
        zone = dns.zone.from_text(text, origin=None, relativize=False, check_origin=False)
    except dns.exception.SyntaxError as exc:
        raise ConfigError(f"{source}: {exc}; re-export the zone") from None
    except dns.exception.DNSException as exc:
        raise ConfigError(f"{source}: not a zone file: {exc}; re-export the zone") from None
    sets: list[RecordSet] = []
    for owner, rdataset in zone.iterate_rdatasets():
        sets.append(
            RecordSet(
                name=absolute_name(owner.to_text()),
                type=dns.rdatatype.to_text(rdataset.rdtype),
                ttl=rdataset.ttl,
                values=tuple(sorted(rd.to_text() for rd in rdataset)),
            )
        )
    for lineno, line in enumerate(text.splitlines(), start=1):
        if line.startswith(_EXITPLAN_JSON_NOTE):
            try:
                rrset: dict[str, Any] = json.loads(line.removeprefix(_EXITPLAN_JSON_NOTE))
                sets.append(record_set_from_route53(rrset))
            except (ValueError, KeyError, TypeError) as exc:
                raise ConfigError(
                    f"{source}:{lineno}:1: unreadable exitplan-json note ({exc}); "
                    "re-export the zone"
                ) from None
    if zone.origin is None:
        raise ConfigError(f"{source}: the zone file has no $ORIGIN; re-export the zone")
    return ZoneSnapshot(
        absolute_name(zone.origin.to_text()), tuple(sorted(sets, key=lambda rs: rs.key)), source
    )


def zone_from_provider(provider: DnsProvider, zone_name: str) -> ZoneSnapshot:
    """The zone as ``provider`` holds it now (e.g. the live Route53 zone, read over boto3).

    Raises ``DnsZoneNotFound``; ``RetryableError`` on a passing failure.
    """
    zone = absolute_name(zone_name)
    return ZoneSnapshot(zone, tuple(provider.list_records(zone)), provider.describe())


def flatten_in_zone_aliases(snapshot: ZoneSnapshot) -> tuple[ZoneSnapshot, list[str]]:
    """The zone with aliases to a plain set of the same zone replaced by that set's records.

    A Route53 alias answers with its target's records and TTL, so where the
    target is a plain (non-alias, non-routing) set in this zone, writing the
    target's values under the alias's name answers the same on any DNS
    server. Aliases to anything else (a load balancer, CloudFront, S3) are
    left as they are. Returns the new snapshot and a note per flattened alias.
    """
    plain = {
        (rs.name, rs.type): rs
        for rs in snapshot.record_sets
        if rs.alias is None and rs.set_identifier is None
    }
    out: list[RecordSet] = []
    notes: list[str] = []
    for rs in snapshot.record_sets:
        target = plain.get((rs.alias.dns_name, rs.type)) if rs.alias is not None else None
        if rs.alias is not None and target is not None and rs.set_identifier is None:
            out.append(RecordSet(rs.name, rs.type, target.ttl, target.values))
            notes.append(f"{rs.name} {rs.type}: alias of {target.name} written as its records")
        else:
            out.append(rs)
    return ZoneSnapshot(snapshot.name, tuple(out), snapshot.source), notes


def service_names_pointing_at(snapshot: ZoneSnapshot, targets: Iterable[str]) -> list[str]:
    """Names whose A/AAAA/CNAME sets (or alias targets) point at any of ``targets``.

    ``targets`` are the old service's addresses and host names (EC2 public
    IPs, the load balancer's DNS name); host names compare as absolute,
    case-insensitive names. Returns sorted absolute names: the flip's
    default service names.
    """
    wanted = {t.strip().lower() for t in targets if t.strip()}
    wanted |= {absolute_name(t) for t in wanted if not _is_address(t)}
    found = set()
    for rs in snapshot.record_sets:
        if rs.type not in SERVICE_TYPES:
            continue
        values = {v.lower() for v in rs.values} | {absolute_name(v) for v in rs.values}
        if rs.alias is not None:
            values.add(rs.alias.dns_name)
        if values & wanted:
            found.add(rs.name)
    return sorted(found)


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class ZoneTtls:
    """The TTLs the schedule is computed from, read from the old zone.

    ``max_service_ttl``: the longest TTL of the service names' A/AAAA/CNAME
    sets (an alias counts as 60 s, Route53's fixed alias TTL for AWS
    targets). ``max_record_ttl``: the longest TTL of any set other than the
    apex SOA/NS. ``ns_ttl``: the apex NS TTL (Route53's default is 172800 s).
    ``negative_ttl``: min(SOA TTL, SOA minimum), how long "no such name" is
    cached.
    """

    zone: str
    max_service_ttl: int
    max_record_ttl: int
    ns_ttl: int | None
    negative_ttl: int | None


#: The TTL Route53 gives alias answers that point at AWS resources.
ROUTE53_ALIAS_TTL = 60


def zone_ttls(snapshot: ZoneSnapshot, service_names: Sequence[str]) -> ZoneTtls:
    """The schedule's TTL facts of ``snapshot``. Pure."""
    services = {absolute_name(n) for n in service_names}
    apex = snapshot.name

    def ttl_of(rs: RecordSet) -> int:
        return rs.ttl if rs.ttl is not None else ROUTE53_ALIAS_TTL

    body = [rs for rs in snapshot.record_sets if not (rs.name == apex and rs.type in ("SOA", "NS"))]
    service_ttls = [ttl_of(rs) for rs in body if rs.name in services and rs.type in SERVICE_TYPES]
    ns = snapshot.apex_ns
    return ZoneTtls(
        zone=apex,
        max_service_ttl=max(service_ttls, default=0),
        max_record_ttl=max((ttl_of(rs) for rs in body), default=0),
        ns_ttl=ns.ttl if ns is not None else None,
        negative_ttl=snapshot.negative_ttl,
    )


def relative_owner(name: str, zone: str) -> str:
    """``name`` relative to ``zone`` for display (``@`` for the apex)."""
    owner = dns.name.from_text(absolute_name(name))
    origin = dns.name.from_text(absolute_name(zone))
    if owner == origin:
        return "@"
    if owner.is_subdomain(origin):
        return owner.relativize(origin).to_text()
    return owner.to_text()
