"""The export's steps: the plan of what to save first, the export itself, the manifest."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any, ClassVar

from orchestrator.errors import Cancelled, ExitplanError
from orchestrator.events import RunWarning
from orchestrator.export.exporters.base import ExportContext, exporter_kinds, load_exporter
from orchestrator.export.iam_policy import client_error_is_access_denied
from orchestrator.export.manifest import publish_manifests
from orchestrator.export.transfer import TransferEngine, TransferSettings
from orchestrator.plan.forecast import DeadlinePlan
from orchestrator.plan.priorities import Prioritizer, Rule
from orchestrator.run.progress import RunProgress
from orchestrator.run.steps import RunContext, Step, StepFailed
from orchestrator.run.undo import process_recorder

log = logging.getLogger(__name__)


def prioritizer_for(run: RunContext) -> Prioritizer:
    return Prioritizer([Rule(rule.tier, dict(rule.match)) for rule in run.config.priorities])


@dataclass(frozen=True)
class KindOrder:
    order: int
    kind: str
    first_tier_rank: int


@dataclass(frozen=True)
class PlanOutput:
    """Which kinds are exported, most important first; with a deadline, the plan
    against it (``orchestrator.plan.forecast``) and the rates it was made with."""

    kinds: tuple[KindOrder, ...]
    deadline_plan: DeadlinePlan | None = None
    rates: dict[str, Any] | None = None


class PlanStep(Step[PlanOutput]):
    """Orders the kinds by the config's priorities and, with a deadline, plans
    against it: sizes every kind's work, calibrates, and says at once whether it
    fits (``orchestrator.plan.runplan``)."""

    id: ClassVar[str] = "plan"
    title: ClassVar[str] = "plan what to save first against the deadline"
    output_type: ClassVar[type[Any]] = PlanOutput

    def __init__(self, kinds: tuple[str, ...] | None) -> None:
        self.kinds = kinds

    def inputs(self, run: RunContext) -> dict[str, Any]:
        return {
            "kinds": self.kinds,
            "priorities": [(r.tier, dict(r.match)) for r in run.config.priorities],
            "deadline": run.deadline.at.isoformat() if run.deadline else None,
        }

    def _plan(self, run: RunContext) -> PlanOutput:
        prioritizer = prioritizer_for(run)
        kinds = prioritizer.order_kinds(list(self.kinds or exporter_kinds()))
        return PlanOutput(
            tuple(
                KindOrder(index + 1, kind, prioritizer.kind_rank(kind))
                for index, kind in enumerate(kinds)
            )
        )

    def preview(self, run: RunContext) -> str:
        return "export in this order: " + ", ".join(k.kind for k in self._plan(run).kinds)

    def execute(self, run: RunContext) -> PlanOutput:
        output = self._plan(run)
        if run.deadline is None:
            return output
        from orchestrator.errors import Cancelled
        from orchestrator.plan.runplan import plan_for_run, rates_of

        try:
            plan, model = plan_for_run(run, prioritizer_for(run), [k.kind for k in output.kinds])
        except Cancelled:
            raise
        except Exception as exc:  # a plan is advice: the export runs without one
            log.warning("the deadline plan could not be made: %s", exc, exc_info=True)
            run.events.emit(
                RunWarning(
                    message=f"the deadline plan could not be made ({_plain(exc)}); the export "
                    "runs in tier order and measures its rates as it goes"
                )
            )
            return output
        return replace(output, deadline_plan=plan, rates=rates_of(model))

    def summary(self, output: PlanOutput) -> str:
        order = " -> ".join(k.kind for k in output.kinds)
        if output.deadline_plan is None:
            return order
        return f"{order}; {output.deadline_plan.summary()}"


@dataclass(frozen=True)
class KindOutcome:
    kind: str
    status: str  # done | failed | cancelled
    detail: str = ""


@dataclass(frozen=True)
class ExportOutput:
    """How each kind went; item counts are in the journal (``items`` of this run)."""

    kinds: tuple[KindOutcome, ...]
    warnings: tuple[str, ...]
    items: dict[str, int]


class ExportStep(Step[ExportOutput]):
    """Copies every item of every kind to every destination, verified (see ``transfer``)."""

    id: ClassVar[str] = "export"
    title: ClassVar[str] = "export the data to every destination, checksummed"
    output_type: ClassVar[type[Any]] = ExportOutput
    after: ClassVar[tuple[str, ...]] = ("plan",)

    def inputs(self, run: RunContext) -> dict[str, Any]:
        return {"destinations": [d.name for d in run.config.destinations]}

    def preview(self, run: RunContext) -> str:
        names = ", ".join(f"{d.name} ({d.driver})" for d in run.config.destinations)
        return f"copy to {names}; verified items are skipped"

    def execute(self, run: RunContext) -> ExportOutput:
        config = run.config
        plan = run.output("plan", PlanOutput)
        prioritizer = prioritizer_for(run)
        destinations = run.destinations()
        progress = RunProgress(
            run_id=run.run_id,
            journal=run.journal,
            events=run.events,
            clock=run.clock,
            deadline=run.deadline,
        )
        context = ExportContext(
            run_id=run.run_id,
            scratch_dir=run.directory / "scratch",
            recipients={d.name: d.recipients for d in config.destinations},
            part_size=config.transfer.part_size,
            sandbox=config.source.aws.sandbox,
            cancel=run.cancel,
            record_undo=lambda kind, resource, description: run.record_undo(
                self.id, kind, resource, description
            ),
            on_resource_started=process_recorder(
                lambda kind, resource, what: run.record_undo(self.id, kind, resource, what),
                run.journal.update_undo,
            ),
        )
        engine = TransferEngine(
            destinations=destinations,
            journal=run.journal,
            run_id=run.run_id,
            events=run.events,
            progress=progress,
            settings=TransferSettings(
                concurrency=config.transfer.concurrency, bwlimit=config.transfer.bwlimit
            ),
            cancel=run.cancel,
        )
        outcomes: list[KindOutcome] = []
        warnings: list[str] = []
        try:
            for entry in plan.kinds:
                run.cancel.raise_if_set()
                exporter = load_exporter(entry.kind)(
                    run.source(), tier_of=prioritizer, context=context
                )
                try:
                    engine.export(exporter)
                except Cancelled:
                    outcomes.append(KindOutcome(entry.kind, "cancelled"))
                    raise
                except Exception as exc:  # one kind failing must not stop the others
                    # A diagnosed failure (a refused call included) says all in its message.
                    log.warning(
                        "export of %s failed: %s", entry.kind, exc, exc_info=not _diagnosed(exc)
                    )
                    outcomes.append(KindOutcome(entry.kind, "failed", _plain(exc)))
                    run.events.emit(
                        RunWarning(message=f"export of {entry.kind} failed: {_plain(exc)}")
                    )
                    continue
                for message in exporter.warnings():
                    warnings.append(message)
                    run.events.emit(RunWarning(message=message))
                outcomes.append(KindOutcome(entry.kind, "done"))
        finally:
            engine.close()
        items = run.journal.item_counts(run.run_id)
        output = ExportOutput(tuple(outcomes), tuple(warnings), items)
        failed_kinds = [o.kind for o in outcomes if o.status == "failed"]
        if failed_kinds or items.get("failed") or items.get("in-flight"):
            parts = []
            if failed_kinds:
                parts.append(
                    "kinds failed: "
                    + "; ".join(f"{o.kind} ({o.detail})" for o in outcomes if o.status == "failed")
                )
            if items.get("failed"):
                parts.append(f"{items['failed']} item(s) failed")
            if items.get("in-flight"):
                parts.append(f"{items['in-flight']} item(s) unfinished")
            raise StepFailed("; ".join(parts), output)
        return output

    def summary(self, output: ExportOutput) -> str:
        return f"{output.items.get('verified', 0)} item(s) verified in this run's journal"


def _diagnosed(exc: BaseException) -> bool:
    """Whether ``exc``'s message says what went wrong and what to do (no traceback needed)."""
    return isinstance(exc, ExitplanError) or client_error_is_access_denied(exc)


def _plain(exc: BaseException) -> str:
    text = str(exc)
    return text if text else type(exc).__name__


@dataclass(frozen=True)
class ManifestOutput:
    #: Destination name -> bytes of manifest written there.
    sizes: dict[str, int]


class ManifestStep(Step[ManifestOutput]):
    """Writes ``manifest/manifest.jsonl`` at every destination from the journal."""

    id: ClassVar[str] = "manifest"
    title: ClassVar[str] = "write the manifest of every verified item"
    output_type: ClassVar[type[Any]] = ManifestOutput
    after: ClassVar[tuple[str, ...]] = ("export",)

    def execute(self, run: RunContext) -> ManifestOutput:
        # A destination that cannot take its manifest (a full disk) fails the step,
        # after the others are written; the run still ends with its report.
        outcome = publish_manifests(run.journal, run.destinations())
        output = ManifestOutput(dict(outcome.written))
        if outcome.failed:
            raise StepFailed(outcome.summary(), output)
        return output

    def summary(self, output: ManifestOutput) -> str:
        return f"{len(output.sizes)} manifest(s), {sum(output.sizes.values())} bytes"
