"""Which WorkSource the export runs from: the seam where the planner's scheduler plugs in.

With a deadline, the export runs from the ``DeadlineScheduler``
(``orchestrator.plan.scheduler``): items of every kind merged by tier and
least laxity, admission against the cutoff, descoping with reasons,
re-planned from measured rates, seeded with the ``plan`` step's calibrated
figures and reserving each tier's planned work until it is listed.
Without one there is nothing to admit against: every item is admitted, kind
by kind in the plan's order (the kinds are already in tier order).
"""

from __future__ import annotations

from collections.abc import Sequence

from orchestrator.export.exporters.base import Exporter, ExportItem
from orchestrator.export.work import KindByKind, WorkSource
from orchestrator.plan.cost import CostModel
from orchestrator.plan.forecast import DeadlinePlan
from orchestrator.plan.scheduler import DeadlineScheduler
from orchestrator.run.steps import RunContext


def work_source(run: RunContext, exporters: Sequence[Exporter]) -> WorkSource:
    """The source of work for this run's export; ``exporters`` come in the plan's order."""
    if run.deadline is None:
        return KindByKind(exporters)
    plan_output = run.outputs.get("plan")
    deadline_plan: DeadlinePlan | None = getattr(plan_output, "deadline_plan", None)
    rates = getattr(plan_output, "rates", None)
    config = run.config
    model = CostModel(concurrency=config.transfer.concurrency, bwlimit=config.transfer.bwlimit)
    if rates:
        model.seed_from(rates, "the plan step")
    destinations = run.destinations()

    def stored(item: ExportItem) -> bool:
        wanted = [
            d for d in destinations if item.destinations is None or d.name in item.destinations
        ]
        return bool(wanted) and all(
            run.journal.is_stored(d.name, item.dest_key, item.idem_key) for d in wanted
        )

    return DeadlineScheduler(
        run_id=run.run_id,
        exporters=exporters,
        deadline=run.deadline,
        clock=run.clock,
        model=model,
        events=run.events,
        plan=deadline_plan,
        journal=run.journal,
        stored=stored,
        part_size=config.transfer.part_size,
    )
