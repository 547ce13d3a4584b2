"""The deadline plan: what fits before the cutoff, tier by tier, at P50 and P90.

``plan_deadline`` walks the work most important tier first, adds each
(tier, kind)'s cost from the cost model, and keeps the cumulative finish
at P50 and P90 against the cutoff (the deadline less the safety margin).
Work whose P90 finish passes the cutoff is descoped, with the reason; the
first tier (the critical one) is never descoped: if it cannot fit, the plan
is *infeasible* (``exitplan plan`` exits 3) and says what rate it would need
and what the options are.

The whole plan is a frozen dataclass: it is the ``plan`` step's output, kept
in the journal, printed by ``exitplan plan`` and read by the scheduler
(what each tier is expected to cost, before its items are listed).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from orchestrator.plan.cost import CostModel, Work, human_bytes, human_rate
from orchestrator.plan.egress import egress_cost
from orchestrator.plan.workload import TierKind
from orchestrator.run.deadline import Deadline, format_duration

#: Verdicts, best first.
FITS = "fits"
DESCOPES = "fits-with-descoping"
INFEASIBLE = "infeasible"


@dataclass(frozen=True)
class PlanRow:
    """One tier and kind: its work, predicted duration and where the plan stands after it."""

    tier: str
    tier_rank: int
    kind: str
    items: int
    bytes: int
    requests: int
    predicted_p50_s: float
    predicted_p90_s: float
    #: Cumulative finish of everything up to and including this row.
    finish_p50: datetime
    finish_p90: datetime
    #: Cutoff less the P90 finish (negative: late).
    margin_p90_s: float
    #: ``egress``, ``requests`` or ``ceiling``: what limits this work.
    bound_by: str
    admitted_items: int
    admitted_bytes: int
    setups: int = 0
    size_known: bool = True
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class PlannedDescope:
    """Work the plan leaves out, and why."""

    tier: str
    kind: str
    items: int
    bytes: int
    reason: str


@dataclass(frozen=True)
class StagePrediction:
    """A later stage of the exit and when it is predicted to end (None: unknown)."""

    stage: str
    duration_s: float | None
    at: datetime | None
    basis: str


@dataclass(frozen=True)
class DeadlinePlan:
    made_at: datetime
    deadline: datetime | None
    cutoff: datetime | None
    concurrency: int
    bwlimit: int | None
    rates: str
    rates_from: tuple[str, ...]
    egress_p50: float
    egress_p90: float
    rows: tuple[PlanRow, ...]
    descoped: tuple[PlannedDescope, ...]
    finish_p50: datetime
    finish_p90: datetime
    verdict: str
    #: The tier never descoped (the first in priority order).
    critical_tier: str
    critical_finish_p90: datetime | None
    stages: tuple[StagePrediction, ...]
    service_up_by: datetime | None
    egress_bytes: int
    egress_usd: float
    egress_basis: str
    egress_waiver: str
    #: When infeasible: the egress the critical tier needs to fit, bytes/s.
    needed_rate: float | None = None
    options: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def margin_p90_s(self) -> float | None:
        if self.cutoff is None:
            return None
        return (self.cutoff - self.finish_p90).total_seconds()

    def tier_cost_p90(self) -> dict[str, float]:
        """Tier -> seconds its admitted work is expected to take at P90 (for reservations)."""
        costs: dict[str, float] = {}
        for row in self.rows:
            share = row.admitted_items / row.items if row.items else 1.0
            costs[row.tier] = costs.get(row.tier, 0.0) + row.predicted_p90_s * share
        return costs

    def summary(self) -> str:
        """One line: finish at P50/P90, the margin and the verdict."""
        text = f"P50 finish {self.finish_p50:%H:%M:%S}, P90 {self.finish_p90:%H:%M:%S}"
        if self.cutoff is not None:
            margin = self.margin_p90_s or 0.0
            text += (
                f"; cutoff {self.cutoff:%H:%M:%S}, margin at P90 "
                f"{format_duration(timedelta(seconds=margin))}"
            )
        text += f"; {self.verdict}"
        if self.descoped:
            text += (
                f" ({sum(d.items for d in self.descoped)} items, "
                f"{human_bytes(sum(d.bytes for d in self.descoped))} descoped)"
            )
        return text


def plan_deadline(
    rows: Sequence[TierKind],
    model: CostModel,
    *,
    now: datetime,
    deadline: Deadline | None,
    stages: Mapping[str, float] | None = None,
    stages_basis: str = "",
) -> DeadlinePlan:
    """The plan for ``rows`` (from ``workload.by_tier_and_kind``) from ``now``.

    ``stages`` holds seconds measured by the last drill for ``place``,
    ``replay``, ``verify-service`` and ``dns``; a stage not there is unknown.
    """
    cutoff = deadline.cutoff if deadline is not None else None
    critical = rows[0].tier if rows else ""
    elapsed50 = elapsed90 = 0.0
    # The first setup cannot be shared out: the export starts after it.
    first_setup50 = first_setup90 = 0.0
    plan_rows: list[PlanRow] = []
    descoped: list[PlannedDescope] = []
    critical_finish: datetime | None = None
    out_of_time = False
    for row in rows:
        cost50 = model.cost_s(row.work, pessimistic=False)
        cost90 = model.cost_s(row.work, pessimistic=True)
        if row.setups:
            setup = model.kind(row.kind).setup_s
            first_setup50 = max(first_setup50, setup.mean)
            first_setup90 = max(first_setup90, setup.high())
        admitted_items, admitted_bytes = row.items, row.bytes
        finish90 = now + timedelta(seconds=first_setup90 + elapsed90 + cost90)
        if cutoff is not None and row.tier != critical and finish90 > cutoff:
            room = (cutoff - now).total_seconds() - first_setup90 - elapsed90
            share = 0.0 if out_of_time or room <= 0 or cost90 <= 0 else min(1.0, room / cost90)
            admitted_items = int(row.items * share)
            admitted_bytes = int(row.bytes * share)
            left_items, left_bytes = row.items - admitted_items, row.bytes - admitted_bytes
            if left_items or left_bytes:
                reason = (
                    f"no time left before the cutoff {cutoff:%Y-%m-%d %H:%M:%S %Z} after the "
                    "tiers before it"
                    if admitted_items == 0
                    else f"the P90 finish of the rest passes the cutoff "
                    f"{cutoff:%Y-%m-%d %H:%M:%S %Z} at {model.describe_rates()}"
                )
                descoped.append(PlannedDescope(row.tier, row.kind, left_items, left_bytes, reason))
            out_of_time = True
            cost50 *= share
            cost90 *= share
        elapsed50 += cost50
        elapsed90 += cost90
        finish50 = now + timedelta(seconds=first_setup50 + elapsed50)
        finish90 = now + timedelta(seconds=first_setup90 + elapsed90)
        if row.tier == critical:
            critical_finish = finish90
        plan_rows.append(
            PlanRow(
                tier=row.tier,
                tier_rank=row.tier_rank,
                kind=row.kind,
                items=row.items,
                bytes=row.bytes,
                requests=row.requests,
                predicted_p50_s=round(model.cost_s(row.work, pessimistic=False), 3),
                predicted_p90_s=round(model.cost_s(row.work, pessimistic=True), 3),
                finish_p50=finish50,
                finish_p90=finish90,
                margin_p90_s=round((cutoff - finish90).total_seconds(), 3) if cutoff else 0.0,
                bound_by=model.bound_by(row.work),
                admitted_items=admitted_items,
                admitted_bytes=admitted_bytes,
                setups=row.setups,
                size_known=row.size_known,
                notes=row.notes,
            )
        )
    finish_p50 = now + timedelta(seconds=first_setup50 + elapsed50)
    finish_p90 = now + timedelta(seconds=first_setup90 + elapsed90)
    critical_rows = [r for r in rows if r.tier == critical]
    verdict = FITS
    needed: float | None = None
    options: list[str] = []
    if cutoff is not None and critical_finish is not None and critical_finish > cutoff:
        verdict = INFEASIBLE
        needed = _needed_rate(critical_rows, model, now, cutoff, first_setup90)
    elif descoped:
        verdict = DESCOPES
    if verdict != FITS:
        options = _options(rows, plan_rows, model, critical, needed)
    admitted_bytes = sum(r.admitted_bytes for r in plan_rows)
    cost = egress_cost(admitted_bytes)
    stage_predictions, service_up = _stages(finish_p90, now, stages or {}, stages_basis)
    warnings = [
        f"{r.tier}/{r.kind}: {note}" for r in plan_rows if not r.size_known for note in r.notes
    ]
    return DeadlinePlan(
        made_at=now,
        deadline=deadline.at if deadline else None,
        cutoff=cutoff,
        concurrency=model.concurrency,
        bwlimit=model.bwlimit,
        rates=model.describe_rates(),
        rates_from=tuple(model.sources),
        egress_p50=model.egress_rate(False),
        egress_p90=model.egress_rate(True),
        rows=tuple(plan_rows),
        descoped=tuple(descoped),
        finish_p50=finish_p50,
        finish_p90=finish_p90,
        verdict=verdict,
        critical_tier=critical,
        critical_finish_p90=critical_finish,
        stages=stage_predictions,
        service_up_by=service_up,
        egress_bytes=admitted_bytes,
        egress_usd=cost.usd,
        egress_basis=cost.basis,
        egress_waiver=cost.waiver,
        needed_rate=needed,
        options=tuple(options),
        warnings=tuple(warnings),
    )


def _needed_rate(
    critical: Sequence[TierKind],
    model: CostModel,
    now: datetime,
    cutoff: datetime,
    first_setup90: float,
) -> float | None:
    """The egress at which the critical tier's P90 finish meets the cutoff; None if
    no egress is enough (its requests or setup alone pass the cutoff)."""
    window = (cutoff - now).total_seconds() - first_setup90
    fixed = 0.0
    nbytes = 0
    for row in critical:
        no_bytes = Work(row.kind, 0, row.requests, row.setups)
        fixed += model.cost_s(no_bytes, pessimistic=True)
        nbytes += row.bytes
    if window - fixed <= 0:
        return None
    return nbytes / (window - fixed) if nbytes else None


def _options(
    rows: Sequence[TierKind],
    plan_rows: Sequence[PlanRow],
    model: CostModel,
    critical: str,
    needed: float | None,
) -> list[str]:
    options: list[str] = []
    lower = sorted(
        {r.tier for r in rows if r.tier != critical},
        key=lambda t: -min(r.tier_rank for r in rows if r.tier == t),
    )
    if lower:
        options.append(
            "descope tiers: leave out " + ", ".join(lower) + " (lowest first; `--only` or "
            "`priorities:`), or let the run descope them as it goes"
        )
    total = sum(r.predicted_p90_s for r in plan_rows) or 1.0
    by_requests = sum(r.predicted_p90_s for r in plan_rows if r.bound_by == "requests")
    if by_requests >= 0.2 * total:
        options.append(
            f"more concurrency: the work is bound by request latency at --concurrency "
            f"{model.concurrency}; raise it (up to 512), or add transfer workers"
        )
    else:
        options.append("more workers: transfer machines nearer the source share the egress")
    if model.bwlimit:
        options.append(f"lift --bwlimit ({human_rate(model.bwlimit)})")
    if needed is not None:
        options.append(
            f"a faster path: the critical tier needs {human_rate(needed)} "
            f"(measured {human_rate(model.egress_rate(True))} at P90): another destination "
            "closer to the source, or a larger link"
        )
    options.append(
        "physical media: an AWS Snow Family export job moves bulk data without the network"
    )
    return options


def _stages(
    export_finish: datetime, now: datetime, stages: Mapping[str, float], basis: str
) -> tuple[tuple[StagePrediction, ...], datetime | None]:
    def known(name: str) -> float | None:
        value = stages.get(name)
        return float(value) if isinstance(value, int | float) else None

    place = known("place")
    replay = known("replay")
    verify = known("verify-service")
    dns = known("dns")
    why = basis or "no drill measured it yet"
    placed_at = now + timedelta(seconds=place) if place is not None else None
    predictions = [
        StagePrediction("export", (export_finish - now).total_seconds(), export_finish, "P90"),
        StagePrediction("place", place, placed_at, why),
    ]
    service_up: datetime | None = None
    if place is not None and replay is not None:
        start = max(export_finish, placed_at or now)
        replayed = start + timedelta(seconds=replay)
        predictions.append(StagePrediction("replay", replay, replayed, why))
        service_up = replayed + timedelta(seconds=verify or 0.0)
    else:
        predictions.append(StagePrediction("replay", replay, None, why))
    if dns is not None and service_up is not None:
        predictions.append(StagePrediction("dns", dns, service_up + timedelta(seconds=dns), why))
    else:
        predictions.append(StagePrediction("dns", dns, None, why))
    return tuple(predictions), service_up


def plan_lines(plan: DeadlinePlan) -> list[str]:
    """The plan as text for ``exitplan plan`` (the CLI prints these)."""
    lines = [
        f"rates: {plan.rates}; concurrency {plan.concurrency} (from {', '.join(plan.rates_from)})"
    ]
    header = (
        f"{'tier':<12} {'kind':<9} {'items':>7} {'bytes':>10} {'requests':>9} "
        f"{'P50':>8} {'P90':>8}  {'finish P50':>10} {'finish P90':>10} {'margin P90':>11}  bound"
    )
    lines.append(header)
    for row in plan.rows:
        margin = format_duration(timedelta(seconds=row.margin_p90_s)) if plan.cutoff else "-"
        partial = (
            f"  (admits {row.admitted_items} of {row.items})"
            if row.admitted_items != row.items
            else ""
        )
        lines.append(
            f"{row.tier:<12} {row.kind:<9} {row.items:>7} {human_bytes(row.bytes):>10} "
            f"{row.requests:>9} {format_duration(timedelta(seconds=row.predicted_p50_s)):>8} "
            f"{format_duration(timedelta(seconds=row.predicted_p90_s)):>8}  "
            f"{row.finish_p50:%H:%M:%S}   {row.finish_p90:%H:%M:%S}   {margin:>11}  "
            f"{row.bound_by}{partial}"
        )
        for note in row.notes:
            lines.append(f"{'':<12} note: {note}")
    lines.append("")
    lines.append(f"export: {plan.summary()}")
    if plan.cutoff is not None:
        lines.append(
            f"cutoff: {plan.cutoff.isoformat()} (deadline {plan.deadline.isoformat() if plan.deadline else '-'} "
            "less the safety margin)"
        )
    for d in plan.descoped:
        lines.append(
            f"descoped: {d.tier}/{d.kind}: {d.items} items, {human_bytes(d.bytes)}: {d.reason}"
        )
    for stage in plan.stages[1:]:
        when = f"{stage.at:%Y-%m-%d %H:%M:%S %Z}" if stage.at else "unknown"
        took = (
            f" ({format_duration(timedelta(seconds=stage.duration_s))})"
            if stage.duration_s is not None
            else ""
        )
        lines.append(f"{stage.stage + ':':<8} {when}{took}; {stage.basis}")
    lines.append(
        "service up by: "
        + (f"{plan.service_up_by:%Y-%m-%d %H:%M:%S %Z}" if plan.service_up_by else "unknown")
    )
    lines.append(
        f"egress cost: ${plan.egress_usd:,.2f} for {human_bytes(plan.egress_bytes)} "
        f"({plan.egress_basis}); {plan.egress_waiver}"
    )
    if plan.verdict == INFEASIBLE:
        need = human_rate(plan.needed_rate) if plan.needed_rate else "no rate is enough"
        lines.append(
            f"INFEASIBLE: the {plan.critical_tier} tier's P90 finish "
            f"{plan.critical_finish_p90:%H:%M:%S} passes the cutoff; it needs {need} "
            f"(P90 egress now {human_rate(plan.egress_p90)})"
        )
    for option in plan.options:
        lines.append(f"option: {option}")
    for warning in plan.warnings:
        lines.append(f"warning: {warning}")
    return lines


def plan_json(plan: DeadlinePlan) -> dict[str, Any]:
    from orchestrator.run.serde import to_json

    data = to_json(plan)
    data["margin_p90_s"] = plan.margin_p90_s
    return data
