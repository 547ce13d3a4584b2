"""Does the new zone answer exactly like the old one? Asked over DNS, record by record.

Both zones are queried on their authoritative servers (UDP and TCP), never
only through an API. Where the old zone's own servers cannot be reached
(tests, the sandbox: moto's Route53 is an API, not a DNS server), the old
side is a reference server that holds the source zone: ``LocalDnsServer``
loaded with the zone as read from Route53 or from its export, or any
authoritative server the caller names. Which one was used is in the report
(``old_endpoint``).
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from orchestrator.clock import Clock
from orchestrator.cutover.query import (
    AuthoritativeEndpoint,
    DnsAnswer,
    Transport,
    query_authoritative,
    same_values,
)
from providers.interfaces.dns import RecordSet, absolute_name


@dataclass(frozen=True)
class NotCompared:
    """A set of the old zone that is not compared, and why (each listed in the report)."""

    name: str
    type: str
    reason: str


@dataclass(frozen=True)
class RecordComparison:
    """One (name, type) asked of both servers over one transport.

    ``identical`` when both answered with the same response code, the same
    data (compared in canonical form) and, where ``ttl_compared``, the same
    TTL; ``difference`` says what differed otherwise.
    """

    name: str
    type: str
    transport: Transport
    old: DnsAnswer
    new: DnsAnswer
    identical: bool
    difference: str
    ttl_compared: bool


@dataclass(frozen=True)
class EquivalenceReport:
    """The new zone against the old one, over DNS. JSON-serialisable (see ``orchestrator.run.serde``)."""

    zone: str
    old_endpoint: str
    new_endpoint: str
    checked_at: datetime
    transports: tuple[Transport, ...]
    comparisons: tuple[RecordComparison, ...]
    not_compared: tuple[NotCompared, ...]

    @property
    def identical(self) -> bool:
        """Every compared answer matched (and at least one was compared)."""
        return bool(self.comparisons) and all(c.identical for c in self.comparisons)

    @property
    def differences(self) -> list[RecordComparison]:
        return [c for c in self.comparisons if not c.identical]

    def summary(self) -> str:
        """One line for a log or a report."""
        names = len({(c.name, c.type) for c in self.comparisons})
        if self.identical:
            return (
                f"zone {self.zone}: {names} name/type pair(s) answer identically on "
                f"{self.old_endpoint} and {self.new_endpoint} over "
                f"{'+'.join(t.upper() for t in self.transports)}"
                + (f"; {len(self.not_compared)} not compared" if self.not_compared else "")
            )
        first = self.differences[0] if self.differences else None
        detail = f"; first: {first.name} {first.type} ({first.difference})" if first else ""
        return (
            f"zone {self.zone}: {len(self.differences)} answer(s) differ between "
            f"{self.old_endpoint} and {self.new_endpoint}{detail}"
        )


def _compare(old: DnsAnswer, new: DnsAnswer, *, compare_ttl: bool) -> tuple[bool, str]:
    for side, answer in (("old", old), ("new", new)):
        if answer.rcode in ("TIMEOUT", "ERROR"):
            return False, f"{side} server: {answer.rcode} {answer.error}".strip()
    if old.truncated and new.truncated:
        return True, ""  # both send the client to TCP, where the data is compared
    for side, answer in (("old", old), ("new", new)):
        if answer.truncated:
            return False, f"only the {side} server truncated the answer over UDP"
    if old.rcode != new.rcode:
        return False, f"response code: old {old.rcode}, new {new.rcode}"
    if not same_values(old.type, old.values, new.values):
        return False, (
            f"values: old {', '.join(old.values) or '(none)'}; "
            f"new {', '.join(new.values) or '(none)'}"
        )
    if old.section != new.section:
        return False, f"section: old {old.section or '-'}, new {new.section or '-'}"
    if compare_ttl and old.ttl != new.ttl:
        return False, f"TTL: old {old.ttl}, new {new.ttl}"
    return True, ""


def verify_zone_equivalence(
    zone: str,
    record_sets: Sequence[RecordSet],
    *,
    old: AuthoritativeEndpoint,
    new: AuthoritativeEndpoint,
    clock: Clock,
    transports: Sequence[Transport] = ("udp", "tcp"),
    compare_ttl: bool = True,
    timeout: float = 2.0,
    also_ask: Sequence[tuple[str, str]] = (),
) -> EquivalenceReport:
    """Ask both servers for every set of the old zone and compare the answers.

    ``record_sets`` are the old zone's sets (its snapshot). The apex SOA and
    NS are not compared (each zone names its own servers and serial); nor
    are alias and routing-policy sets the new zone cannot hold (listed in
    ``not_compared`` with the reason). A name that exists in neither zone is
    asked too, so negative answers (NXDOMAIN) are compared as well, and so
    is every (name, type) in ``also_ask`` (e.g. what the new zone holds
    beyond the old one, read through its API: it must be absent). Nothing
    is raised for a difference or an unreachable server: the report says so
    (``identical`` is False). Retry-safe: yes (only reads).
    """
    apex = absolute_name(zone)
    not_compared: list[NotCompared] = []
    pairs: list[tuple[str, str]] = []
    for rs in sorted(record_sets, key=lambda r: r.key):
        if rs.name == apex and rs.type in ("SOA", "NS"):
            not_compared.append(NotCompared(rs.name, rs.type, "each zone names its own servers"))
        elif rs.set_identifier is not None:
            not_compared.append(
                NotCompared(rs.name, rs.type, f"routing-policy set {rs.set_identifier!r}")
            )
        elif rs.alias is not None:
            not_compared.append(
                NotCompared(rs.name, rs.type, f"Route53 alias to {rs.alias.dns_name}")
            )
        elif (rs.name, rs.type) not in pairs:
            pairs.append((rs.name, rs.type))
    for name, rtype in also_ask:
        if (absolute_name(name), rtype) not in pairs:
            pairs.append((absolute_name(name), rtype))
    absent = f"exitplan-absent-{secrets.token_hex(4)}.{apex}"
    pairs.append((absent, "A"))
    comparisons: list[RecordComparison] = []
    for name, rtype in pairs:
        for transport in transports:
            old_answer = query_authoritative(old, name, rtype, transport=transport, timeout=timeout)
            new_answer = query_authoritative(new, name, rtype, transport=transport, timeout=timeout)
            identical, difference = _compare(old_answer, new_answer, compare_ttl=compare_ttl)
            comparisons.append(
                RecordComparison(
                    name,
                    rtype,
                    transport,
                    old_answer,
                    new_answer,
                    identical,
                    difference,
                    compare_ttl,
                )
            )
    return EquivalenceReport(
        zone=apex,
        old_endpoint=old.describe(),
        new_endpoint=new.describe(),
        checked_at=clock.now(),
        transports=tuple(transports),
        comparisons=tuple(comparisons),
        not_compared=tuple(not_compared),
    )
