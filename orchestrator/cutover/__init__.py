"""DNS cutover, timed to the deadline: the new zone, the schedule, the flip, and their undo.

The stages, each a function returning a typed, JSON-serialisable result
(``orchestrator.run.serde.to_json`` / ``from_json``) a pipeline step can keep:

1. ``zone``: the old zone as a ``ZoneSnapshot``, from its export
   (``zone_from_export``) or live (``zone_from_provider`` with
   ``providers.dns_route53.Route53DnsProvider``).
2. ``prepare.prepare_new_zone`` -> ``ZonePrepared``: the zone created on the
   destination ``DnsProvider`` and filled, then compared with the old one
   over DNS (``equivalence.verify_zone_equivalence`` -> ``EquivalenceReport``).
3. ``schedule.compute_schedule`` -> ``CutoverSchedule``: TTL lowering, the
   first-hour delegation change and its forecast, the flip window, the
   residual risks. Pure, on an injected clock.
4. ``plan``: octoDNS-style ``ChangePlan`` (table, thresholds, ownership
   markers), ``apply_plan`` -> ``PlanOutcome`` (dry run unless applied; undo
   recorded through a callback before any change), ``undo_dns_change``.
5. ``delegation``: the registrar change as an approval with the exact NS
   set (``delegation_request``), or through a ``RegistrarHook`` with undo
   (``change_delegation``); ``verify_delegation`` asks the parent over DNS.
6. ``flip.flip_service_records`` -> ``FlipOutcome``: service records to the
   new host after a green health check, in the new zone and the old one.

Nothing here prints or imports the CLI.
"""

from orchestrator.cutover.delegation import (
    DELEGATION_UNDO_KIND,
    DelegationCheck,
    DelegationOutcome,
    DelegationRequest,
    RegistrarHook,
    change_delegation,
    delegation_request,
    undo_delegation,
    verify_delegation,
)
from orchestrator.cutover.equivalence import (
    EquivalenceReport,
    NotCompared,
    RecordComparison,
    verify_zone_equivalence,
)
from orchestrator.cutover.flip import (
    FlipOutcome,
    FlipTooEarly,
    HealthNotGreen,
    HealthVerdict,
    ZoneTarget,
    flip_service_records,
    plan_flip,
    service_record_sets,
)
from orchestrator.cutover.plan import (
    DEFAULT_OWNER,
    DNS_CHANGE_UNDO_KIND,
    ChangePlan,
    DnsCheck,
    KeptRecord,
    PlannedChange,
    PlanOutcome,
    PlanOutdated,
    RecordUndo,
    ThresholdExceeded,
    Thresholds,
    apply_plan,
    build_plan,
    check_over_dns,
    render_plan_table,
    undo_dns_change,
)
from orchestrator.cutover.prepare import (
    SkippedSet,
    ZonePrepared,
    load_reference_zone,
    plan_ttl_lowering,
    prepare_new_zone,
)
from orchestrator.cutover.query import AuthoritativeEndpoint, DnsAnswer, query_authoritative
from orchestrator.cutover.schedule import (
    PARENT_NS_TTL_S,
    CutoverSchedule,
    DelegationForecast,
    ScheduledStep,
    ScheduleInputs,
    compute_schedule,
    share_on_old_delegation,
)
from orchestrator.cutover.zone import (
    ZoneSnapshot,
    ZoneTtls,
    flatten_in_zone_aliases,
    service_names_pointing_at,
    zone_from_bind,
    zone_from_export,
    zone_from_export_json,
    zone_from_provider,
    zone_ttls,
)
from orchestrator.run.serde import from_json, to_json

__all__ = [
    "DEFAULT_OWNER",
    "DELEGATION_UNDO_KIND",
    "DNS_CHANGE_UNDO_KIND",
    "PARENT_NS_TTL_S",
    "AuthoritativeEndpoint",
    "ChangePlan",
    "CutoverSchedule",
    "DelegationCheck",
    "DelegationForecast",
    "DelegationOutcome",
    "DelegationRequest",
    "DnsAnswer",
    "DnsCheck",
    "EquivalenceReport",
    "FlipOutcome",
    "FlipTooEarly",
    "HealthNotGreen",
    "HealthVerdict",
    "KeptRecord",
    "NotCompared",
    "PlanOutcome",
    "PlanOutdated",
    "PlannedChange",
    "RecordComparison",
    "RecordUndo",
    "RegistrarHook",
    "ScheduleInputs",
    "ScheduledStep",
    "SkippedSet",
    "ThresholdExceeded",
    "Thresholds",
    "ZonePrepared",
    "ZoneSnapshot",
    "ZoneTarget",
    "ZoneTtls",
    "apply_plan",
    "build_plan",
    "change_delegation",
    "check_over_dns",
    "compute_schedule",
    "delegation_request",
    "flatten_in_zone_aliases",
    "flip_service_records",
    "from_json",
    "load_reference_zone",
    "plan_flip",
    "plan_ttl_lowering",
    "prepare_new_zone",
    "query_authoritative",
    "render_plan_table",
    "service_names_pointing_at",
    "service_record_sets",
    "share_on_old_delegation",
    "to_json",
    "undo_delegation",
    "undo_dns_change",
    "verify_delegation",
    "verify_zone_equivalence",
    "zone_from_bind",
    "zone_from_export",
    "zone_from_export_json",
    "zone_from_provider",
    "zone_ttls",
]
