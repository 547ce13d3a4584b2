"""A drill's own parts of a run: scratch destinations, the cleanup, the figures.

``exitplan drill`` runs the steps of ``migrate`` (see ``run.commands``)
with three differences, all here: every destination is a scratch prefix of
itself, whatever the run created is removed at the end (the undo log, then
the scratch prefixes) and that removal is an outcome that can fail, and the
run is measured (RTO, RPO per kind) and judged against the objectives.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from orchestrator.drill.scratch import ScratchStore, delete_scratch, scratch_name, scratch_prefix
from orchestrator.export.transfer import Destination
from orchestrator.report.model import CleanupOutcome, DrillFigures, RpoFigure, RunReport
from orchestrator.run.serde import to_json
from orchestrator.run.steps import RunContext
from orchestrator.run.undo import UndoContext, rollback

log = logging.getLogger(__name__)


def scratch_destinations(run_id: str, destinations: list[Destination]) -> list[Destination]:
    """Every destination as a scratch prefix of itself, under a journal name of its own."""
    prefix = scratch_prefix(run_id)
    return [Destination(scratch_name(d.name), ScratchStore(d.store, prefix)) for d in destinations]


def clean_up(run: RunContext, context: UndoContext) -> tuple[CleanupOutcome, ...]:
    """Undo everything the drill created, newest first, then delete its scratch prefixes."""
    outcomes = [
        CleanupOutcome(o.description, "removed" if o.state == "undone" else "failed", o.message)
        for o in rollback(run.journal, run.run_id, context)
    ]
    for destination in run.destinations():
        store = destination.store
        if not isinstance(store, ScratchStore):  # never delete outside a scratch prefix
            continue
        try:
            deleted, stuck = delete_scratch(store.inner, store.prefix)
        except Exception as exc:  # a destination that went away is a failed cleanup, said so
            outcomes.append(
                CleanupOutcome(store.describe(), "failed", f"{type(exc).__name__}: {exc}")
            )
            continue
        outcomes.append(
            CleanupOutcome(
                f"{deleted} scratch object(s) at {store.describe()}",
                "failed" if stuck else "removed",
                "; ".join(stuck[:5]) or None,
            )
        )
    return tuple(outcomes)


def newest_data(run: RunContext) -> dict[str, datetime]:
    """Kind -> the newest data proven restored in this run (what RPO is measured from)."""
    newest: dict[str, datetime] = {}
    for kind, as_of in run.journal.data_as_of(run.run_id):
        if kind not in newest or as_of > newest[kind]:
            newest[kind] = as_of
    return newest


def health_green_at(outputs: Mapping[str, Any]) -> datetime | None:
    """When the new host's health check was green with the source's data (verify-service)."""
    service = outputs.get("verify-service")
    healthy = getattr(service, "healthy_at", None)
    return healthy if isinstance(healthy, datetime) else None


def measure(run: RunContext, *, notice_s: float) -> DrillFigures:
    """What the drill measured: when the service was healthy and how new its data is.

    RTO and RPO themselves are derived from these facts by the report model
    (``RunReport.rto_s`` / ``rpo_s``), which also judges them against the
    objectives.
    """
    return DrillFigures(
        service_healthy_at=health_green_at(run.outputs),
        rpo=tuple(
            RpoFigure(kind, as_of, f"newest {kind} data verified at the destination")
            for kind, as_of in sorted(newest_data(run).items())
        ),
        notice_s=notice_s,
    )


def keep(run: RunContext, report: RunReport) -> None:
    """Keep the drill's figures in the journal for `drill history` and the trend."""
    checks = report.objective_checks()
    run.journal.record_drill(
        run.run_id,
        scenario=report.scenario or "",
        started_at=report.started_at,
        finished_at=report.finished_at or run.clock.now(),
        passed=report.exit_code == 0,
        figures={
            "rto_s": report.rto_s,
            "bytes_verified": report.totals()["saved_bytes"],
            "status": report.status,
            "objectives": [to_json(c) for c in checks],
            # What the next plan is seeded with: the rates the scheduler measured,
            # and how long each later stage of the exit took.
            "rates": run.journal.plan_rates(run.run_id),
            "stages": stage_seconds(run),
        },
    )


#: Steps whose durations the plan predicts (placement, replay, DNS) from the last drill.
PREDICTED_STAGES = {
    "place": ("probe", "place"),
    "replay": ("replay",),
    "verify-service": ("verify-service",),
    "dns": ("cutover",),
}


def stage_seconds(run: RunContext) -> dict[str, float]:
    """Stage -> seconds its steps took in this run (only stages that finished)."""
    steps = {s.step: s for s in run.journal.steps(run.run_id)}
    seconds: dict[str, float] = {}
    for stage, names in PREDICTED_STAGES.items():
        took = []
        for name in names:
            step = steps.get(name)
            if step is None or step.status != "done":
                continue
            if step.started_at is None or step.finished_at is None:
                continue
            took.append((step.finished_at - step.started_at).total_seconds())
        if took:
            seconds[stage] = round(sum(took), 3)
    return seconds
