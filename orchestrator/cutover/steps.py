"""The DNS cutover as steps of a run: ``dns-prepare`` early, ``cutover`` once the service is up.

``dns-prepare`` runs in its own lane at the start (not after the export):
every hosted zone of the source is read live from Route53, created on the
destination DNS provider and compared with it over DNS; the record TTLs are
lowered there at once; the schedule is computed from the deadline, the
margin and the zone's TTLs, and the delegation change (the long pole:
48 h NS TTLs) is asked for as the first-hour step, with the exact NS set.

``cutover`` runs after ``verify-service`` says the new host serves the
source's data: the service names are pointed at the new host in the new
zone (and in the old one while it accepts writes, so both stay identical),
read back and asked over DNS. Changes are dry runs unless the run applies
them (``migrate --yes``, a drill, the sandbox); every applied change records
its undo (the previous record sets) before it is made.

A drill never touches a real zone: it works on a zone of its own,
``exitplan-drill-<run>.<zone>``, at the destination only.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

from orchestrator.config import Config, DnsConfig
from orchestrator.cutover.delegation import delegation_request
from orchestrator.cutover.flip import (
    FlipOutcome,
    FlipTooEarly,
    HealthVerdict,
    ZoneTarget,
    flip_service_records,
)
from orchestrator.cutover.plan import DNS_CHANGE_UNDO_KIND, apply_plan, undo_dns_change
from orchestrator.cutover.prepare import (
    ZonePrepared,
    load_reference_zone,
    plan_ttl_lowering,
    prepare_new_zone,
)
from orchestrator.cutover.query import AuthoritativeEndpoint, query_authoritative
from orchestrator.cutover.schedule import CutoverSchedule, ScheduleInputs, compute_schedule
from orchestrator.cutover.zone import (
    ZoneSnapshot,
    service_names_pointing_at,
    zone_from_provider,
    zone_ttls,
)
from orchestrator.errors import ConfigError, ExitplanError
from orchestrator.events import RunWarning
from orchestrator.run.steps import RunContext, Step, StepFailed, StepSkipped
from providers.dns_local import LocalDnsProvider
from providers.dns_route53 import Route53DnsProvider
from providers.interfaces.dns import DnsProvider, RecordSet, absolute_name

#: TTL the records are lowered to at once, and the flipped records get.
LOWERED_TTL_S = 60
#: The sandbox's name servers for its new zone (served by the local DNS server).
SANDBOX_NAMESERVERS = ("ns1.exitplan-sandbox.example.", "ns2.exitplan-sandbox.example.")


def dns_config(config: Config) -> DnsConfig | None:
    """The config's ``dns:``; on the sandbox, a local DNS target in the workspace.

    The sandbox's target is zone files answered by an authoritative server in
    process, so it runs with nothing installed; its names www, api and the
    apex are the service's (they point at the old web servers).
    """
    if config.dns is not None:
        return config.dns
    if config.source.aws.sandbox:
        from types import MappingProxyType

        return DnsConfig(
            "local",
            MappingProxyType({"path": Path(config.workspace) / "dns" / "zones.json"}),
            nameservers=SANDBOX_NAMESERVERS,
            service_names=("@", "www", "api"),
        )
    return None


@dataclass(frozen=True)
class DnsTarget:
    """Where the zones go: the provider, and the server that answers for it (if known)."""

    provider: DnsProvider
    endpoint: AuthoritativeEndpoint | None


@contextlib.contextmanager
def open_dns_target(dns: DnsConfig) -> Iterator[DnsTarget]:
    """The configured DNS provider; a ``local`` one is served in process for the run."""
    from providers.registry import get_provider_spec, load_provider_class

    options = {k: (v.reveal() if hasattr(v, "reveal") else v) for k, v in dns.options.items()}
    provider: DnsProvider = load_provider_class(get_provider_spec("dns", dns.driver))(
        "dns", **options
    )
    if not isinstance(provider, LocalDnsProvider):
        yield DnsTarget(provider, None)
        return
    server = provider.serve()
    try:
        yield DnsTarget(provider, AuthoritativeEndpoint(server.host, server.port, "new zone"))
    finally:
        server.stop()


def drill_zone_name(zone: str, run_id: str) -> str:
    """A drill's own zone: ``exitplan-drill-<run>.<zone>``, never the real one."""
    return absolute_name(f"exitplan-drill-{run_id.lower()}.{absolute_name(zone)}")


def rebased(snapshot: ZoneSnapshot, zone: str) -> ZoneSnapshot:
    """``snapshot``'s sets under another apex (names only; values are left as they are)."""
    old = snapshot.name

    def moved(name: str) -> str:
        return zone if name == old else name[: -len(old)] + zone

    sets = tuple(replace(rs, name=moved(rs.name)) for rs in snapshot.record_sets)
    return ZoneSnapshot(zone, sets, f"{snapshot.source} (drill copy)")


def _source_zones(run: RunContext) -> list[ZoneSnapshot]:
    old = Route53DnsProvider("route53", run.source().client("route53"))
    return [zone_from_provider(old, zone) for zone in old.list_zones()]


def _service_names(
    dns: DnsConfig, snapshot: ZoneSnapshot, old_addresses: Sequence[str]
) -> list[str]:
    if dns.service_names:
        return sorted(
            absolute_name(snapshot.name if n == "@" else f"{n}.{snapshot.name}")
            for n in dns.service_names
        )
    return service_names_pointing_at(snapshot, old_addresses)


def _old_addresses(run: RunContext) -> list[str]:
    """The service's old public addresses and names: EC2 public IPs, load balancers' names."""
    account = run.source()
    found: list[str] = []
    for region in account.regions:
        pages = account.client("ec2", region).get_paginator("describe_instances").paginate()
        for page in pages:
            for reservation in page.get("Reservations", []):
                found += [
                    i["PublicIpAddress"]
                    for i in reservation.get("Instances", [])
                    if i.get("PublicIpAddress")
                ]
        balancers = account.client("elbv2", region).describe_load_balancers()
        found += [lb["DNSName"] for lb in balancers.get("LoadBalancers", []) if lb.get("DNSName")]
    return found


@dataclass(frozen=True)
class ZoneMove:
    """One zone's preparation: the new zone filled and compared, and its schedule."""

    source_zone: str
    zone: str
    service_names: tuple[str, ...]
    prepared: ZonePrepared
    schedule: CutoverSchedule
    delegation: str


@dataclass(frozen=True)
class DnsPrepareOutput:
    zones: tuple[ZoneMove, ...]
    applied: bool


class DnsPrepareStep(Step[DnsPrepareOutput]):
    """Creates the exported zones on the destination DNS early, verified over DNS, and schedules the rest."""

    id: ClassVar[str] = "dns-prepare"
    title: ClassVar[str] = "create the zones at the new DNS provider and schedule the cutover"
    output_type: ClassVar[type[Any]] = DnsPrepareOutput

    def inputs(self, run: RunContext) -> Mapping[str, Any]:
        dns = dns_config(run.config)
        return {
            "driver": dns.driver if dns else None,
            "nameservers": dns.nameservers if dns else (),
            "apply": run.apply_changes,
        }

    def preview(self, run: RunContext) -> str:
        dns = dns_config(run.config)
        if dns is None:
            return "no `dns:` in the config: names are not moved"
        mode = "applied" if run.apply_changes else "planned only (migrate --yes applies)"
        return f"create the zones at {dns.driver}, lower TTLs, schedule the delegation ({mode})"

    def execute(self, run: RunContext) -> DnsPrepareOutput:
        dns = dns_config(run.config)
        if dns is None:
            raise StepSkipped("no `dns:` in the config: the service's names are not moved")
        if run.deadline is None:
            raise StepSkipped("no deadline: the cutover is scheduled against one")
        old_addresses = [] if dns.service_names else _old_addresses(run)
        target = run.dns_target()
        nameservers = dns.nameservers or (
            SANDBOX_NAMESERVERS if isinstance(target.provider, LocalDnsProvider) else ()
        )
        if not nameservers:
            raise StepFailed(
                "dns.nameservers is not set: name the new zone's name servers (what the "
                "registrar will be given), e.g. nameservers: [ns1.example.net., ns2.example.net.]"
            )
        apply = run.apply_changes
        moves = []
        for source in _source_zones(run):
            zone = source.name
            snapshot = source
            if run.scratch_suffix:  # a drill: a zone of its own, never the real one
                zone = drill_zone_name(source.name, run.run_id)
                snapshot = rebased(source, zone)
            names = _service_names(dns, snapshot, old_addresses)
            prepared = self._prepare(run, snapshot, target, nameservers, apply)
            if prepared.equivalence is not None and not prepared.equivalence.identical:
                raise StepFailed(prepared.equivalence.summary())
            if apply:
                lowering = plan_ttl_lowering(zone, target.provider, lowered_ttl=LOWERED_TTL_S)
                apply_plan(
                    lowering,
                    target.provider,
                    apply=True,
                    force=run.force_changes,
                    record_undo=self._recorder(run),
                    clock=run.clock,
                    endpoint=target.endpoint,
                )
            schedule = compute_schedule(
                ScheduleInputs(
                    zone=zone,
                    notice=run.started_at or run.clock.now(),
                    deadline=run.deadline.at,
                    safety_margin=run.deadline.safety_margin,
                    ttls=zone_ttls(snapshot, names),
                    new_nameservers=tuple(nameservers),
                    ttls_lowered_at=run.clock.now() if apply else None,
                ),
                run.clock,
            )
            request = delegation_request(schedule)
            if not run.scratch_suffix:
                run.events.emit(RunWarning(message=f"DNS delegation: {request.instruction}"))
            moves.append(
                ZoneMove(source.name, zone, tuple(names), prepared, schedule, request.instruction)
            )
        return DnsPrepareOutput(tuple(moves), apply)

    def _recorder(self, run: RunContext) -> Any:
        def record(kind: str, resource: dict[str, Any], description: str) -> int:
            return run.record_undo(self.id, kind, resource, description)

        return record

    def _prepare(
        self,
        run: RunContext,
        snapshot: ZoneSnapshot,
        target: DnsTarget,
        nameservers: Sequence[str],
        apply: bool,
    ) -> ZonePrepared:
        # Route53 answers no DNS queries we can reach here (moto is an API only), so
        # the old zone is compared through a reference server loaded with what it holds.
        reference = LocalDnsProvider("reference", run.directory / "dns-reference.json")
        load_reference_zone(snapshot, reference)
        with reference.serve() as server:
            return prepare_new_zone(
                snapshot,
                target.provider,
                nameservers=nameservers,
                apply=apply,
                force=run.force_changes,
                record_undo=self._recorder(run),
                clock=run.clock,
                new_endpoint=target.endpoint,
                old_endpoint=AuthoritativeEndpoint(
                    server.host, server.port, "old zone (reference)"
                ),
            )

    def summary(self, output: DnsPrepareOutput) -> str:
        zones = ", ".join(m.zone.rstrip(".") for m in output.zones) or "no zones"
        return f"{zones} {'created and verified over DNS' if output.applied else 'planned'}"


@dataclass(frozen=True)
class NameAnswer:
    name: str
    addresses: tuple[str, ...]


@dataclass(frozen=True)
class CutoverOutput:
    flips: tuple[FlipOutcome, ...]
    answers: tuple[NameAnswer, ...]
    flipped_at: datetime | None
    answered_by: str | None


class CutoverStep(Step[CutoverOutput]):
    """Points the service's names at the new host once its health check is green."""

    id: ClassVar[str] = "cutover"
    title: ClassVar[str] = "point the service's names at the new host"
    output_type: ClassVar[type[Any]] = CutoverOutput
    after: ClassVar[tuple[str, ...]] = ("dns-prepare", "place", "verify-service")

    def preview(self, run: RunContext) -> str:
        if dns_config(run.config) is None:
            return "no `dns:` in the config: names are not moved"
        return "flip the service names to the new host after its health check is green"

    def execute(self, run: RunContext) -> CutoverOutput:
        from orchestrator.placement.steps import PlaceOutput
        from orchestrator.replay.steps import ServiceOutput

        prepared = run.output("dns-prepare", DnsPrepareOutput)
        place = run.output("place", PlaceOutput)
        service = run.output("verify-service", ServiceOutput)
        target = run.dns_target()
        address = place.placement.address
        addresses = ["127.0.0.1" if place.placement.transport == "local" else address]
        health = HealthVerdict(
            green=service.ok,
            checked_at=service.healthy_at or run.clock.now(),
            detail=service.url,
        )
        apply = prepared.applied
        flips = []
        answers: list[NameAnswer] = []
        for move in prepared.zones:
            zones = [ZoneTarget("new", target.provider, target.endpoint)]
            if (
                apply and not run.scratch_suffix
            ):  # keep the old zone identical while it takes writes
                zones.append(
                    ZoneTarget("old", Route53DnsProvider("route53", run.source().client("route53")))
                )
            flips.append(self._flip(run, move, zones, addresses, health, apply))
            if apply and target.endpoint is not None:
                answers += [
                    NameAnswer(
                        name,
                        query_authoritative(target.endpoint, name, "A", transport="udp").values,
                    )
                    for name in move.service_names
                ]
        return CutoverOutput(
            tuple(flips),
            tuple(answers),
            run.clock.now() if apply else None,
            target.endpoint.describe() if target.endpoint else None,
        )

    def _flip(
        self,
        run: RunContext,
        move: ZoneMove,
        zones: list[ZoneTarget],
        addresses: list[str],
        health: HealthVerdict,
        apply: bool,
    ) -> FlipOutcome:
        def record(kind: str, resource: dict[str, Any], description: str) -> None:
            run.record_undo(self.id, kind, resource, description)

        # The sandbox's lowered TTLs are seconds old, its zone nobody's: no wait there.
        not_before = None if run.config.source.aws.sandbox else move.schedule.flip_window_start
        while True:
            try:
                return flip_service_records(
                    move.zone,
                    zones,
                    service_names=move.service_names,
                    addresses=addresses,
                    health=health,
                    clock=run.clock,
                    apply=apply,
                    force=run.force_changes,
                    record_undo=record,
                    ttl=LOWERED_TTL_S,
                    not_before=not_before,
                )
            except FlipTooEarly as early:
                # Resolvers still hold the old TTLs; wait for the window, stoppable.
                wait_s = max(1.0, (early.retry_at - run.clock.now()).total_seconds())
                if run.cancel.wait(min(wait_s, 60.0)):
                    run.cancel.raise_if_set()
                time.sleep(0)

    def summary(self, output: CutoverOutput) -> str:
        if output.flipped_at is None:
            return "planned only (migrate --yes applies)"
        names = ", ".join(
            f"{a.name.rstrip('.')} -> {','.join(a.addresses) or 'nothing'}" for a in output.answers
        )
        return f"{names} (asked {output.answered_by})" if names else "flipped"


def undo_dns(resource: Mapping[str, Any], context: Any) -> str:
    """Undo handler for ``dns_change``: restore the previous record sets where they were changed."""
    providers: list[DnsProvider] = []
    dns = dns_config(context.config)
    if dns is not None:
        with open_dns_target(dns) as target:
            if target.provider.describe() == resource.get("target"):
                return undo_dns_change(resource, target.provider)
    with contextlib.suppress(ExitplanError):
        providers.append(Route53DnsProvider("route53", context.source().client("route53")))
    for provider in providers:
        if provider.describe() == resource.get("target"):
            return undo_dns_change(resource, provider)
    raise ConfigError(
        f"the DNS change at {resource.get('target')} cannot be undone from this config: "
        "its provider is no longer configured; restore those records by hand"
    )


__all__ = [
    "DNS_CHANGE_UNDO_KIND",
    "CutoverStep",
    "DnsPrepareStep",
    "RecordSet",
    "open_dns_target",
    "undo_dns",
]
