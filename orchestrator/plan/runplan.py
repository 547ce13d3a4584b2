"""The deadline plan of one run: made by the ``plan`` step, read by the scheduler.

``plan_for_run`` sizes the work (read-only), seeds and calibrates the cost
model and plans against the run's deadline; it announces the verdict at
once (a ``RunWarning`` with the numbers when the deadline cannot be met, a
``Projection`` with the P50/P90 finish), so a person knows in the first
seconds of the run, not at its end.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from orchestrator.events import Projection, RunWarning
from orchestrator.plan.cost import CostModel, human_bytes
from orchestrator.plan.forecast import FITS, INFEASIBLE, DeadlinePlan
from orchestrator.plan.planning import make_plan
from orchestrator.plan.priorities import Prioritizer
from orchestrator.run.steps import RunContext

log = logging.getLogger(__name__)


def plan_for_run(
    run: RunContext, prioritizer: Prioritizer, kinds: Sequence[str]
) -> tuple[DeadlinePlan, CostModel]:
    """Make the run's plan (reads the source; writes nothing) and announce its verdict."""
    config = run.config
    plan, model = make_plan(
        account=run.source(),
        prioritizer=prioritizer,
        kinds=list(kinds),
        part_size=config.transfer.part_size,
        concurrency=config.transfer.concurrency,
        bwlimit=config.transfer.bwlimit,
        deadline=run.deadline,
        clock=run.clock,
        journal=run.journal,
    )
    announce(run, plan)
    return plan, model


def announce(run: RunContext, plan: DeadlinePlan) -> None:
    run.events.emit(
        Projection(
            remaining_bytes=sum(r.admitted_bytes for r in plan.rows),
            bytes_per_second=plan.egress_p50,
            projected_finish=plan.finish_p50,
            deadline=plan.deadline,
            will_make_it=plan.verdict == FITS,
            p90_finish=plan.finish_p90,
            cutoff=plan.cutoff,
            verdict=plan.verdict,
            descoped_items=sum(d.items for d in plan.descoped),
            descoped_bytes=sum(d.bytes for d in plan.descoped),
        )
    )
    if plan.verdict == INFEASIBLE:
        need = (
            f"it needs {human_bytes(plan.needed_rate)}/s of egress"
            if plan.needed_rate
            else "no egress is enough (its requests and setup alone pass the cutoff)"
        )
        run.events.emit(
            RunWarning(
                message=f"deadline infeasible: the {plan.critical_tier} tier's P90 finish "
                f"{plan.critical_finish_p90:%H:%M:%S} passes the cutoff {plan.cutoff:%H:%M:%S} "
                f"at {plan.rates}; {need}. Options: " + "; ".join(plan.options)
            )
        )
    elif plan.descoped:
        run.events.emit(
            RunWarning(
                message=f"the deadline does not leave room for everything: {plan.summary()}; "
                + "; ".join(
                    f"{d.tier}/{d.kind}: {d.items} items ({human_bytes(d.bytes)}) {d.reason}"
                    for d in plan.descoped
                )
            )
        )


def rates_of(model: CostModel) -> dict[str, Any]:
    return asdict(model.figures())
