"""The whole path: inventory -> plan -> export -> (probe -> replay -> verify) -> report.

``run_migration`` is what ``exitplan migrate`` and ``exitplan resume`` call.
Each step is journaled; an interrupted run is carried on by calling it again
with the same run id, and verified items are never copied again. Probing
hosts and replaying playbooks plug in at the seams named in ``SEAMS``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from orchestrator.clock import Clock, SystemClock
from orchestrator.config import Config
from orchestrator.errors import Cancelled, ConfigError
from orchestrator.events import EventBus, RunWarning, StepFinished, StepStarted
from orchestrator.export.exporters.base import ExportContext, exporter_kinds, load_exporter
from orchestrator.export.manifest import publish_manifests
from orchestrator.export.transfer import CancelToken, Destination, TransferEngine, TransferSettings
from orchestrator.inventory import Fact, InventorySummary, collect_inventory, fact_to_json
from orchestrator.inventory import summarize_inventory as summary_of
from orchestrator.placement.probe import (
    EC2_INSTANCE_TYPES,
    NoCandidateLeft,
    Requirements,
    choose_and_provision,
    compute_providers_from_config,
    probe_candidates,
    requirements_from_inventory,
)
from orchestrator.plan.priorities import Prioritizer, Rule
from orchestrator.report.run_report import build_report, write_report_json
from orchestrator.run.journal import Journal
from orchestrator.run.progress import RunProgress
from providers.aws import AwsAccount
from providers.interfaces.object_store import ObjectStore
from providers.registry import get_provider_spec, load_provider_class

log = logging.getLogger(__name__)

#: Later steps of the path, not yet wired to this command: (step, why skipped).
SEAMS = {
    "replay": "no playbook replayed yet: the service is not brought up by this run",
    "verify-target": "no target to verify until a playbook has been replayed",
}
#: How long the probe may take, all candidates together.
PROBE_BUDGET_S = 120.0

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_DEADLINE_MISSED = 3


@dataclass
class MigrationResult:
    run_id: str
    status: str  # done | failed | cancelled | deadline-missed
    exit_code: int
    report: dict[str, Any]
    report_path: Path


@dataclass
class MigrationRequest:
    config: Config
    deadline: datetime | None
    #: Set to carry on an earlier run instead of starting a new one.
    resume_run_id: str | None = None
    invocation: dict[str, Any] = field(default_factory=dict)
    #: Only these kinds of resource (None: every kind).
    kinds: tuple[str, ...] | None = None
    #: ``exitplan export`` moves the data and stops there: no inventory of
    #: the service, no probe of candidate hosts.
    whole_path: bool = True


def workspace_journal(config: Config, clock: Clock | None = None) -> Journal:
    return Journal(Path(config.workspace) / "journal.sqlite", clock=clock)


def run_dir(config: Config, run_id: str) -> Path:
    return Path(config.workspace) / "runs" / run_id


@contextlib.contextmanager
def open_source(config: Config, *, with_database: bool = False) -> Iterator[AwsAccount]:
    """The source account: the in-process sandbox, or AWS (or a moto server) via boto3."""
    aws = config.source.aws
    if aws.sandbox:
        from orchestrator.sandbox.account import running_sandbox

        # A real PostgreSQL stands behind the sandbox's RDS instance where
        # the machine has one; without it the sandbox still runs.
        with running_sandbox(postgres=with_database) as sandbox:
            yield sandbox.account
        return
    account = AwsAccount(
        regions=aws.regions,
        profile=aws.profile,
        endpoint_url=aws.endpoint_url,
        max_pool_connections=max(10, config.transfer.concurrency + 8),
        direct_http=True,
    )
    account.check_credentials()
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


def prioritizer_for(config: Config) -> Prioritizer:
    return Prioritizer([Rule(rule.tier, dict(rule.match)) for rule in config.priorities])


def plan_summary(prioritizer: Prioritizer, kinds: list[str]) -> list[dict[str, Any]]:
    return [
        {"order": index + 1, "kind": kind, "first_tier_rank": prioritizer.kind_rank(kind)}
        for index, kind in enumerate(prioritizer.order_kinds(kinds))
    ]


def run_migration(
    request: MigrationRequest,
    *,
    events: EventBus | None = None,
    clock: Clock | None = None,
    cancel: CancelToken | None = None,
) -> MigrationResult:
    """Run (or resume) the whole path and return its result and report."""
    config = request.config
    events = events or EventBus()
    clock = clock or SystemClock()
    cancel = cancel or CancelToken()
    # The source is opened first: missing credentials or a bad profile must
    # stop the run before anything is written.
    wants_database = request.kinds is None or "rds" in request.kinds
    with open_source(config, with_database=wants_database) as account:
        destinations = open_destinations(config)
        journal = workspace_journal(config, clock)
        try:
            if request.resume_run_id:
                run_id = request.resume_run_id
                journal.reopen_run(run_id)
            else:
                command = "migrate" if request.whole_path else "export"
                run_id = journal.start_run(command, request.deadline, request.invocation)
            directory = run_dir(config, run_id)
            directory.mkdir(parents=True, exist_ok=True)
            handler = logging.FileHandler(directory / "exitplan.log")
            handler.setFormatter(
                logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
            )
            logging.getLogger().addHandler(handler)
            try:
                return _run(
                    request,
                    account,
                    destinations,
                    run_id,
                    journal,
                    events,
                    clock,
                    cancel,
                    directory,
                )
            finally:
                logging.getLogger().removeHandler(handler)
                handler.close()
        finally:
            journal.close()


def _run(
    request: MigrationRequest,
    account: AwsAccount,
    destinations: list[Destination],
    run_id: str,
    journal: Journal,
    events: EventBus,
    clock: Clock,
    cancel: CancelToken,
    directory: Path,
) -> MigrationResult:
    config = request.config
    prioritizer = prioritizer_for(config)
    progress = RunProgress(
        run_id=run_id,
        journal=journal,
        events=events,
        clock=clock,
        deadline=request.deadline,
        safety_margin=config.safety_margin,
        on_deadline=lambda: cancel.cancel("the deadline passed"),
    )
    plan = plan_summary(prioritizer, list(request.kinds or exporter_kinds()))
    context = ExportContext(
        run_id=run_id,
        scratch_dir=directory / "scratch",
        recipients={d.name: d.recipients for d in config.destinations},
        part_size=config.transfer.part_size,
        sandbox=config.source.aws.sandbox,
    )
    failed_steps: list[str] = []
    warnings: list[str] = []

    def step(name: str) -> _Step:
        return _Step(name, run_id, journal, events)

    inventory: TakenInventory | None = None
    if not request.whole_path:
        journal.start_step(run_id, "inventory")
        journal.finish_step(run_id, "inventory", "skipped", "exitplan export moves data only")
    else:
        with step("inventory") as s:
            try:
                inventory = take_inventory(account, directory / "inventory.jsonl")
                found = inventory.summary.as_counts()
                s.detail = ", ".join(f"{k}: {v['count']}" for k, v in sorted(found.items()))
            except Exception as exc:  # the exporters list for themselves: carry on without it
                log.exception("inventory failed")
                s.status, s.detail = "failed", f"{type(exc).__name__}: {exc}"
                events.emit(RunWarning(message=f"inventory failed, exporting anyway: {exc}"))
    with step("plan") as s:
        s.detail = " -> ".join(entry["kind"] for entry in plan)

    engine = TransferEngine(
        destinations=destinations,
        journal=journal,
        run_id=run_id,
        events=events,
        progress=progress,
        settings=TransferSettings(
            concurrency=config.transfer.concurrency, bwlimit=config.transfer.bwlimit
        ),
        cancel=cancel,
    )
    try:
        for entry in plan:
            kind = entry["kind"]
            if cancel.is_set():
                break
            with step(f"export:{kind}") as s:
                exporter = load_exporter(kind)(account, tier_of=prioritizer, context=context)
                try:
                    engine.export(exporter)
                    for message in exporter.warnings():
                        warnings.append(message)
                        events.emit(RunWarning(message=message))
                except Cancelled:
                    s.status = "cancelled"
                except Exception as exc:  # one kind failing must not stop the others
                    log.exception("export of %s failed", kind)
                    s.status = "failed"
                    s.detail = f"{type(exc).__name__}: {exc}"
                    failed_steps.append(kind)
                    events.emit(RunWarning(message=f"export of {kind} failed: {exc}"))
    finally:
        engine.close()

    with step("manifest") as s:
        # A destination that cannot take its manifest (a full disk) fails the
        # step, not the run: the run still ends with its report.
        manifests = publish_manifests(journal, destinations)
        s.detail = manifests.summary()
        if manifests.failed:
            s.status = "failed"
            failed_steps.append("manifest")

    target: dict[str, Any] = {}
    if not request.whole_path:
        journal.start_step(run_id, "probe")
        journal.finish_step(run_id, "probe", "skipped", "exitplan export moves data only")
    elif not config.candidates:
        journal.start_step(run_id, "probe")
        journal.finish_step(run_id, "probe", "skipped", "no candidates in the config")
    elif not cancel.is_set():
        with step("probe") as s:
            target = choose_target(config, inventory, request.deadline, clock, directory)
            s.detail = target["summary"]
            if not target.get("chosen"):
                s.status = "failed"
                failed_steps.append("probe")
    for name, why in SEAMS.items():
        journal.start_step(run_id, name)
        journal.finish_step(run_id, name, "skipped", why)

    finished = clock.now()
    counts = journal.item_counts(run_id)
    deadline_passed = request.deadline is not None and finished > request.deadline
    if (cancel.is_set() and cancel.reason == "the deadline passed") or deadline_passed:
        status, code = "deadline-missed", EXIT_DEADLINE_MISSED
    elif cancel.is_set():
        status, code = "cancelled", 130
    elif counts["failed"] or failed_steps or counts["in-flight"]:
        status, code = "failed", EXIT_FAILED
    else:
        status, code = "done", EXIT_OK
    journal.finish_run(run_id, status)
    report = build_report(
        journal,
        run_id,
        finished_at=finished,
        status=status,
        safety_margin=config.safety_margin,
        destinations=[{"name": d.name, "where": d.store.describe()} for d in destinations],
        plan=plan,
        seams=SEAMS,
    )
    report["warnings"] = warnings
    report["target"] = target
    report_path = directory / "report.json"
    write_report_json(report_path, report)
    return MigrationResult(run_id, status, code, report, report_path)


@dataclass
class TakenInventory:
    summary: InventorySummary
    #: EC2 instances (few): the service's hosts, which size its new home.
    instances: list[Fact]


def take_inventory(account: AwsAccount, path: Path) -> TakenInventory:
    """Stream the inventory to JSON Lines; keep the totals and the EC2 instances."""
    instances: list[Fact] = []

    def recorded() -> Iterator[Fact]:
        with path.open("w", encoding="utf-8") as out:
            for fact in collect_inventory(account):
                out.write(json.dumps(fact_to_json(fact), sort_keys=True) + "\n")
                if fact.kind == "ec2":
                    instances.append(fact)
                yield fact

    return TakenInventory(summary_of(recorded()), instances)


def service_requirements(inventory: TakenInventory | None) -> Requirements:
    """What the new home needs: the largest known instance's size, its ports, the data."""
    if inventory is None:
        return Requirements()
    known = [
        fact
        for fact in inventory.instances
        if fact.attributes.get("instance_type") in EC2_INSTANCE_TYPES
    ]
    largest = max(
        known,
        key=lambda fact: EC2_INSTANCE_TYPES[fact.attributes["instance_type"]],
        default=None,
    )
    return requirements_from_inventory(inventory.summary, largest)


def choose_target(
    config: Config,
    inventory: TakenInventory | None,
    deadline: datetime | None,
    clock: Clock,
    directory: Path,
) -> dict[str, Any]:
    """Probe every candidate, rank them, and take the best one that can be had.

    A candidate that refuses when provisioned (locked account, no capacity,
    a host that does not come up) is recorded and the next one is tried.
    The probe report is written beside the run's report.
    """
    providers = compute_providers_from_config(config.candidates)
    requirements = service_requirements(inventory)
    public_key, key_file = login_key()
    report = probe_candidates(
        list(providers.values()), requirements, budget_s=PROBE_BUDGET_S, clock=clock
    )
    (directory / "probe.json").write_text(report.to_json() + "\n", encoding="utf-8")
    ranking = json.loads(report.to_json())
    result: dict[str, Any] = {"probe": ranking, "attempts": [], "chosen": None}
    try:
        row, ready, attempts = choose_and_provision(
            report,
            providers,
            name=f"exitplan-{directory.name.lower()}",
            authorized_key=public_key,
            key_file=key_file,
            deadline=deadline or clock.now() + timedelta(hours=1),
            clock=clock,
        )
    except NoCandidateLeft as exc:
        result["attempts"] = [asdict(a) for a in exc.attempts]
        result["summary"] = f"no candidate could be had: {exc}"
        return result
    result["attempts"] = [asdict(a) for a in attempts]
    result["chosen"] = {
        "candidate": row.candidate,
        "target": row.target,
        "address": ready.address,
        "port": ready.port,
        "transport": ready.transport,
    }
    fallbacks = len(attempts) - 1
    result["summary"] = f"{row.candidate} ({row.target})" + (
        f" after {fallbacks} refusal(s)" if fallbacks else ""
    )
    return result


def login_key() -> tuple[str, Path | None]:
    """The key exitplan logs in to new servers with: (public line, private key file).

    ``$EXITPLAN_SSH_KEY_FILE`` names the private key (its ``.pub`` beside it);
    otherwise the first of ``~/.ssh/id_ed25519``, ``id_ecdsa``, ``id_rsa``
    with a ``.pub``; otherwise none, and only pre-arranged hosts can be used.
    """
    named = os.environ.get("EXITPLAN_SSH_KEY_FILE")
    candidates = (
        [Path(named)]
        if named
        else [Path.home() / ".ssh" / n for n in ("id_ed25519", "id_ecdsa", "id_rsa")]
    )
    for private in candidates:
        public = private.with_name(private.name + ".pub")
        if private.is_file() and public.is_file():
            return public.read_text(encoding="utf-8").strip(), private
    if named:
        raise ConfigError(
            f"EXITPLAN_SSH_KEY_FILE={named}: needs the private key and {named}.pub beside it"
        )
    return "", None


class _Step:
    """Journals and announces one step; the body may set ``status`` and ``detail``."""

    def __init__(self, name: str, run_id: str, journal: Journal, events: EventBus) -> None:
        self.name = name
        self.run_id = run_id
        self.journal = journal
        self.events = events
        self.status = "done"
        self.detail = ""

    def __enter__(self) -> _Step:
        self.journal.start_step(self.run_id, self.name)
        self.events.emit(StepStarted(step=self.name))
        return self

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        if exc is not None:
            self.status = "cancelled" if isinstance(exc, Cancelled) else "failed"
            self.detail = self.detail or f"{type(exc).__name__}: {exc}"
        self.journal.finish_step(self.run_id, self.name, self.status, self.detail)
        self.events.emit(StepFinished(step=self.name, status=self.status, detail=self.detail))
