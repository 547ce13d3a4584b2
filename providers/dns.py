"""DNS providers: where a zone goes at cutover, over libcloud DNS drivers.

The model is the *record set* (name + type, every value, one TTL), because
that is the unit both Route53 and the PowerDNS API change atomically. A
libcloud ``Record`` is one value; this module groups and ungroups them so the
engine never sees the difference.

``DnsProvider`` and the record-set model live in ``providers/interfaces/``; they
are re-exported here so existing imports keep working.
"""

from __future__ import annotations

import json
import socket
import ssl
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from orchestrator.errors import ConfigError, ExitplanError, FatalError, RetryableError

# The model and the interface live in providers.base; re-exported so existing
# ``from providers.dns import RecordSet`` imports keep working.
from providers.interfaces.dns import AliasTarget as AliasTarget
from providers.interfaces.dns import DnsProvider as DnsProvider
from providers.interfaces.dns import DnsZoneNotFound as DnsZoneNotFound
from providers.interfaces.dns import RecordChange as RecordChange
from providers.interfaces.dns import RecordSet as RecordSet
from providers.interfaces.dns import SkippedRecordSet as SkippedRecordSet
from providers.interfaces.dns import absolute_name as absolute_name
from providers.interfaces.dns import canonical_value as canonical_value


def portable_record_sets(
    record_sets: Iterable[RecordSet], zone_name: str, capabilities: frozenset[str]
) -> tuple[list[RecordSet], list[SkippedRecordSet]]:
    """Split exported sets into those a target can take and those it cannot.

    The apex SOA and NS belong to the target (its own primary and name
    servers); copying Route53's would point the zone back at AWS. Alias and
    routing-policy sets need the matching capability. Nothing is dropped
    silently: every skipped set comes back with its reason.
    """
    apex = absolute_name(zone_name)
    keep: list[RecordSet] = []
    skipped: list[SkippedRecordSet] = []
    for rs in record_sets:
        if rs.name == apex and rs.type == "SOA":
            skipped.append(SkippedRecordSet(rs, "the target writes its own SOA"))
        elif rs.name == apex and rs.type == "NS":
            skipped.append(SkippedRecordSet(rs, "the apex NS set names the target's servers"))
        elif rs.alias is not None and "alias" not in capabilities:
            skipped.append(SkippedRecordSet(rs, "alias records need the 'alias' capability"))
        elif rs.set_identifier is not None and "routing_policies" not in capabilities:
            skipped.append(
                SkippedRecordSet(rs, "routing-policy sets need the 'routing_policies' capability")
            )
        else:
            keep.append(rs)
    return keep, skipped


def diff_record_sets(
    desired: Iterable[RecordSet], current: Iterable[RecordSet]
) -> list[RecordChange]:
    """The changes that turn ``current`` into ``desired`` (compared in canonical form).

    Sets in ``current`` but not ``desired`` are deleted; callers that must
    keep target-owned sets (SOA, apex NS) leave them out of ``current``.
    """
    want = {rs.key: rs.canonical() for rs in desired}
    have = {rs.key: rs.canonical() for rs in current}
    changes: list[RecordChange] = []
    for key, rs in sorted(want.items()):
        if key not in have:
            changes.append(RecordChange("create", rs))
        elif have[key] != rs:
            changes.append(RecordChange("update", rs))
    for key, rs in sorted(have.items()):
        if key not in want:
            changes.append(RecordChange("delete", rs))
    return changes


# ---------------------------------------------------------------------------
# libcloud DNS drivers.
# ---------------------------------------------------------------------------

#: Drivers wired up so far: name -> the capabilities they declare.
_LIBCLOUD_DRIVERS: dict[str, frozenset[str]] = {
    "powerdns": frozenset({"create_zone", "managed_soa"}),
}


def should_retry(exc: BaseException) -> bool:
    """Whether a failed libcloud DNS call may succeed if made again (this provider's one rule)."""
    from libcloud.common.exceptions import BaseHTTPError, RateLimitReachedError

    if isinstance(exc, RateLimitReachedError | ConnectionError | TimeoutError | socket.timeout):
        return True
    if isinstance(exc, ssl.SSLError):
        return False
    if isinstance(exc, OSError):
        return True
    if isinstance(exc, BaseHTTPError):
        return exc.code in (408, 429) or exc.code >= 500
    return False


class LibcloudDnsProvider(DnsProvider):
    """A ``DnsProvider`` over a libcloud DNS driver (today: PowerDNS, API v1).

    Multi-value sets are written with one PATCH per ``apply`` through the
    driver's own authenticated connection: libcloud's ``create_record`` sends
    one value and *replaces* the set, so a three-value A set would end up
    with one value. Reading uses the driver's ``list_records``.
    """

    def __init__(
        self,
        name: str,
        *,
        driver: str = "powerdns",
        host: str,
        port: int,
        key: str,
        server: str = "localhost",
        secure: bool = False,
    ) -> None:
        super().__init__(name)
        if driver not in _LIBCLOUD_DRIVERS:
            known = ", ".join(sorted(_LIBCLOUD_DRIVERS))
            raise ConfigError(f"dns.driver {driver!r} is not supported; known drivers: {known}")
        from libcloud.dns.providers import get_driver
        from libcloud.dns.types import Provider

        self.capabilities = _LIBCLOUD_DRIVERS[driver]
        self._driver_name = driver
        self._host = host
        self._port = port
        self._secure = secure
        cls = get_driver(Provider.POWERDNS)
        driver_obj: Any = cls(key=key, host=host, port=port, secure=secure, api_version="v1")
        # The PowerDNS "server id" lives in an ex_ attribute; it stays in here.
        driver_obj.ex_server = server
        self._driver: Any = driver_obj
        self._server = server

    def describe(self) -> str:
        scheme = "https" if self._secure else "http"
        return f"{self._driver_name}:{scheme}://{self._host}:{self._port}"

    # -- calls, with errors mapped once -------------------------------------

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        from libcloud.common.types import InvalidCredsError
        from libcloud.dns.types import ZoneDoesNotExistError

        try:
            return fn(*args, **kwargs)
        except ZoneDoesNotExistError as exc:
            raise DnsZoneNotFound(
                f"{what}: zone {exc.zone_id!r} does not exist at {self.describe()}; create it first"
            ) from None
        except InvalidCredsError:
            raise FatalError(
                f"{what}: {self.describe()} rejected the API key; check dns.key"
            ) from None
        except ExitplanError:
            raise
        except Exception as exc:
            # str(exc) of a libcloud HTTP error is the server's message, never our key.
            message = f"{what} at {self.describe()} failed: {type(exc).__name__}: {exc}"
            if should_retry(exc):
                raise RetryableError(message) from exc
            raise FatalError(message) from exc

    def _zone(self, zone_name: str) -> Any:
        from libcloud.common.exceptions import BaseHTTPError

        zone_id = absolute_name(zone_name)
        try:
            return self._call(f"get zone {zone_id}", self._driver.get_zone, zone_id)
        except FatalError as exc:
            # libcloud maps only 422 to ZoneDoesNotExistError; PowerDNS 4.x answers 404.
            cause = exc.__cause__
            if isinstance(cause, BaseHTTPError) and cause.code == 404:
                raise DnsZoneNotFound(
                    f"zone {zone_id!r} does not exist at {self.describe()}; create it first"
                ) from None
            raise

    # -- DnsProvider ---------------------------------------------------------

    def list_zones(self) -> list[str]:
        zones = self._call("list zones", self._driver.list_zones)
        return sorted(absolute_name(z.domain) for z in zones)

    def create_zone(self, zone_name: str, *, nameservers: Sequence[str]) -> None:
        zone_id = absolute_name(zone_name)
        if zone_id in self.list_zones():
            return
        from libcloud.dns.types import ZoneAlreadyExistsError

        servers = [canonical_value("NS", ns) for ns in nameservers]
        if not servers:
            raise ConfigError(f"zone {zone_id}: name at least one name server for its NS set")
        # Without an SOA of our own PowerDNS writes its default-soa-content
        # ("a.misconfigured.dns.server.invalid."); name the first server as primary.
        soa = f"{servers[0]} hostmaster.{zone_id} 1 10800 3600 604800 3600"
        extra: dict[str, Any] = {
            "nameservers": servers,
            "rrsets": [
                {
                    "name": zone_id,
                    "type": "SOA",
                    "ttl": 3600,
                    "records": [{"content": soa, "disabled": False}],
                }
            ],
        }
        try:
            # PowerDNS 4 wants the absolute name; libcloud passes it through.
            self._call(f"create zone {zone_id}", self._driver.create_zone, zone_id, extra=extra)
        except FatalError as exc:
            # Lost a race with another creator, or a retried create that had landed.
            if not isinstance(exc.__cause__, ZoneAlreadyExistsError):
                raise

    def list_records(self, zone_name: str) -> list[RecordSet]:
        zone = self._zone(zone_name)
        records = self._call(f"list records of {zone.id}", self._driver.list_records, zone)
        grouped: dict[tuple[str, str], list[Any]] = {}
        for record in records:
            grouped.setdefault((absolute_name(record.name), record.type), []).append(record)
        return [
            RecordSet(
                name=name,
                type=rtype,
                ttl=int(recs[0].ttl) if recs[0].ttl is not None else None,
                values=tuple(sorted(r.data for r in recs)),
            )
            for (name, rtype), recs in sorted(grouped.items())
        ]

    def apply(self, zone_name: str, changes: Sequence[RecordChange]) -> None:
        if not changes:
            return
        zone = self._zone(zone_name)
        rrsets: list[dict[str, Any]] = []
        for change in changes:
            rs = change.record_set
            if rs.alias is not None and "alias" not in self.capabilities:
                raise FatalError(
                    f"{rs.name} {rs.type} is a Route53 alias; {self.describe()} cannot hold "
                    "aliases: leave it out (portable_record_sets) or replace it with records"
                )
            if rs.set_identifier is not None and "routing_policies" not in self.capabilities:
                raise FatalError(
                    f"{rs.name} {rs.type} ({rs.set_identifier}) uses a routing policy; "
                    f"{self.describe()} has one set per name and type"
                )
            name = absolute_name(rs.name)
            if change.action == "delete":
                rrsets.append({"name": name, "type": rs.type, "changetype": "DELETE"})
                continue
            if rs.ttl is None:
                raise FatalError(f"{name} {rs.type} has no TTL; PowerDNS needs one per set")
            rrsets.append(
                {
                    "name": name,
                    "type": rs.type,
                    "changetype": "REPLACE",
                    "ttl": rs.ttl,
                    "records": [
                        {"content": canonical_value(rs.type, v), "disabled": False}
                        for v in rs.values
                    ],
                }
            )
        action = f"{self._driver.api_root}/servers/{self._server}/zones/{zone.id}"
        self._call(
            f"apply {len(rrsets)} change(s) to {zone.id}",
            self._driver.connection.request,
            action=action,
            data=json.dumps({"rrsets": rrsets}),
            method="PATCH",
        )


@dataclass
class ZoneApplyResult:
    """What ``apply_zone`` did, for the report."""

    applied: list[RecordChange] = field(default_factory=list)
    skipped: list[SkippedRecordSet] = field(default_factory=list)


def apply_zone(
    provider: DnsProvider, zone_name: str, record_sets: Sequence[RecordSet]
) -> ZoneApplyResult:
    """Make the provider's copy of the zone hold ``record_sets`` (the portable ones).

    The zone must exist (``DnsZoneNotFound`` otherwise). Target-owned sets
    (SOA, apex NS) are never touched; sets the target cannot take are
    returned as skipped. Applying twice changes nothing the second time:
    retry-safe.
    """
    apex = absolute_name(zone_name)
    portable, skipped = portable_record_sets(record_sets, apex, provider.capabilities)
    current, _ = portable_record_sets(provider.list_records(apex), apex, provider.capabilities)
    changes = diff_record_sets(portable, current)
    provider.apply(apex, changes)
    return ZoneApplyResult(applied=changes, skipped=skipped)
