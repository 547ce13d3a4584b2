"""The flip: the service's names point at the new host, in the new zone and the old one.

Only after the replay's health check is green (the verdict is an input), no
earlier than the lowered TTL allows (``not_before``, from the schedule), and
as an octoDNS-style plan that is a dry run unless applied. The new zone is
changed first, then the old zone while it accepts writes, so a resolver on
either delegation gets the same answer until the deadline. Each zone's
change records its undo before it is made, is read back through the API and
is asked over DNS.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from orchestrator.clock import Clock
from orchestrator.cutover.plan import (
    DEFAULT_OWNER,
    ChangePlan,
    PlanOutcome,
    RecordUndo,
    ThresholdExceeded,
    Thresholds,
    apply_plan,
    build_plan,
)
from orchestrator.cutover.query import AuthoritativeEndpoint
from orchestrator.cutover.schedule import DEFAULT_LOWERED_TTL_S
from orchestrator.cutover.zone import SERVICE_TYPES
from orchestrator.errors import ConfigError, ExitplanError, FatalError, RetryableError
from providers.interfaces.dns import DnsProvider, RecordSet, absolute_name, canonical_value


@dataclass(frozen=True)
class HealthVerdict:
    """The replay's health check, as the flip is given it: green or not, when, and why."""

    green: bool
    checked_at: datetime
    detail: str = ""


@dataclass(frozen=True)
class ZoneTarget:
    """One copy of the zone to flip: the provider that changes it, the server that answers it.

    ``role`` is ``new`` (the destination) or ``old`` (the zone being left,
    changed while it accepts writes). ``endpoint``: where to ask over DNS
    after the change (None: not asked, e.g. Route53 in tests, which has no
    DNS server).
    """

    role: Literal["new", "old"]
    provider: DnsProvider
    endpoint: AuthoritativeEndpoint | None = None


class HealthNotGreen(FatalError):
    """The flip was asked for while the health check is not green; nothing was changed."""


class FlipTooEarly(RetryableError):
    """The lowered TTL has not yet reached every cache; call again at ``retry_at``."""

    def __init__(self, message: str, retry_at: datetime) -> None:
        super().__init__(message)
        self.retry_at = retry_at


@dataclass(frozen=True)
class FlipOutcome:
    """What the flip planned and did, per zone. JSON-serialisable.

    ``old_zone_error``: why the old zone could not be changed (empty if it
    was, or was not asked to be); the zones then differ, named in ``warnings``.
    """

    zone: str
    service_names: tuple[str, ...]
    addresses: tuple[str, ...]
    ttl: int
    health: HealthVerdict
    dry_run: bool
    plans: tuple[ChangePlan, ...]
    outcomes: tuple[PlanOutcome, ...]
    old_zone_error: str
    warnings: tuple[str, ...]

    @property
    def ok(self) -> bool:
        """Applied, and every zone changed reads back and answers as planned."""
        return not self.dry_run and bool(self.outcomes) and all(o.ok for o in self.outcomes)


def service_record_sets(
    zone: str, service_names: Sequence[str], addresses: Sequence[str], ttl: int
) -> list[RecordSet]:
    """The sets the service names get: A/AAAA for IP addresses, or a CNAME for one host name.

    Raises ``ConfigError`` when a name is outside the zone, no address is
    given, a host name is mixed with addresses, or a CNAME would sit at the
    apex (which also holds SOA and NS). Pure.
    """
    apex = absolute_name(zone)
    if not addresses:
        raise ConfigError("the flip needs the new host's address (the placement's)")
    if ttl <= 0:
        raise ConfigError(f"the flip's TTL must be a positive number of seconds, not {ttl}")
    v4: list[str] = []
    v6: list[str] = []
    hosts: list[str] = []
    for address in addresses:
        try:
            ip = ipaddress.ip_address(address.strip())
        except ValueError:
            hosts.append(canonical_value("CNAME", address.strip()))
            continue
        (v4 if ip.version == 4 else v6).append(str(ip))
    if hosts and (v4 or v6 or len(hosts) > 1):
        raise ConfigError(
            "the flip target is either IP addresses or one host name (a CNAME), not "
            f"{', '.join(addresses)}"
        )
    sets: list[RecordSet] = []
    for raw in service_names:
        name = absolute_name(raw)
        if name != apex and not name.endswith("." + apex):
            raise ConfigError(f"service name {name} is not in zone {apex}")
        if hosts:
            if name == apex:
                raise ConfigError(
                    f"{apex} is the zone apex and cannot hold a CNAME; give the new host's "
                    "IP addresses instead of the host name"
                )
            sets.append(RecordSet(name, "CNAME", ttl, (hosts[0],)))
            continue
        if v4:
            sets.append(RecordSet(name, "A", ttl, tuple(sorted(set(v4)))))
        if v6:
            sets.append(RecordSet(name, "AAAA", ttl, tuple(sorted(set(v6)))))
    return sets


def plan_flip(
    target: ZoneTarget,
    zone: str,
    *,
    service_names: Sequence[str],
    addresses: Sequence[str],
    ttl: int = DEFAULT_LOWERED_TTL_S,
    owner: str = DEFAULT_OWNER,
    thresholds: Thresholds | None = None,
) -> ChangePlan:
    """The flip's plan for one zone copy, against what it holds now.

    The service names are adopted explicitly (their A/AAAA/CNAME sets are
    changed even where exitplan did not create them, and marked as owned);
    a service type the new address does not use is deleted (an AAAA still
    naming the old host would send IPv6 clients there). Nothing else in the
    zone is touched. Raises ``ConfigError`` (see ``service_record_sets``),
    ``DnsZoneNotFound``. Retry-safe: yes (reads only).
    """
    apex = absolute_name(zone)
    desired = service_record_sets(apex, service_names, addresses, ttl)
    names = {absolute_name(n) for n in service_names}
    current = target.provider.list_records(apex)

    def in_scope(rs: RecordSet) -> bool:
        return rs.name in names and rs.type in SERVICE_TYPES

    adopt = {rs.key for rs in current if in_scope(rs)} | {rs.key for rs in desired}
    return build_plan(
        zone=apex,
        target=target.provider.describe(),
        purpose=f"flip ({target.role} zone)",
        owner=owner,
        current=current,
        desired=desired,
        in_scope=in_scope,
        adopt=adopt,
        thresholds=thresholds,
    )


def flip_service_records(
    zone: str,
    targets: Sequence[ZoneTarget],
    *,
    service_names: Sequence[str],
    addresses: Sequence[str],
    health: HealthVerdict,
    clock: Clock,
    apply: bool,
    force: bool,
    record_undo: RecordUndo,
    ttl: int = DEFAULT_LOWERED_TTL_S,
    not_before: datetime | None = None,
    owner: str = DEFAULT_OWNER,
    thresholds: Thresholds | None = None,
) -> FlipOutcome:
    """Point ``service_names`` at ``addresses`` in every zone copy in ``targets``.

    Plans every copy first. A dry run (``apply`` False) returns the plans
    and changes nothing, whatever the health. Applied, it refuses, with
    nothing changed: ``HealthNotGreen`` unless ``health.green``;
    ``FlipTooEarly`` (retryable, with ``retry_at``) before ``not_before``;
    ``ThresholdExceeded`` if any copy's plan needs force and ``force`` is
    False. Then it applies the ``new`` copies, then the ``old`` ones (each
    through ``apply_plan``: undo recorded first, read back, asked over DNS).
    An old copy that no longer accepts writes is reported in
    ``old_zone_error``, not raised: the new zone is what counts from then on.
    Retry-safe: yes.
    """
    apex = absolute_name(zone)
    ordered = sorted(targets, key=lambda t: 0 if t.role == "new" else 1)
    if not any(t.role == "new" for t in ordered):
        raise ConfigError("the flip needs the new zone among its targets")
    plans: list[tuple[ZoneTarget, ChangePlan]] = []
    warnings: list[str] = []
    old_error = ""
    for target in ordered:
        try:
            plans.append(
                (
                    target,
                    plan_flip(
                        target,
                        apex,
                        service_names=service_names,
                        addresses=addresses,
                        ttl=ttl,
                        owner=owner,
                        thresholds=thresholds,
                    ),
                )
            )
        except ConfigError:
            raise
        except ExitplanError as exc:
            if target.role == "new":
                raise
            old_error = f"{target.provider.describe()}: {exc}"
    if old_error:
        warnings.append(
            f"the old zone could not be read ({old_error}); it is left as it is and the zones "
            "differ: resolvers still on the old delegation reach the old host"
        )

    def outcome(dry_run: bool, outcomes: Sequence[PlanOutcome]) -> FlipOutcome:
        return FlipOutcome(
            zone=apex,
            service_names=tuple(sorted(absolute_name(n) for n in service_names)),
            addresses=tuple(addresses),
            ttl=ttl,
            health=health,
            dry_run=dry_run,
            plans=tuple(p for _, p in plans),
            outcomes=tuple(outcomes),
            old_zone_error=old_error,
            warnings=tuple(warnings),
        )

    if not apply:
        if not health.green:
            warnings.append(f"the health check is not green ({health.detail}); the flip waits")
        return outcome(True, ())
    if not health.green:
        raise HealthNotGreen(
            f"the health check of the new host is not green ({health.detail or 'no detail'}, "
            f"checked {health.checked_at.isoformat(timespec='seconds')}); the service records "
            "were not changed"
        )
    now = clock.now()
    if not_before is not None and now < not_before:
        raise FlipTooEarly(
            f"the flip of {apex} may start at {not_before.isoformat(timespec='seconds')}, when "
            "the lowered TTL has reached every cache; nothing was changed",
            retry_at=not_before,
        )
    needing_force = [p for _, p in plans if p.needs_force]
    if needing_force and not force:
        raise ThresholdExceeded(
            "; ".join(
                f"{p.purpose} at {p.target}: {'; '.join(p.force_reasons)}" for p in needing_force
            )
            + ". Nothing was changed: review the plan and run again with --force"
        )
    outcomes: list[PlanOutcome] = []
    for target, plan in plans:
        try:
            outcomes.append(
                apply_plan(
                    plan,
                    target.provider,
                    apply=True,
                    force=force,
                    record_undo=record_undo,
                    clock=clock,
                    endpoint=target.endpoint,
                )
            )
        except ConfigError:
            raise
        except ExitplanError as exc:
            if target.role == "new":
                raise
            old_error = f"{target.provider.describe()}: {exc}"
            warnings.append(
                f"the old zone did not accept the flip ({old_error}); the zones differ: "
                "resolvers still on the old delegation reach the old host"
            )
    return outcome(False, outcomes)
