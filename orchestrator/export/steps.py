"""The export's steps: the plan of what to save first, the export itself, the manifest."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any, ClassVar

from orchestrator.drill.scratch import base_name
from orchestrator.errors import ExitplanError
from orchestrator.events import RunWarning
from orchestrator.export.executors.base import Executor
from orchestrator.export.executors.spec import WorkerSpec, worker_spec
from orchestrator.export.exporters.base import (
    ExportContext,
    Exporter,
    exporter_kinds,
    load_exporter,
)
from orchestrator.export.iam_policy import client_error_is_access_denied
from orchestrator.export.manifest import publish_manifests, shard_manifest_key
from orchestrator.export.transfer import Destination, TransferEngine, TransferSettings
from orchestrator.export.work import Shard, ShardOf
from orchestrator.plan.forecast import DeadlinePlan
from orchestrator.plan.priorities import Prioritizer, Rule
from orchestrator.plan.schedule import work_source
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
    """Copies every item of every kind to every destination, verified (see ``transfer``).

    The exporters are built in the plan's order and handed to the run's work
    source (``orchestrator.plan.schedule.work_source``), which decides what
    starts when; the transfer coordinator copies what it hands out, on the
    configured executor (threads here, or a Dask cluster). With a ``shard``
    only the items of that shard are exported.
    """

    id: ClassVar[str] = "export"
    title: ClassVar[str] = "export the data to every destination, checksummed"
    output_type: ClassVar[type[Any]] = ExportOutput
    after: ClassVar[tuple[str, ...]] = ("plan",)

    def __init__(self, shard: Shard | None = None) -> None:
        self.shard = shard

    def inputs(self, run: RunContext) -> dict[str, Any]:
        inputs: dict[str, Any] = {"destinations": [d.name for d in run.config.destinations]}
        if self.shard is not None:
            inputs["shard"] = str(self.shard)
        return inputs

    def preview(self, run: RunContext) -> str:
        names = ", ".join(f"{d.name} ({d.driver})" for d in run.config.destinations)
        where = f"; shard {self.shard} of the items" if self.shard else ""
        return f"copy to {names}; verified items are skipped{where}"

    def execute(self, run: RunContext) -> ExportOutput:
        config = run.config
        plan = run.output("plan", PlanOutput)
        prioritizer = prioritizer_for(run)
        destinations = run.destinations()
        recipients = {d.name: d.recipients for d in config.destinations}
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
            # Keyed by the names the destinations run under (a drill's scratch copies too).
            recipients={
                d.name: recipients[base_name(d.name)]
                for d in destinations
                if base_name(d.name) in recipients
            },
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
        exporters: list[Exporter] = []
        for entry in plan.kinds:
            run.cancel.raise_if_set()
            exporter = load_exporter(entry.kind)(run.source(), tier_of=prioritizer, context=context)
            exporters.append(ShardOf(exporter, self.shard) if self.shard else exporter)
        settings = TransferSettings(
            concurrency=config.transfer.concurrency, bwlimit=config.transfer.bwlimit
        )
        executor, spec = self._executor(run, exporters, destinations, settings)
        engine = TransferEngine(
            destinations=destinations,
            journal=run.journal,
            run_id=run.run_id,
            events=run.events,
            progress=progress,
            settings=settings,
            cancel=run.cancel,
            executor=executor,
            worker_spec=spec,
            retry_rule=run.source().should_retry,
        )
        try:
            result = engine.run(work_source(run, exporters))
        finally:
            engine.close()
        outcomes: list[KindOutcome] = []
        warnings: list[str] = []
        for exporter in exporters:
            failure = result.listing_failures.get(exporter.kind)
            if failure is not None:  # one kind failing must not stop the others
                # A diagnosed failure (a refused call included) says all in its message.
                log.warning(
                    "export of %s failed: %s",
                    exporter.kind,
                    failure,
                    exc_info=(type(failure), failure, failure.__traceback__)
                    if not _diagnosed(failure)
                    else None,
                )
                outcomes.append(KindOutcome(exporter.kind, "failed", _plain(failure)))
                run.events.emit(
                    RunWarning(message=f"export of {exporter.kind} failed: {_plain(failure)}")
                )
                continue
            for message in exporter.warnings():
                warnings.append(message)
                run.events.emit(RunWarning(message=message))
            outcomes.append(KindOutcome(exporter.kind, "done"))
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

    def _executor(
        self,
        run: RunContext,
        exporters: list[Exporter],
        destinations: list[Destination],
        settings: TransferSettings,
    ) -> tuple[Executor | None, WorkerSpec | None]:
        """The executor the config asks for (None: this process's threads), and the
        spec its workers build their source and destinations from."""
        transfer = run.config.transfer
        if transfer.workers is None and transfer.executor != "dask":
            return None, None
        from orchestrator.export.executors.dask_executor import DaskExecutor

        portable = frozenset(e.kind for e in exporters if e.portable)
        spec = None
        if run.config.source.aws.sandbox:
            message = (
                "the built-in sandbox lives inside this process, out of the Dask workers' "
                "reach: its items are copied here"
            )
            log.warning(message)
            run.events.emit(RunWarning(message=message))
        elif portable:
            spec = worker_spec(
                run_id=run.run_id,
                account=run.source(),
                destinations=destinations,
                configs=run.config.destinations,
                part_size=transfer.part_size,
                settings=settings,
                kinds=portable,
            )
        if spec is None:
            return None, None
        if transfer.workers is not None:
            return DaskExecutor(
                workers=transfer.workers, threads_per_worker=transfer.concurrency
            ), spec
        return DaskExecutor(scheduler=transfer.scheduler), spec

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

    def __init__(self, shard: Shard | None = None) -> None:
        #: A shard writes ``manifest/shards/K-of-N.jsonl``; ``exitplan merge`` joins them.
        self.shard = shard

    def inputs(self, run: RunContext) -> dict[str, Any]:
        return {"shard": str(self.shard)} if self.shard is not None else {}

    def execute(self, run: RunContext) -> ManifestOutput:
        # A destination that cannot take its manifest (a full disk) fails the step,
        # after the others are written; the run still ends with its report.
        key = shard_manifest_key(self.shard.index, self.shard.count) if self.shard else None
        outcome = publish_manifests(run.journal, run.destinations(), key=key)
        output = ManifestOutput(dict(outcome.written))
        if outcome.failed:
            raise StepFailed(outcome.summary(), output)
        return output

    def summary(self, output: ManifestOutput) -> str:
        return f"{len(output.sizes)} manifest(s), {sum(output.sizes.values())} bytes"
