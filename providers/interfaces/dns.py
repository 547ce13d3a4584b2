"""DnsProvider and the record-set model: where a zone goes at cutover, and its contract."""

from __future__ import annotations

import ipaddress
import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from orchestrator.errors import FatalError

# ---------------------------------------------------------------------------
# DNS: where a zone goes at cutover. The model is the *record set* (name +
# type, every value, one TTL): the unit both Route53 and the PowerDNS API
# change atomically. Shared by the Route53 exporter and every DNS provider.
# ---------------------------------------------------------------------------


#: Types whose value is (or ends with) a host name, which must be absolute.
_HOSTNAME_TYPES = frozenset({"CNAME", "NS", "PTR", "MX", "SRV"})

_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")


def absolute_name(name: str) -> str:
    """``name`` lower-cased, with Route53's ``\\ooo`` octal escapes decoded and a trailing dot.

    Route53 lists ``*.example.com`` as ``\\052.example.com.``; every other
    system (BIND, PowerDNS) wants the ``*``.
    """
    decoded = _OCTAL_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), name.strip())
    decoded = decoded.lower()
    return decoded if decoded.endswith(".") else decoded + "."


def canonical_value(rtype: str, value: str) -> str:
    """A record value in presentation form with its host name made absolute.

    Route53 treats every host name in a value as absolute whether or not it
    ends with a dot; BIND and PowerDNS read a dotless name as relative to the
    zone, so the dot is added. IPv6 addresses are compressed, as PowerDNS
    stores them. Everything else (TXT quoting included) is returned exactly
    as given.
    """
    value = value.strip()
    if rtype == "AAAA":
        # PowerDNS stores IPv6 compressed and lower-case (2001:0DB8::0001 -> 2001:db8::1).
        try:
            return str(ipaddress.IPv6Address(value))
        except ValueError:
            return value
    if rtype not in _HOSTNAME_TYPES:
        return value
    head, _, host = value.rpartition(" ")
    if not host or host.endswith("."):
        return value
    return f"{head} {host}." if head else f"{host}."


@dataclass(frozen=True)
class AliasTarget:
    """A Route53 alias: the name answers with the target's records. No BIND equivalent."""

    hosted_zone_id: str
    dns_name: str
    evaluate_target_health: bool


@dataclass(frozen=True)
class RecordSet:
    """Every value of one (name, type[, set identifier]) with one TTL.

    ``name`` is absolute and lower-case (see ``absolute_name``). ``values``
    are in presentation form, sorted, exactly as the source spelled them
    (TXT quotes and escapes kept). ``ttl`` is None for an alias.
    ``set_identifier`` and ``routing`` (canonical JSON of Route53's routing
    policy fields: Weight, Region, Failover, GeoLocation, ...) are set only
    for policy records, which plain DNS servers cannot express.
    """

    name: str
    type: str
    ttl: int | None
    values: tuple[str, ...] = ()
    alias: AliasTarget | None = None
    set_identifier: str | None = None
    routing: str | None = None

    @property
    def key(self) -> tuple[str, str, str]:
        """What identifies the set in a zone: (name, type, set identifier or "")."""
        return (self.name, self.type, self.set_identifier or "")

    def canonical(self) -> RecordSet:
        """The same set with host names in values made absolute, for comparing across systems."""
        return RecordSet(
            name=self.name,
            type=self.type,
            ttl=self.ttl,
            values=tuple(sorted(canonical_value(self.type, v) for v in self.values)),
            alias=self.alias,
            set_identifier=self.set_identifier,
            routing=self.routing,
        )


@dataclass(frozen=True)
class RecordChange:
    """One change to apply. ``create`` and ``update`` both replace the whole set (upsert)."""

    action: Literal["create", "update", "delete"]
    record_set: RecordSet


@dataclass(frozen=True)
class SkippedRecordSet:
    """A record set a target cannot take, and why (for the report)."""

    record_set: RecordSet
    reason: str


class DnsZoneNotFound(FatalError):
    """The named zone does not exist at the DNS provider; create it first."""


class DnsProvider(ABC):
    """A DNS service that can host an evacuated zone.

    Zone names are absolute (``example.com.``); a name without the dot is
    accepted and made absolute. Any method may raise ``RetryableError`` (the
    service was unreachable or answered 5xx: safe to call again) or
    ``FatalError`` (bad credentials, a rejected change: retrying will not help).
    """

    #: Declared optional abilities: ``"alias"`` (Route53-style alias sets),
    #: ``"routing_policies"`` (several sets per name/type with a set identifier),
    #: ``"create_zone"``, ``"managed_soa"`` (the provider writes the SOA itself).
    capabilities: frozenset[str] = frozenset()

    def __init__(self, name: str) -> None:
        self.name = name

    @abstractmethod
    def list_zones(self) -> list[str]:
        """Absolute names of every zone the provider hosts. Retry-safe: yes."""

    @abstractmethod
    def create_zone(self, zone_name: str, *, nameservers: Sequence[str]) -> None:
        """Create the zone with its apex NS set; an existing zone is left as is.

        Retry-safe: yes. Raises ``FatalError`` if the provider lacks the
        ``create_zone`` capability.
        """

    @abstractmethod
    def list_records(self, zone_name: str) -> list[RecordSet]:
        """Every record set in the zone, values sorted, names absolute.

        Raises ``DnsZoneNotFound``. Retry-safe: yes.
        """

    @abstractmethod
    def apply(self, zone_name: str, changes: Sequence[RecordChange]) -> None:
        """Apply ``changes`` to the zone in one request where the provider allows.

        ``create``/``update`` replace the set named by (name, type) whole,
        ``delete`` removes it (deleting a missing set is not an error), so
        applying the same changes twice leaves the same zone: retry-safe.
        Raises ``DnsZoneNotFound``; ``FatalError`` if a change needs a
        capability the provider lacks (see ``portable_record_sets``).
        """

    def describe(self) -> str:
        """A one-line, secret-free description, e.g. ``powerdns:127.0.0.1:8081``."""
        return self.name
