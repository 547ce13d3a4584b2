"""The new zone, made early in the run and proven to answer like the old one; TTL lowering.

``prepare_new_zone`` creates the zone on the destination ``DnsProvider``,
writes the old zone's portable sets into it (owned by exitplan, with undo
recorded first) and, given both servers, asks them over DNS whether they
answer identically. ``plan_ttl_lowering`` is the schedule's first step: the
same zone with every TTL lowered, for the old zone (while it accepts writes)
and the new one alike.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from orchestrator.clock import Clock
from orchestrator.cutover.equivalence import EquivalenceReport, verify_zone_equivalence
from orchestrator.cutover.plan import (
    DEFAULT_OWNER,
    ChangePlan,
    PlanOutcome,
    RecordUndo,
    Thresholds,
    apply_plan,
    build_plan,
    is_marker,
)
from orchestrator.cutover.query import AuthoritativeEndpoint
from orchestrator.cutover.zone import ZoneSnapshot, flatten_in_zone_aliases
from orchestrator.errors import ConfigError
from providers.dns import apply_zone, portable_record_sets
from providers.interfaces.dns import DnsProvider, RecordSet, absolute_name


@dataclass(frozen=True)
class SkippedSet:
    """A set of the old zone the new provider cannot hold, and why."""

    name: str
    type: str
    reason: str
    set_identifier: str = ""


@dataclass(frozen=True)
class ZonePrepared:
    """The new zone: created, filled, and compared with the old one. JSON-serialisable.

    ``zone_created``: this call created the zone (False: it existed).
    ``flattened_aliases``: in-zone aliases written as their target's records.
    ``skipped``: sets not copied (apex SOA/NS are the new provider's own;
    aliases to AWS resources and routing-policy sets plain DNS cannot hold).
    ``equivalence``: the DNS comparison, when both servers were given and
    the plan was applied.
    """

    zone: str
    source: str
    target: str
    nameservers: tuple[str, ...]
    zone_created: bool
    flattened_aliases: tuple[str, ...]
    skipped: tuple[SkippedSet, ...]
    plan: ChangePlan
    outcome: PlanOutcome
    equivalence: EquivalenceReport | None

    @property
    def ok(self) -> bool:
        """Applied as planned, and identical over DNS where compared."""
        return self.outcome.ok and (self.equivalence is None or self.equivalence.identical)


def _not_apex_soa_ns(zone: str) -> Callable[[RecordSet], bool]:
    def in_scope(rs: RecordSet) -> bool:
        return not (rs.name == zone and rs.type in ("SOA", "NS"))

    return in_scope


def prepare_new_zone(
    source: ZoneSnapshot,
    provider: DnsProvider,
    *,
    nameservers: Sequence[str],
    apply: bool,
    force: bool,
    record_undo: RecordUndo,
    clock: Clock,
    owner: str = DEFAULT_OWNER,
    thresholds: Thresholds | None = None,
    new_endpoint: AuthoritativeEndpoint | None = None,
    old_endpoint: AuthoritativeEndpoint | None = None,
) -> ZonePrepared:
    """Create ``source``'s zone at ``provider`` and make it hold the same sets.

    Dry run unless ``apply``: the zone is not created and the plan is made
    against what exists (an empty zone if none). Applied: the zone is
    created with ``nameservers`` as its apex NS set (if it does not exist;
    there is no zone deletion in ``DnsProvider``, so the zone itself has no
    undo, only the sets written into it), then the plan is applied through
    ``apply_plan`` (undo recorded first; sets in the zone that exitplan did
    not create are never changed or deleted: see ``plan.kept``); if both
    endpoints are given, the old and new servers are compared over UDP and
    TCP (``old_endpoint``: the old zone's own server, or a reference server
    holding the source zone, see ``load_reference_zone``).
    Raises ``ThresholdExceeded``, ``PlanOutdated``, provider errors.
    Retry-safe: yes.
    """
    zone = absolute_name(source.name)
    servers = tuple(absolute_name(ns) for ns in nameservers)
    if not servers:
        raise ConfigError(f"zone {zone}: name the new zone's name servers (its apex NS set)")
    snapshot, flattened = flatten_in_zone_aliases(source)
    portable, skipped = portable_record_sets(snapshot.record_sets, zone, provider.capabilities)
    created = False
    exists = zone in provider.list_zones()
    if not exists and apply:
        provider.create_zone(zone, nameservers=servers)
        created = True
    current = provider.list_records(zone) if exists or created else []
    plan = build_plan(
        zone=zone,
        target=provider.describe(),
        purpose="prepare",
        owner=owner,
        current=current,
        desired=portable,
        in_scope=_not_apex_soa_ns(zone),
        thresholds=thresholds,
    )
    outcome = apply_plan(
        plan,
        provider,
        apply=apply,
        force=force,
        record_undo=record_undo,
        clock=clock,
        endpoint=new_endpoint,
    )
    equivalence = None
    if apply and new_endpoint is not None and old_endpoint is not None:
        source_keys = {(rs.name, rs.type) for rs in snapshot.record_sets}
        extra = [
            (rs.name, rs.type)
            for rs in provider.list_records(zone)
            if (rs.name, rs.type) not in source_keys
            and not is_marker(rs)
            and not (rs.name == zone and rs.type in ("SOA", "NS"))
        ]
        equivalence = verify_zone_equivalence(
            zone,
            snapshot.record_sets,
            old=old_endpoint,
            new=new_endpoint,
            clock=clock,
            also_ask=extra,
        )
    return ZonePrepared(
        zone=zone,
        source=source.source,
        target=provider.describe(),
        nameservers=servers,
        zone_created=created,
        flattened_aliases=tuple(flattened),
        skipped=tuple(
            SkippedSet(
                s.record_set.name, s.record_set.type, s.reason, s.record_set.set_identifier or ""
            )
            for s in skipped
        ),
        plan=plan,
        outcome=outcome,
        equivalence=equivalence,
    )


def load_reference_zone(
    source: ZoneSnapshot, provider: DnsProvider, *, nameservers: Sequence[str] = ()
) -> list[SkippedSet]:
    """Make ``provider`` hold ``source`` as it is, to serve as the old zone's stand-in over DNS.

    For where the old zone's own servers cannot be asked (moto's Route53 is
    an API only): load the zone read from Route53 (or its export) into a
    ``LocalDnsProvider`` (or PowerDNS) and compare against its server. The
    apex NS set is the source's unless ``nameservers`` is given. Returns the
    sets it could not hold. Retry-safe: yes.
    """
    zone = absolute_name(source.name)
    snapshot, _ = flatten_in_zone_aliases(source)
    apex_ns = snapshot.apex_ns
    servers = tuple(nameservers) or (apex_ns.values if apex_ns is not None else ())
    if not servers:
        raise ConfigError(f"zone {zone} has no apex NS set; name the reference's name servers")
    provider.create_zone(zone, nameservers=servers)
    result = apply_zone(provider, zone, list(snapshot.record_sets))
    return [
        SkippedSet(
            s.record_set.name, s.record_set.type, s.reason, s.record_set.set_identifier or ""
        )
        for s in result.skipped
    ]


def plan_ttl_lowering(
    zone: str,
    provider: DnsProvider,
    *,
    lowered_ttl: int,
    lowered_ns_ttl: int | None = None,
    owner: str = DEFAULT_OWNER,
    thresholds: Thresholds | None = None,
) -> ChangePlan:
    """A plan that lowers every TTL above ``lowered_ttl`` in the zone as ``provider`` holds it.

    Values are kept (TTL-only updates need no ownership). The apex SOA,
    aliases (no TTL of their own), ownership markers and delegations below
    the apex are left alone; the apex NS TTL is lowered to ``lowered_ns_ttl``
    only when given (the old zone: an NS change, so the plan needs force).
    Nothing is deleted. Raises ``DnsZoneNotFound``. Retry-safe: yes.
    """
    apex = absolute_name(zone)
    if lowered_ttl <= 0 or (lowered_ns_ttl is not None and lowered_ns_ttl <= 0):
        raise ConfigError("lowered TTLs must be positive numbers of seconds")
    current = provider.list_records(apex)
    desired: list[RecordSet] = []
    for rs in current:
        if is_marker(rs) or rs.alias is not None or rs.ttl is None:
            continue
        if rs.type == "SOA" and rs.name == apex:
            continue
        if rs.type == "NS":
            if rs.name != apex or lowered_ns_ttl is None or rs.ttl <= lowered_ns_ttl:
                continue
            desired.append(RecordSet(rs.name, rs.type, lowered_ns_ttl, rs.values))
        elif rs.ttl > lowered_ttl:
            desired.append(
                RecordSet(
                    rs.name,
                    rs.type,
                    lowered_ttl,
                    rs.values,
                    set_identifier=rs.set_identifier,
                    routing=rs.routing,
                )
            )
    return build_plan(
        zone=apex,
        target=provider.describe(),
        purpose="lower-ttls",
        owner=owner,
        current=current,
        desired=desired,
        in_scope=lambda rs: False,
        thresholds=thresholds,
    )
