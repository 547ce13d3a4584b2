"""Reports of a run from the journal, and writing them where people and CI find them.

``report_from_journal`` reads the journal (never holding item lists) and
returns a ``RunReport``; the runner adds what the steps found (placement,
service, DNS, drill figures); ``write_reports`` publishes report.json,
junit.xml and report.html atomically. Reports hold names, counts and
checksums, never secret values.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from orchestrator.placement.probe import ProbeReport
from orchestrator.placement.steps import PlaceOutput
from orchestrator.report.html_report import render_html
from orchestrator.report.junit import render_junit
from orchestrator.report.model import (
    CandidateRow,
    ChosenHost,
    DataGroup,
    Deadline,
    Descoped,
    DestinationInfo,
    DnsStep,
    FailedItem,
    Placement,
    PlacementAttempt,
    PlanEntry,
    ReplayStep,
    RunReport,
    Service,
    ServiceCheck,
    Step,
    UncheckedItem,
)
from orchestrator.run.journal import Journal


def report_from_journal(
    journal: Journal,
    run_id: str,
    *,
    finished_at: datetime,
    status: str,
    safety_margin: timedelta,
    destinations: list[dict[str, str]],
    plan: list[dict[str, Any]],
    exit_code: int | None = None,
) -> RunReport:
    """What the journal knows of ``run_id``: steps, per-kind counts, failures, the deadline.

    A run the deadline scheduler listed has one data group per kind and tier,
    with what was descoped and why (``data_groups_by_tier``); otherwise each
    kind is one data group with ``tier`` None. Parts the journal does not hold (projections,
    placement, replay, DNS, drill figures) are left empty for the runner to
    add with ``dataclasses.replace``.
    """
    run = journal.get_run(run_id)
    assert run is not None, f"run {run_id} is not in the journal"
    unchecked = journal.unchecked_by_kind(run_id)
    data = data_groups_by_tier(journal, run_id) or tuple(
        DataGroup(
            kind=p.kind,
            tier=None,
            listing_done=p.listing_done,
            listed_items=p.listed_items,
            listed_bytes=p.listed_bytes,
            verified_items=p.done_items,
            verified_bytes=p.done_bytes,
            already_verified_items=p.skipped_items,
            already_verified_bytes=p.skipped_bytes,
            transferred_bytes=p.copied_bytes,
            failed_items=p.failed_items,
            failed_bytes=p.failed_bytes,
            unchecked_items=unchecked.get(p.kind, (0, 0))[0],
            unchecked_bytes=unchecked.get(p.kind, (0, 0))[1],
        )
        for p in journal.progress(run_id)
    )
    steps = tuple(
        Step(
            id=record.step,
            name=record.step,
            status=record.status,
            started_at=record.started_at,
            finished_at=record.finished_at,
            detail=record.detail,
        )
        for record in journal.steps(run_id)
    )
    return RunReport(
        run_id=run_id,
        command=run.command,
        status=status,
        exit_code=exit_code,
        started_at=run.started_at,
        finished_at=finished_at,
        deadline=None
        if run.deadline is None
        else Deadline(at=run.deadline, safety_margin_s=safety_margin.total_seconds()),
        steps=steps,
        plan=tuple(
            PlanEntry(order=e["order"], kind=e["kind"], first_tier_rank=e.get("first_tier_rank"))
            for e in plan
        ),
        destinations=tuple(DestinationInfo(d["name"], d["where"]) for d in destinations),
        data=data,
        failed=tuple(
            FailedItem(destination=d, key=k, error=e) for d, k, e in journal.failed_items(run_id)
        ),
        unchecked=tuple(
            UncheckedItem(destination=d, key=k, why=w)
            for d, k, w in journal.unchecked_items(run_id)
        ),
    )


def data_groups_by_tier(journal: Journal, run_id: str) -> tuple[DataGroup, ...]:
    """Per kind and tier, from what the scheduler listed and the items' states;
    empty when the run had no scheduler (no deadline)."""
    listed = journal.plan_groups(run_id)
    if not listed:
        return ()
    # A resumed run lists what its earlier processes saved as already verified; count
    # only what this process's export settled as its own, or those count twice.
    export = journal.step(run_id, "export")
    since = export.started_at.isoformat() if export is not None and export.started_at else None
    states = journal.item_groups(run_id, since=since)
    descoped: dict[tuple[str, str], list[Descoped]] = {}
    for kind, tier, reason, items, nbytes in journal.descoped_groups(run_id):
        descoped.setdefault((kind, tier), []).append(Descoped(reason, items, nbytes))
    copied = {p.kind: p.copied_bytes for p in journal.progress(run_id)}
    verified_by_kind: dict[str, int] = {}
    for (kind, _tier, state), (_items, nbytes) in states.items():
        if state == "verified":
            verified_by_kind[kind] = verified_by_kind.get(kind, 0) + nbytes
    groups = []
    for kind, tier, items, nbytes, skipped_items, skipped_bytes, listing_done in listed:
        verified = states.get((kind, tier, "verified"), (0, 0))
        failed = states.get((kind, tier, "failed"), (0, 0))
        unchecked = states.get((kind, tier, "unchecked"), (0, 0))
        share = verified[1] / verified_by_kind[kind] if verified_by_kind.get(kind) else 0.0
        groups.append(
            DataGroup(
                kind=kind,
                tier=tier or None,
                listing_done=listing_done,
                listed_items=items,
                listed_bytes=nbytes,
                verified_items=verified[0],
                verified_bytes=verified[1],
                already_verified_items=skipped_items,
                already_verified_bytes=skipped_bytes,
                # The journal counts bytes on the wire per kind: shared by what each tier saved.
                transferred_bytes=int(copied.get(kind, 0) * share),
                failed_items=failed[0],
                failed_bytes=failed[1],
                unchecked_items=unchecked[0],
                unchecked_bytes=unchecked[1],
                descoped=tuple(descoped.get((kind, tier), ())),
            )
        )
    return tuple(groups)


def service_for_report(outputs: Mapping[str, Any]) -> Service | None:
    """The replayed service from the replay and verify-service steps' outputs; None without one."""
    from orchestrator.replay.steps import ReplayOutput, ServiceOutput

    replay = outputs.get("replay")
    if not isinstance(replay, ReplayOutput):
        return None
    checked = outputs.get("verify-service")
    checked = checked if isinstance(checked, ServiceOutput) else None
    return Service(
        url=replay.service_url,
        host=replay.host,
        playbook=replay.playbook,
        answering=None if checked is None else checked.healthy,
        healthy_at=None if checked is None else checked.healthy_at,
        changed=replay.changed,
        ok=replay.ok,
        failed=replay.failed,
        checks=()
        if checked is None
        else tuple(
            ServiceCheck(c.kind, c.name, c.served, c.source, c.equal) for c in checked.checks
        ),
    )


def dns_for_report(outputs: Mapping[str, Any]) -> tuple[DnsStep, ...]:
    """The cutover's steps: each zone prepared, the schedule's steps, and the flip."""
    from orchestrator.cutover.steps import CutoverOutput, DnsPrepareOutput

    prepared = outputs.get("dns-prepare")
    if not isinstance(prepared, DnsPrepareOutput):
        return ()
    steps: list[DnsStep] = []
    for move in prepared.zones:
        zone = move.zone.rstrip(".")
        equivalence = move.prepared.equivalence
        steps.append(
            DnsStep(
                name=f"{zone}: new zone",
                status="done" if prepared.applied else "planned",
                at=equivalence.checked_at if equivalence else None,
                detail=equivalence.summary() if equivalence else "not compared over DNS",
            )
        )
        risks = "; ".join(move.schedule.residual_risks) or None
        for scheduled in move.schedule.steps:
            steps.append(
                DnsStep(
                    name=f"{zone}: {scheduled.step}",
                    status="done" if scheduled.done else "scheduled",
                    at=scheduled.start_at,
                    residual_risk=risks if scheduled.step == "delegation" else None,
                    detail=scheduled.action,
                )
            )
    cutover = outputs.get("cutover")
    if isinstance(cutover, CutoverOutput):
        answers = ", ".join(
            f"{a.name.rstrip('.')} -> {','.join(a.addresses) or 'nothing'}" for a in cutover.answers
        )
        steps.append(
            DnsStep(
                name="flip",
                status="done" if cutover.flipped_at else "planned",
                at=cutover.flipped_at,
                detail=f"{answers} (asked {cutover.answered_by})" if answers else "dry run",
            )
        )
    return tuple(steps)


def replay_steps_for_report(journal: Journal, run_id: str) -> tuple[ReplayStep, ...]:
    return tuple(
        ReplayStep(
            id=r.step,
            name=r.step,
            host=r.host,
            status=r.status,
            changed=r.status == "changed",
            duration_s=(r.finished_at - r.started_at).total_seconds() if r.finished_at else None,
            detail=r.error or "",
        )
        for r in journal.replay_steps(run_id)
    )


def placement_for_report(probe: ProbeReport | None, place: PlaceOutput | None) -> Placement | None:
    """The probe's ranking, every provisioning attempt and the host chosen; None without a probe."""
    if probe is None and place is None:
        return None
    chosen = place.placement if place is not None else None
    attempts = place.attempts if place is not None else ()
    return Placement(
        summary="" if chosen is None else chosen.describe(),
        chosen=None
        if chosen is None
        else ChosenHost(
            candidate=chosen.candidate,
            target=chosen.target,
            address=chosen.address,
            port=chosen.port,
            transport=chosen.transport,
            user=chosen.user or None,
            node_id=chosen.node_id,
            host_key_fingerprint=chosen.host_key_fingerprint or None,
        ),
        attempts=tuple(
            PlacementAttempt(a.candidate, a.target, a.outcome, a.message) for a in attempts
        ),
        candidates=tuple(
            CandidateRow(
                candidate=row.candidate,
                target=row.target,
                status=row.status,
                rank=row.rank,
                refusal=row.refusal,
                reasons=tuple(row.reasons),
                size=row.size,
                location=row.location,
                price_hourly=row.price_hourly,
                estimated_ready_s=row.estimated_ready_s,
            )
            for row in (probe.results if probe is not None else ())
        ),
    )


@dataclass(frozen=True)
class ReportFiles:
    json: Path
    junit: Path
    html: Path


def write_reports(directory: Path, report: RunReport) -> ReportFiles:
    """Write report.json, junit.xml and report.html into ``directory``, each atomically."""
    files = ReportFiles(
        json=directory / "report.json",
        junit=directory / "junit.xml",
        html=directory / "report.html",
    )
    _publish(files.json, report.to_json())
    _publish(files.junit, render_junit(report))
    _publish(files.html, render_html(report))
    return files


def _publish(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
