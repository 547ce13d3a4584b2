"""The commands as lists of steps, and what the CLI asks of a run: start, resume, plan,
status, rollback.

``migrate`` = plan, then two lanes side by side (inventory -> probe -> place,
and export -> manifest), then the steps that need both (replay, verify,
cutover, as their issues land). ``export`` = plan -> export -> manifest.
The run is recorded in the journal before anything slow starts (opening the
source, seeding the sandbox), so ``exitplan resume`` can carry on whenever a
kill comes. Every setting a run was started with is recorded, and resume
restores all of them (a flag given to resume overrides the one recorded).
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib
import logging
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from orchestrator.clock import Clock, SystemClock
from orchestrator.config import Config, default_sandbox_config, load_config
from orchestrator.cutover.steps import CutoverStep, DnsPrepareStep, dns_config, open_dns_target
from orchestrator.drill.run import clean_up, keep, measure, scratch_destinations
from orchestrator.errors import Cancelled, ConfigError
from orchestrator.events import EventBus
from orchestrator.export.exporters.base import exporter_kinds
from orchestrator.export.exporters.rds import remove_scratch
from orchestrator.export.steps import ExportStep, ManifestStep, PlanOutput, PlanStep
from orchestrator.export.transfer import Destination
from orchestrator.export.work import Shard
from orchestrator.placement.probe import ProbeReport
from orchestrator.placement.steps import InventoryStep, PlaceOutput, PlaceStep, ProbeStep
from orchestrator.replay.steps import ReplayStep, VerifyServiceStep
from orchestrator.report.model import (
    CleanupOutcome,
    Objectives,
    PredictionError,
    ProjectionSample,
    RunReport,
    TrendPoint,
)
from orchestrator.report.recorder import ReportRecorder
from orchestrator.report.run_report import (
    dns_for_report,
    placement_for_report,
    replay_steps_for_report,
    report_from_journal,
    service_for_report,
    write_reports,
)
from orchestrator.run.cancel import CancelReason, CancelToken
from orchestrator.run.deadline import Deadline
from orchestrator.run.journal import Journal, RunRecord
from orchestrator.run.progress import forecast
from orchestrator.run.serde import from_json, to_json
from orchestrator.run.steps import Parallel, Plan, RunContext, Runner, StepPreview, flatten
from orchestrator.run.undo import (
    UndoContext,
    UndoOutcome,
    owner_alive,
    process_recorder,
    rollback,
)
from orchestrator.run.watchdog import Watchdog
from providers.aws import AwsAccount
from providers.interfaces.object_store import ObjectStore
from providers.registry import get_provider_spec, load_provider_class

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_DEADLINE_MISSED = 3
EXIT_INTERRUPTED = 130

#: Undo kinds of processes exitplan starts; the next run stops those a dead run left.
PROCESS_UNDO_KINDS = frozenset({"postgres-cluster"})

SANDBOX_IDENTITY = "sandbox-identity.age"


@dataclass(frozen=True)
class RunSettings:
    """What a run was asked to do; recorded in the journal so ``resume`` does the same."""

    command: str  # migrate | export
    #: The config file, or None for the built-in sandbox rooted at ``sandbox_base``.
    config_file: str | None
    sandbox_base: str | None
    workspace: str
    deadline: datetime | None
    safety_margin_s: float
    kinds: tuple[str, ...] | None
    concurrency: int
    bwlimit: int | None
    #: Drills only: the scenario (``stressed-exit``) and the notice it gives, in seconds.
    scenario: str | None = None
    notice_s: float | None = None
    #: ``--yes``: make the changes that are dry runs by default (DNS); ``--force``: past
    #: the thresholds (over 30% of a zone, any NS change).
    yes: bool = False
    force: bool = False
    #: ``--workers N``: copies on a local Dask cluster of N worker processes.
    workers: int | None = None
    #: ``--shard K/N``: this run exports only shard K of N of the items.
    shard: str | None = None

    @property
    def deadline_value(self) -> Deadline | None:
        if self.deadline is None:
            return None
        return Deadline(self.deadline, timedelta(seconds=self.safety_margin_s))


@dataclass(frozen=True)
class SettingOverrides:
    """Flags given to ``resume`` that replace what the run recorded."""

    deadline: datetime | None = None
    concurrency: int | None = None
    #: ``bwlimit_given`` with ``bwlimit`` None: ``--bwlimit off`` lifts the recorded limit.
    bwlimit: int | None = None
    bwlimit_given: bool = False
    kinds: tuple[str, ...] | None = None
    workers: int | None = None


@dataclass
class RunOutcome:
    run_id: str
    status: str  # done | failed | deadline-missed | interrupted
    exit_code: int
    report: dict[str, Any]
    report_path: Path


# -- building a run ------------------------------------------------------------


def settings_for(
    command: str,
    config: Config,
    *,
    deadline: datetime | None,
    kinds: tuple[str, ...] | None,
    sandbox_base: Path | None = None,
    yes: bool = False,
    force: bool = False,
    shard: Shard | None = None,
) -> RunSettings:
    if kinds is not None:
        check_kinds(kinds)
    if shard is not None and command != "export":
        raise ConfigError(
            f"--shard: only `exitplan export` is split in shards, not {command}; run "
            "`exitplan export --shard K/N` on each machine, then `exitplan merge`"
        )
    return RunSettings(
        command=command,
        config_file=str(config.source_file) if config.source_file else None,
        sandbox_base=str(sandbox_base) if config.source_file is None and sandbox_base else None,
        workspace=str(config.workspace),
        deadline=deadline,
        safety_margin_s=config.safety_margin.total_seconds(),
        kinds=kinds,
        concurrency=config.transfer.concurrency,
        bwlimit=config.transfer.bwlimit,
        yes=yes,
        force=force,
        workers=config.transfer.workers,
        shard=str(shard) if shard is not None else None,
    )


def check_kinds(kinds: tuple[str, ...]) -> None:
    unknown = [k for k in kinds if k not in exporter_kinds()]
    if unknown or not kinds:
        raise ConfigError(
            f"--only: unknown kind(s) {', '.join(unknown) or '(none given)'}; "
            f"choose from {', '.join(exporter_kinds())}"
        )


def plan_for(settings: RunSettings) -> Plan:
    """The steps of a command, in order (see the module docstring); a drill's are migrate's."""
    plan_step = PlanStep(settings.kinds)
    if settings.command == "export":
        shard = Shard.parse(settings.shard) if settings.shard else None
        return [plan_step, ExportStep(shard), ManifestStep(shard)]
    return [
        plan_step,
        Parallel(
            [InventoryStep(), ProbeStep(), PlaceStep()],
            [ExportStep(), ManifestStep()],
            [DnsPrepareStep()],
        ),
        # Needs both lanes: the host, and the manifest the playbook's artifacts are checked against.
        ReplayStep(settings.kinds),
        VerifyServiceStep(),
        CutoverStep(),
    ]


def open_source(
    config: Config,
    *,
    with_database: bool = False,
    checked: AwsAccount | None = None,
    on_cluster_started: Callable[[dict[str, Any]], None] | None = None,
) -> contextlib.AbstractContextManager[AwsAccount]:
    """The source account: the in-process sandbox, or AWS (or a moto server) via boto3.

    ``checked`` is an account ``check_source`` already vouched for: it is used as is.
    ``on_cluster_started`` records the sandbox's PostgreSQL server for the undo log.
    """
    return _opened_source(config, with_database, checked, on_cluster_started)


def check_source(config: Config) -> AwsAccount | None:
    """Refuse missing or rejected credentials before anything is written (exit 2).

    One cheap call (STS GetCallerIdentity); the sandbox needs none.
    """
    aws = config.source.aws
    if aws.sandbox:
        return None
    account = AwsAccount(
        regions=aws.regions,
        profile=aws.profile,
        endpoint_url=aws.endpoint_url,
        max_pool_connections=max(10, config.transfer.concurrency + 8),
        direct_http=True,
    )
    account.check_credentials()
    return account


@contextlib.contextmanager
def _opened_source(
    config: Config,
    with_database: bool,
    checked: AwsAccount | None,
    on_cluster_started: Callable[[dict[str, Any]], None] | None,
) -> Iterator[AwsAccount]:
    if config.source.aws.sandbox:
        from orchestrator.sandbox.account import running_sandbox

        # A real PostgreSQL stands behind the sandbox's RDS instance where
        # the machine has one; without it the sandbox still runs.
        with running_sandbox(
            postgres=with_database, on_cluster_started=on_cluster_started
        ) as sandbox:
            yield sandbox.account
        return
    account = checked or check_source(config)
    assert account is not None
    yield account


def open_destinations(config: Config) -> list[Destination]:
    """Build every configured destination's ObjectStore through the provider registry."""
    destinations = []
    for spec in config.destinations:
        provider = get_provider_spec("storage", spec.driver)
        cls = load_provider_class(provider)
        options = {
            name: (value.reveal() if hasattr(value, "reveal") else value)
            for name, value in spec.options.items()
        }
        store: ObjectStore = cls(spec.name, **options)
        destinations.append(Destination(spec.name, store))
    return destinations


def workspace_journal(config: Config, clock: Clock | None = None) -> Journal:
    """The workspace's journal, creating the workspace; ``ConfigError`` if it cannot be one."""
    workspace = Path(config.workspace)
    if workspace.exists() and not workspace.is_dir():
        raise ConfigError(
            f"workspace {workspace} is a file, not a directory: pass --workspace with a "
            "directory (it is created if missing)"
        )
    try:
        workspace.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"workspace {workspace}: cannot create it ({exc.strerror}); pass --workspace with "
            "a writable directory"
        ) from None
    return Journal(workspace / "journal.sqlite", clock=clock)


def existing_journal(config: Config, clock: Clock | None = None) -> Journal:
    """The workspace's journal; ``ConfigError`` (nothing created) when there is none."""
    path = Path(config.workspace) / "journal.sqlite"
    if not path.is_file():
        raise ConfigError(
            f"no journal at {path}: run `exitplan migrate` first, or pass --workspace"
        )
    return Journal(path, clock=clock)


def with_sandbox_recipient(config: Config) -> Config:
    """The sandbox encrypts its secrets to a key of its own, kept in the workspace.

    So a new user sees secrets exported the only way exitplan exports them,
    encrypted, and can read them back with `exitplan secrets decrypt`.
    """
    from orchestrator.age import generate_identity, load_identity

    path = Path(config.workspace) / SANDBOX_IDENTITY
    if path.exists():
        recipient = load_identity(path).recipients[0]
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        recipient = generate_identity(path)
    destinations = tuple(
        replace(d, recipients=d.recipients or (recipient,)) for d in config.destinations
    )
    return replace(config, destinations=destinations)


def _dns_opener(config: Config) -> Callable[[], contextlib.AbstractContextManager[Any]] | None:
    dns = dns_config(config)
    if dns is None:
        return None
    return lambda: open_dns_target(dns)


def _context(
    config: Config,
    settings: RunSettings,
    run_id: str,
    journal: Journal,
    events: EventBus,
    clock: Clock,
    cancel: CancelToken,
    checked: AwsAccount | None,
) -> RunContext:
    run_record = journal.get_run(run_id)
    wants_database = settings.kinds is None or "rds" in settings.kinds
    started = process_recorder(
        lambda kind, resource, what: journal.record_undo(run_id, "source", kind, resource, what),
        journal.update_undo,
    )
    return RunContext(
        config=config,
        run_id=run_id,
        journal=journal,
        events=events,
        clock=clock,
        cancel=cancel,
        deadline=settings.deadline_value,
        directory=Path(config.workspace) / "runs" / run_id,
        open_source=lambda: open_source(
            config, with_database=wants_database, checked=checked, on_cluster_started=started
        ),
        open_destinations=lambda: open_destinations(config),
        apply_changes=settings.yes or settings.command == "drill" or config.source.aws.sandbox,
        force_changes=settings.force,
        started_at=run_record.started_at if run_record else None,
        open_dns=_dns_opener(config),
    )


# -- dry run -------------------------------------------------------------------


def preview_run(
    config: Config, settings: RunSettings, clock: Clock | None = None
) -> list[StepPreview]:
    """What the run would do, step by step; reads the config only and writes nothing."""
    run = RunContext(
        config=config,
        run_id="(dry run)",
        journal=None,  # type: ignore[arg-type]  # a preview never touches the journal
        events=EventBus(),
        clock=clock or SystemClock(),
        cancel=CancelToken(),
        deadline=settings.deadline_value,
        directory=Path(config.workspace),
    )
    return Runner(run, plan_for(settings)).preview()


def plan_preview(config: Config, settings: RunSettings, clock: Clock | None = None) -> Any:
    """The deadline plan a run would start with (``orchestrator.plan.forecast``): sizes
    every kind's work from the source, calibrates, plans against the deadline.

    Reads the source and the workspace's journal (for the last drill's and run's
    rates) if there is one; writes nothing. Returns a ``DeadlinePlan``.
    """
    from orchestrator.export.steps import prioritizer_for
    from orchestrator.plan.planning import make_plan

    clock = clock or SystemClock()
    path = Path(config.workspace) / "journal.sqlite"
    journal = Journal(path, clock=clock) if path.is_file() else None
    try:
        run = RunContext(
            config=config,
            run_id="(dry run)",
            journal=None,  # type: ignore[arg-type]  # only the priorities are read
            events=EventBus(),
            clock=clock,
            cancel=CancelToken(),
            deadline=settings.deadline_value,
            directory=Path(config.workspace),
        )
        kinds = prioritizer_for(run).order_kinds(list(settings.kinds or exporter_kinds()))
        with open_source(config) as account:
            plan, _model = make_plan(
                account=account,
                prioritizer=prioritizer_for(run),
                kinds=kinds,
                part_size=config.transfer.part_size,
                concurrency=config.transfer.concurrency,
                bwlimit=config.transfer.bwlimit,
                deadline=settings.deadline_value,
                clock=clock,
                journal=journal,
            )
        return plan
    finally:
        if journal is not None:
            journal.close()


# -- running -------------------------------------------------------------------


#: Packages the steps import lazily (to keep start-up short) and that import each
#: other in circles. Two lanes importing one at once in their own threads can meet
#: Python's import-lock deadlock detection, which fails one of them
#: (``_DeadlockError`` in libcloud.common.types, once, in a resumed run's place
#: step beside its export): they are imported here, before the lanes start.
LANE_MODULES = (
    "libcloud.common.types",
    "libcloud.common.base",
    "libcloud.compute.base",
    "libcloud.storage.base",
    "libcloud.dns.base",
)


def _import_lane_modules() -> None:
    for name in LANE_MODULES:
        importlib.import_module(name)


def execute_run(
    config: Config,
    settings: RunSettings,
    *,
    events: EventBus | None = None,
    clock: Clock | None = None,
    cancel: CancelToken | None = None,
    resume_run_id: str | None = None,
) -> RunOutcome:
    """Run (or carry on) a command's steps and write its report. Never raises for a
    failed step: the outcome says how the run ended (exit codes as the README's)."""
    events = events or EventBus()
    clock = clock or SystemClock()
    cancel = cancel or CancelToken()
    checked = check_source(config)
    journal = workspace_journal(config, clock)
    lock = _lock_workspace(Path(config.workspace))
    try:
        journal.keep_backup()
        if resume_run_id:
            run_id = resume_run_id
            journal.reopen_run(run_id, to_json(settings))
        else:
            run_id = journal.start_run(settings.command, settings.deadline, to_json(settings))
        sweep_leftovers(journal, config, clock)
        if config.source.aws.sandbox:
            config = with_sandbox_recipient(config)
        run = _context(config, settings, run_id, journal, events, clock, cancel, checked)
        if settings.command == "drill":
            # Never the real destinations: a scratch prefix of each, cleaned up at the end;
            # on the host, names of its own.
            run.open_destinations = lambda: scratch_destinations(run_id, open_destinations(config))
            run.scratch_suffix = f"-drill-{run_id.lower()}"
        run.directory.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(run.directory / "exitplan.log")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logging.getLogger().addHandler(handler)
        # A sample a second: short exports still get their "10% in" prediction graded.
        recorder = ReportRecorder(clock, interval_s=1.0)
        events.subscribe(recorder)
        watchdog = Watchdog(run.deadline, clock, cancel).start() if run.deadline else None
        try:
            runner = Runner(run, plan_for(settings))
            _import_lane_modules()
            with contextlib.suppress(Cancelled):
                runner.execute()
            cleanup = _drill_cleanup(run, config, clock) if settings.command == "drill" else ()
            run.close()  # the sandbox stops the servers it started; settle them below
            _leave_nothing_running(run, config, clock)
            return _finish(run, settings, runner, recorder, cleanup)
        finally:
            if watchdog is not None:
                watchdog.stop()
            run.close()
            logging.getLogger().removeHandler(handler)
            handler.close()
    finally:
        journal.close()
        lock.close()


def _lock_workspace(workspace: Path) -> Any:
    """One run at a time per workspace: a second one would fight the first over its items."""
    handle = (workspace / "run.lock").open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise ConfigError(
            f"another exitplan run is using the workspace {workspace}: wait for it to end "
            "(`exitplan status`), or pass --workspace to run apart from it"
        ) from None
    return handle


def _leave_nothing_running(run: RunContext, config: Config, clock: Clock) -> None:
    """Stop (or settle, when already stopped) the servers this run started, and drop its
    scratch space: a finished run leaves no process and no database contents behind."""
    context = UndoContext(config, clock)
    try:
        rollback(run.journal, run.run_id, context, kinds=PROCESS_UNDO_KINDS)
    finally:
        context.close()
    remove_scratch(run.directory / "scratch")


def _drill_cleanup(run: RunContext, config: Config, clock: Clock) -> tuple[CleanupOutcome, ...]:
    """Remove everything the drill made, journaled as the step ``cleanup`` (it can fail)."""
    run.journal.start_step(run.run_id, "cleanup")
    context = UndoContext(config, clock, open_source=lambda: open_source(config))
    try:
        outcomes = clean_up(run, context)
    finally:
        context.close()
    failed = [o for o in outcomes if o.status != "removed"]
    run.journal.finish_step(
        run.run_id,
        "cleanup",
        "failed" if failed else "done",
        f"{len(outcomes) - len(failed)} removed, {len(failed)} left behind",
    )
    return outcomes


def _finish(
    run: RunContext,
    settings: RunSettings,
    runner: Runner,
    recorder: ReportRecorder,
    cleanup: tuple[CleanupOutcome, ...] = (),
) -> RunOutcome:
    finished = run.clock.now()
    counts = run.journal.item_counts(run.run_id)
    failed_steps = [r.step for r in runner.results.values() if r.status == "failed"]
    deadline = run.deadline
    if run.cancel.reason is CancelReason.DEADLINE or (
        deadline is not None and finished > deadline.at
    ):
        status, code = "deadline-missed", EXIT_DEADLINE_MISSED
    elif run.cancel.is_set():
        status, code = "interrupted", EXIT_INTERRUPTED
    elif counts.get("descoped"):
        # The planner left work out to meet the deadline: the report says what and why.
        status, code = "deadline-missed", EXIT_DEADLINE_MISSED
    elif failed_steps or counts["failed"] or counts["in-flight"]:
        status, code = "failed", EXIT_FAILED
    else:
        status, code = "done", EXIT_OK
    run.journal.finish_run(run.run_id, status)
    destinations = []
    with contextlib.suppress(Exception):  # a destination that never opened has nothing to show
        destinations = [{"name": d.name, "where": d.store.describe()} for d in run.destinations()]
    recorder.close()
    plan = run.outputs.get("plan")
    report = report_from_journal(
        run.journal,
        run.run_id,
        finished_at=finished,
        status=status,
        safety_margin=timedelta(seconds=settings.safety_margin_s),
        destinations=destinations,
        plan=[to_json(k) for k in plan.kinds] if isinstance(plan, PlanOutput) else [],
        exit_code=code,
    )
    probe = run.outputs.get("probe")
    place = run.outputs.get("place")
    report = replace(
        report,
        placement=placement_for_report(
            probe if isinstance(probe, ProbeReport) else None,
            place if isinstance(place, PlaceOutput) else None,
        ),
        service=service_for_report(run.outputs),
        dns=dns_for_report(run.outputs),
        replay=replay_steps_for_report(run.journal, run.run_id),
        projections=recorder.projections(),
        prediction_errors=prediction_errors(run, plan, recorder.projections()),
        throughput=recorder.throughput(),
        warnings=recorder.warnings(),
        stopped_by=run.cancel.describe() if run.cancel.is_set() else None,
        reused_steps=tuple(r.step for r in runner.results.values() if r.status == "reused"),
        to_roll_back=tuple(
            e.description for e in run.journal.undo_entries(run.run_id, ("pending", "failed"))
        ),
    )
    if settings.command == "drill":
        report, status, code = _judge_drill(run, settings, report, cleanup, status, code)
        run.journal.finish_run(run.run_id, status)
    files = write_reports(run.directory, report)
    return RunOutcome(run.run_id, status, code, report.to_dict(), files.json)


def prediction_errors(
    run: RunContext, plan: Any, projections: tuple[ProjectionSample, ...]
) -> tuple[PredictionError, ...]:
    """How far the planner was from the export's actual finish: the plan made before
    anything ran, and the projection made a tenth of the way in (after calibration
    and the first measurements). Empty when the run had no deadline plan or the
    export did not finish."""
    deadline_plan = getattr(plan, "deadline_plan", None)
    export = run.journal.step(run.run_id, "export")
    if deadline_plan is None or export is None or export.finished_at is None:
        return ()
    if export.status not in ("done", "failed"):
        return ()
    actual = export.finished_at
    errors = [
        PredictionError(
            scope="export: the plan",
            predicted_at=deadline_plan.made_at,
            predicted_finish=deadline_plan.finish_p50,
            actual_finish=actual,
            predicted_finish_p90=deadline_plan.finish_p90,
        )
    ]
    started = export.started_at
    if started is not None and actual > started:
        tenth = started + (actual - started) / 10
        # The first projection a tenth of the way in that still looks ahead (one
        # repeated from an earlier re-plan may be at or behind its own moment).
        ahead = max(1.0, 0.05 * (actual - started).total_seconds())
        during = [
            p
            for p in projections
            if p.p50_finish is not None
            and tenth <= p.at <= actual
            and (p.p50_finish - p.at).total_seconds() >= ahead
        ]
        if during:
            sample = during[0]
            assert sample.p50_finish is not None
            errors.append(
                PredictionError(
                    scope="export: 10% in",
                    predicted_at=sample.at,
                    predicted_finish=sample.p50_finish,
                    actual_finish=actual,
                    predicted_finish_p90=sample.p90_finish,
                )
            )
    return tuple(errors)


def _judge_drill(
    run: RunContext,
    settings: RunSettings,
    report: RunReport,
    cleanup: tuple[CleanupOutcome, ...],
    status: str,
    code: int,
) -> tuple[RunReport, str, int]:
    """A drill's figures and objectives; exit 3 when one is missed, 1 when cleanup failed."""
    objectives = getattr(run.config, "drill", None)
    report = replace(
        report,
        scenario=settings.scenario,
        drill=measure(run, notice_s=settings.notice_s or 0.0),
        objectives=None
        if objectives is None
        else Objectives(
            rto_s=objectives.rto.total_seconds() if objectives.rto else None,
            rpo_s=objectives.rpo.total_seconds() if objectives.rpo else None,
            every_s=objectives.every.total_seconds() if objectives.every else None,
        ),
        cleanup=cleanup,
        trend=tuple(
            TrendPoint(
                r.run_id,
                r.started_at,
                str(r.figures.get("status", "")),
                r.figures.get("rto_s"),
                r.figures.get("bytes_verified"),
            )
            for r in run.journal.drills()
            if r.run_id != run.run_id
        ),
    )
    missed = [c.name for c in report.objective_checks() if c.met is False and c.name != "deadline"]
    if report.rto_s is None:
        missed.insert(0, "service never healthy")
    if code == EXIT_OK and missed:
        status, code = "objective-missed", EXIT_DEADLINE_MISSED
    if any(c.status != "removed" for c in cleanup) and code in (EXIT_OK, EXIT_DEADLINE_MISSED):
        status, code = "failed", EXIT_FAILED
    report = replace(report, status=status, exit_code=code, verdict=_verdict(status, missed))
    keep(run, report)
    return report, status, code


def _verdict(status: str, missed: list[str]) -> str:
    if status == "done":
        return "passed: the exit plan works"
    if missed:
        return "failed: missed " + ", ".join(missed)
    return f"failed: {status}"


def sweep_leftovers(journal: Journal, config: Config, clock: Clock) -> list[UndoOutcome]:
    """What killed earlier runs left: servers they started (their owner is gone) are
    stopped, and their scratch space (dumps: database contents in clear) removed.

    Called with the workspace locked, so no other run of it is alive.
    """
    outcomes: list[UndoOutcome] = []
    context = UndoContext(config, clock)
    try:
        for run_id in journal.runs_with_pending_undo():
            for entry in journal.undo_entries(run_id, ("pending", "failed")):
                if entry.kind in PROCESS_UNDO_KINDS and not owner_alive(entry.resource):
                    outcomes.extend(
                        rollback(journal, run_id, context, kinds=frozenset({entry.kind}))
                    )
                    break
    finally:
        context.close()
    for scratch in sorted((Path(config.workspace) / "runs").glob("*/scratch")):
        remove_scratch(scratch)
    return outcomes


# -- resume --------------------------------------------------------------------


def recorded_run(journal: Journal, run_id: str | None) -> RunRecord:
    run = journal.get_run(run_id)
    if run is None:
        raise ConfigError(
            f"no run {run_id!r} in {journal.path}" if run_id else f"no runs in {journal.path}"
        )
    return run


def recorded_settings(run: RunRecord) -> RunSettings:
    try:
        return from_json(RunSettings, run.invocation)
    except (ValueError, TypeError, KeyError):
        raise ConfigError(
            f"run {run.id} was started by an older exitplan whose settings this one cannot "
            "read; start a new run (verified objects are not copied again)"
        ) from None


def config_for(settings: RunSettings) -> Config:
    """The config a recorded run used: its file again, or the sandbox at the same place."""
    if settings.config_file:
        config = load_config(Path(settings.config_file))
    else:
        config = default_sandbox_config(Path(settings.sandbox_base or Path.cwd()))
    transfer = replace(
        config.transfer,
        concurrency=settings.concurrency,
        bwlimit=settings.bwlimit,
        workers=settings.workers,
    )
    return replace(
        config,
        workspace=Path(settings.workspace),
        transfer=transfer,
        safety_margin=timedelta(seconds=settings.safety_margin_s),
    )


def resumed(run: RunRecord, overrides: SettingOverrides) -> tuple[Config, RunSettings]:
    """The recorded settings with ``overrides`` applied, and the config to run them with."""
    settings = recorded_settings(run)
    changes: dict[str, Any] = {}
    if overrides.deadline is not None:
        changes["deadline"] = overrides.deadline
    if overrides.concurrency is not None:
        changes["concurrency"] = overrides.concurrency
    if overrides.bwlimit_given:
        changes["bwlimit"] = overrides.bwlimit
    if overrides.kinds is not None:
        check_kinds(overrides.kinds)
        changes["kinds"] = overrides.kinds
    if overrides.workers is not None:
        changes["workers"] = overrides.workers
    settings = replace(settings, **changes)
    return config_for(settings), settings


def reopen_for_repair(journal: Journal, damaged: int) -> str | None:
    """After ``verify`` found damage: the newest run's export no longer holds, so the
    run and its export step are marked failed and ``resume`` copies the damaged items."""
    newest = journal.get_run()
    if newest is None:
        return None
    why = f"verify found {damaged} object(s) damaged at a destination"
    if journal.step(newest.id, "export") is not None:
        journal.finish_step(newest.id, "export", "failed", why)
    if newest.status == "done":
        journal.finish_run(newest.id, "failed")
    return newest.id


# -- status ----------------------------------------------------------------------


@dataclass(frozen=True)
class StatusView:
    run: RunRecord
    settings: RunSettings | None
    items: dict[str, int]
    kinds: list[Any]
    steps: list[Any]
    undo_pending: int
    #: For a run still going: the projection; for a finished one: None.
    projected_finish: datetime | None
    will_make_it: bool | None
    bytes_per_second: float
    remaining_bytes: int
    #: For a finished run: the margin it kept before the deadline (negative: missed).
    margin_kept: timedelta | None
    #: The deadline scheduler's latest outlook (P50/P90 finish, cutoff, margin,
    #: verdict; ``orchestrator.plan.scheduler.Outlook`` as JSON), if the run has one.
    outlook: dict[str, Any] | None = None
    #: (kind, tier, reason, items, bytes) of what the planner left out.
    descoped: tuple[tuple[str, str, str, int, int], ...] = ()


def run_status(journal: Journal, run_id: str | None, clock: Clock) -> StatusView:
    run = recorded_run(journal, run_id)
    settings = None
    with contextlib.suppress(ConfigError):
        settings = recorded_settings(run)
    deadline = (
        settings.deadline_value if settings else (Deadline(run.deadline) if run.deadline else None)
    )
    kinds = journal.progress(run.id)
    end = run.finished_at or clock.now()
    outlook = forecast(
        remaining_bytes=sum(k.remaining_bytes for k in kinds),
        copied_bytes=sum(k.copied_bytes for k in kinds),
        elapsed_s=(end - run.started_at).total_seconds(),
        now=clock.now(),
        deadline=deadline,
    )
    finished = run.finished_at is not None and run.status != "running"
    margin = deadline.at - run.finished_at if finished and deadline and run.finished_at else None
    return StatusView(
        run=run,
        settings=settings,
        items=journal.item_counts(run.id),
        kinds=kinds,
        steps=journal.steps(run.id),
        undo_pending=len(journal.undo_entries(run.id, ("pending", "failed"))),
        projected_finish=None if finished else outlook.projected_finish,
        will_make_it=None if finished else outlook.will_make_it,
        bytes_per_second=outlook.bytes_per_second,
        remaining_bytes=outlook.remaining_bytes,
        margin_kept=margin,
        outlook=journal.plan_outlook(run.id),
        descoped=tuple(journal.descoped_groups(run.id)),
    )


# -- rollback --------------------------------------------------------------------


def rollback_run(
    journal: Journal, run_id: str | None, clock: Clock, *, config: Config | None = None
) -> tuple[str, list[UndoOutcome]]:
    """Undo what the run created outside its workspace, newest first."""
    run = recorded_run(journal, run_id)
    settings = recorded_settings(run)
    config = config or config_for(settings)
    context = UndoContext(config, clock, open_source=lambda: open_source(config))
    try:
        return run.id, rollback(journal, run.id, context)
    finally:
        context.close()


# -- signals ---------------------------------------------------------------------


@contextlib.contextmanager
def cancel_on_signals(
    cancel: CancelToken, on_first: Callable[[CancelReason], None]
) -> Iterator[None]:
    """SIGINT and SIGTERM cancel the run (journal kept, `resume` carries on); a second one quits."""

    def handler(signum: int, frame: object) -> None:
        if cancel.is_set():
            raise KeyboardInterrupt
        reason = CancelReason.INTERRUPTED if signum == signal.SIGINT else CancelReason.TERMINATED
        on_first(reason)
        cancel.cancel(reason)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def step_ids(settings: RunSettings) -> list[str]:
    return [step.id for step in flatten(plan_for(settings))]
