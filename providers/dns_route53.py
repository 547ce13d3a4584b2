"""The old zone: a Route53 hosted zone as a ``DnsProvider``, over boto3.

Used at cutover to change the zone that still lives in the account being
left (lower its TTLs, keep it identical to the new zone while it accepts
writes). Route53 is the source, so this provider does not create zones.
libcloud's Route53 driver does not work against moto, hence boto3.

Record sets read here are the ``RecordSet`` values the Route53 exporter
writes (alias targets and routing policies kept), with host names made
absolute, so a live zone and its export compare equal in canonical form.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

import botocore.exceptions

from orchestrator.errors import ExitplanError, FatalError, RetryableError
from providers.aws import should_retry
from providers.interfaces.dns import (
    AliasTarget,
    DnsProvider,
    DnsZoneNotFound,
    RecordChange,
    RecordSet,
    absolute_name,
    canonical_value,
)

#: Route53 fields that make a set a routing-policy set (kept as JSON in ``RecordSet.routing``).
ROUTING_FIELDS = (
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

# moto lists the SOA value as the repr of a dict; real Route53 never does.
_MOTO_SOA_REPR = re.compile(r"""^\{'Value': '(?P<value>[^']*)'\}$""")


def record_set_from_rrset(rrset: Mapping[str, Any]) -> RecordSet:
    """A ``RecordSet`` from one listed Route53 ``ResourceRecordSet``.

    Host names in values are made absolute (``canonical_value``): Route53
    treats them as absolute whether or not they end with a dot.
    """
    alias = None
    if "AliasTarget" in rrset:
        target = rrset["AliasTarget"]
        alias = AliasTarget(
            hosted_zone_id=target["HostedZoneId"],
            dns_name=absolute_name(target["DNSName"]),
            evaluate_target_health=bool(target.get("EvaluateTargetHealth", False)),
        )
    values = []
    for record in rrset.get("ResourceRecords", []):
        value = record["Value"]
        match = _MOTO_SOA_REPR.match(value) if rrset["Type"] == "SOA" else None
        values.append(canonical_value(rrset["Type"], match.group("value") if match else value))
    routing = {k: rrset[k] for k in ROUTING_FIELDS if k in rrset}
    return RecordSet(
        name=absolute_name(rrset["Name"]),
        type=rrset["Type"],
        ttl=None if alias is not None else int(rrset.get("TTL", 0)),
        values=tuple(sorted(values)),
        alias=alias,
        set_identifier=rrset.get("SetIdentifier"),
        routing=json.dumps(routing, sort_keys=True, separators=(",", ":")) if routing else None,
    )


def rrset_from_record_set(rs: RecordSet) -> dict[str, Any]:
    """The Route53 ``ResourceRecordSet`` that writes ``rs`` (inverse of ``record_set_from_rrset``)."""
    out: dict[str, Any] = {"Name": absolute_name(rs.name), "Type": rs.type}
    if rs.set_identifier is not None:
        out["SetIdentifier"] = rs.set_identifier
    if rs.routing:
        out.update(json.loads(rs.routing))
    if rs.alias is not None:
        out["AliasTarget"] = {
            "HostedZoneId": rs.alias.hosted_zone_id,
            "DNSName": rs.alias.dns_name,
            "EvaluateTargetHealth": rs.alias.evaluate_target_health,
        }
        return out
    if rs.ttl is None:
        raise FatalError(f"{rs.name} {rs.type} has no TTL and is no alias; Route53 needs one")
    out["TTL"] = rs.ttl
    out["ResourceRecords"] = [{"Value": v} for v in rs.values]
    return out


class Route53DnsProvider(DnsProvider):
    """A ``DnsProvider`` over Route53 hosted zones (boto3 client given by the caller).

    ``zone_ids`` maps absolute zone names to hosted zone ids where a name is
    ambiguous (a public and a private zone share it); otherwise the only
    public zone of that name is used. ``create``/``update`` are UPSERTs of
    the whole set; ``delete`` sends the set exactly as Route53 lists it (it
    refuses any other), and skips a set that is not there. One
    ChangeResourceRecordSets request per ``apply``: Route53 applies it whole
    or not at all. Retry-safe: every method.
    """

    capabilities = frozenset({"alias", "routing_policies"})

    def __init__(
        self, name: str, client: Any, *, zone_ids: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(name)
        self._client = client
        self._zone_ids = {absolute_name(k): v for k, v in (zone_ids or {}).items()}

    def describe(self) -> str:
        endpoint = getattr(getattr(self._client, "meta", None), "endpoint_url", "")
        return f"route53:{endpoint}" if endpoint else "route53"

    def _call(self, what: str, fn: Any, **kwargs: Any) -> Any:
        try:
            return fn(**kwargs)
        except ExitplanError:
            raise
        except botocore.exceptions.ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            message = exc.response.get("Error", {}).get("Message", "")
            if code == "NoSuchHostedZone":
                raise DnsZoneNotFound(f"{what}: no such Route53 hosted zone") from None
            if code in ("AccessDenied", "AccessDeniedException"):
                raise FatalError(
                    f"{what}: {self.describe()} denied access ({message}); the account may "
                    "no longer accept changes"
                ) from None
            if should_retry(exc):
                raise RetryableError(f"{what}: {code}: {message}") from exc
            raise FatalError(f"{what}: {code}: {message}") from exc
        except Exception as exc:
            if should_retry(exc):
                raise RetryableError(f"{what}: {type(exc).__name__}: {exc}") from exc
            raise

    def zone_id(self, zone_name: str) -> str:
        """The hosted zone id of ``zone_name``. Raises ``DnsZoneNotFound``, ``FatalError``."""
        zone = absolute_name(zone_name)
        if zone in self._zone_ids:
            return self._zone_ids[zone]
        found = self._call(
            f"find Route53 zone {zone}",
            self._client.list_hosted_zones_by_name,
            DNSName=zone,
            MaxItems="100",
        )
        matches = [z for z in found["HostedZones"] if absolute_name(z["Name"]) == zone]
        public = [z for z in matches if not z.get("Config", {}).get("PrivateZone", False)]
        if not matches:
            raise DnsZoneNotFound(
                f"zone {zone!r} does not exist at {self.describe()}; check the zone name"
            )
        chosen = public or matches
        if len(chosen) > 1:
            ids = ", ".join(z["Id"].rsplit("/", 1)[-1] for z in chosen)
            raise FatalError(f"several Route53 zones are named {zone} ({ids}); name one by its id")
        zone_id: str = chosen[0]["Id"].rsplit("/", 1)[-1]
        self._zone_ids[zone] = zone_id
        return zone_id

    def _raw_sets(self, zone_name: str) -> list[dict[str, Any]]:
        zone = absolute_name(zone_name)
        zone_id = self.zone_id(zone)
        pages = self._client.get_paginator("list_resource_record_sets").paginate(
            HostedZoneId=zone_id
        )
        try:
            return self._call(
                f"list record sets of {zone}",
                lambda: [r for p in pages for r in p["ResourceRecordSets"]],
            )
        except DnsZoneNotFound:
            raise DnsZoneNotFound(
                f"zone {zone!r} does not exist at {self.describe()}; check the zone name"
            ) from None

    # -- DnsProvider ---------------------------------------------------------

    def list_zones(self) -> list[str]:
        pages = self._client.get_paginator("list_hosted_zones").paginate()
        zones = self._call(
            "list Route53 hosted zones", lambda: [z for p in pages for z in p["HostedZones"]]
        )
        return sorted({absolute_name(z["Name"]) for z in zones})

    def create_zone(self, zone_name: str, *, nameservers: Sequence[str]) -> None:
        raise FatalError(
            f"{self.describe()} is the zone being left; exitplan does not create zones there "
            f"({absolute_name(zone_name)})"
        )

    def list_records(self, zone_name: str) -> list[RecordSet]:
        sets = [record_set_from_rrset(r) for r in self._raw_sets(zone_name)]
        return sorted(sets, key=lambda rs: rs.key)

    def apply(self, zone_name: str, changes: Sequence[RecordChange]) -> None:
        if not changes:
            return
        zone = absolute_name(zone_name)
        listed: dict[tuple[str, str, str], dict[str, Any]] = {}
        if any(c.action == "delete" for c in changes):
            listed = {record_set_from_rrset(r).key: r for r in self._raw_sets(zone)}
        batch: list[dict[str, Any]] = []
        for change in changes:
            rs = change.record_set
            key = (absolute_name(rs.name), rs.type, rs.set_identifier or "")
            if change.action == "delete":
                # Route53 deletes only a set given exactly as it holds it.
                if key in listed:
                    batch.append({"Action": "DELETE", "ResourceRecordSet": listed[key]})
                continue
            batch.append({"Action": "UPSERT", "ResourceRecordSet": rrset_from_record_set(rs)})
        if not batch:
            return
        self._call(
            f"apply {len(batch)} change(s) to {zone}",
            self._client.change_resource_record_sets,
            HostedZoneId=self.zone_id(zone),
            ChangeBatch={"Comment": "exitplan cutover", "Changes": batch},
        )
