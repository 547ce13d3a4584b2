"""Steps and the runner: every command is a list of journaled steps.

A step has a stable id, an inputs key (a hash of its own inputs and of the
outputs of the steps it reads), a typed output kept in the journal, and a
status. The runner alone decides, in one place:

- **resume**: a step already ``done`` with the same inputs key is not run
  again; its output is read back, typed, for the steps after it. So a
  resumed ``migrate`` makes no second inventory, no second probe and no
  second server;
- **dry run**: each step says what it would do (``preview``) and nothing is
  executed or written;
- **what a failure stops**: a failed step that later steps read from makes
  them ``skipped`` with the reason; steps that do not depend on it still run
  (a failed probe does not stop the export).

Steps may run side by side (``Parallel``): the export does not wait for a
new server to boot. Whatever a step creates outside the workspace it records
with ``RunContext.record_undo`` the moment it exists.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from orchestrator.clock import Clock
from orchestrator.config import Config
from orchestrator.errors import Cancelled, ExitplanError
from orchestrator.events import EventBus, StepFinished, StepStarted
from orchestrator.run.cancel import CancelToken
from orchestrator.run.deadline import Deadline
from orchestrator.run.journal import Journal
from orchestrator.run.serde import from_json, to_json

if TYPE_CHECKING:
    from orchestrator.export.transfer import Destination
    from providers.aws import AwsAccount

log = logging.getLogger(__name__)

OutputT = TypeVar("OutputT")


class StepSkipped(ExitplanError):
    """The step does not apply to this run (no candidates, no playbook); the message says why."""


class StepFailed(ExitplanError):
    """The step ran and failed; ``output`` is what it achieved, kept for the report."""

    def __init__(self, message: str, output: Any = None) -> None:
        super().__init__(message)
        self.output = output


@dataclass
class RunContext:
    """Everything a step of one run may use. Built once per run by the command."""

    config: Config
    run_id: str
    journal: Journal
    events: EventBus
    clock: Clock
    cancel: CancelToken
    deadline: Deadline | None
    #: ``<workspace>/runs/<run id>``: the run's reports, logs and scratch space.
    directory: Path
    #: Outputs of the steps done so far (this invocation or an earlier one).
    outputs: dict[str, Any] = field(default_factory=dict)
    #: A drill's ``-drill-<run id>``: in the names of what it makes on hosts, so it never
    #: touches a real exit's service ("" for migrate).
    scratch_suffix: str = ""
    #: Whether changes outside the workspace that are dry runs by default (DNS) are made:
    #: ``migrate --yes``, a drill (scratch targets), the sandbox. And ``--force``.
    apply_changes: bool = False
    force_changes: bool = False
    #: When the run was first started (the notice, for the DNS schedule).
    started_at: datetime | None = None
    #: Opens the destination DNS (a context manager): ``dns_target()`` calls it once.
    open_dns: Callable[[], contextlib.AbstractContextManager[Any]] | None = None
    _dns: Any = None
    #: Opens the source account (a context manager): ``source()`` calls it once.
    open_source: Callable[[], contextlib.AbstractContextManager[AwsAccount]] | None = None
    #: Builds the destinations: ``destinations()`` calls it once.
    open_destinations: Callable[[], list[Destination]] | None = None
    _resources: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _source: AwsAccount | None = None
    _destinations: list[Destination] | None = None

    def source(self) -> AwsAccount:
        """The source account, opened on first use (resume may never need it)."""
        with self._lock:
            if self._source is None:
                if self.open_source is None:
                    raise RuntimeError("this run has no source account")
                self._source = self._resources.enter_context(self.open_source())
            return self._source

    def dns_target(self) -> Any:
        """The destination DNS provider (and its server), opened on first use."""
        with self._lock:
            if self._dns is None:
                if self.open_dns is None:
                    raise RuntimeError("this run has no DNS target")
                self._dns = self._resources.enter_context(self.open_dns())
            return self._dns

    def destinations(self) -> list[Destination]:
        with self._lock:
            if self._destinations is None:
                if self.open_destinations is None:
                    raise RuntimeError("this run has no destinations")
                self._destinations = self.open_destinations()
            return self._destinations

    def output(self, step_id: str, kind: type[OutputT]) -> OutputT:
        """The typed output of an earlier step (raises KeyError if it is not done)."""
        value = self.outputs[step_id]
        if not isinstance(value, kind):
            raise TypeError(f"step {step_id!r} output is {type(value).__name__}, not {kind}")
        return value

    def record_undo(
        self, step_id: str, kind: str, resource: Mapping[str, Any], description: str
    ) -> int:
        """Record how to remove something this run just created; durable at once."""
        return self.journal.record_undo(self.run_id, step_id, kind, resource, description)

    def close(self) -> None:
        self._resources.close()


class Step(ABC, Generic[OutputT]):
    """One journaled step of a command."""

    #: Stable id: the journal's key, and what ``--from``/reports name.
    id: ClassVar[str]
    #: What it does, for people.
    title: ClassVar[str]
    #: The dataclass the output is read back as on resume.
    output_type: ClassVar[type[Any]]
    #: Steps whose outputs this one reads: if one is not done, this one is skipped.
    after: ClassVar[tuple[str, ...]] = ()

    def inputs(self, run: RunContext) -> Mapping[str, Any]:
        """What, besides the outputs of ``after``, decides this step's result."""
        return {}

    def preview(self, run: RunContext) -> str:
        """What the step would do, for a dry run. Must change nothing."""
        return self.title

    @abstractmethod
    def execute(self, run: RunContext) -> OutputT:
        """Do the step; raise StepSkipped, StepFailed, Cancelled or ExitplanError."""

    def summary(self, output: OutputT) -> str:
        """One line for the progress display and the report."""
        return ""


@dataclass(frozen=True)
class Parallel:
    """Lanes of steps that run side by side; the run goes on when every lane has ended.

    Within a lane, steps run in order. ``Parallel([inventory, probe, place],
    [export, manifest])`` boots the new server while the data moves.
    """

    lanes: tuple[tuple[Step[Any], ...], ...]

    def __init__(self, *lanes: Sequence[Step[Any]]) -> None:
        object.__setattr__(self, "lanes", tuple(tuple(lane) for lane in lanes))

    @property
    def steps(self) -> tuple[Step[Any], ...]:
        return tuple(step for lane in self.lanes for step in lane)


Plan = Sequence[Step[Any] | Parallel]


@dataclass(frozen=True)
class StepResult:
    step: str
    status: str  # done | reused | failed | skipped | cancelled
    detail: str = ""


@dataclass(frozen=True)
class StepPreview:
    step: str
    title: str
    what: str


def flatten(plan: Plan) -> Iterator[Step[Any]]:
    for entry in plan:
        if isinstance(entry, Parallel):
            yield from entry.steps
        else:
            yield entry


def inputs_key(step: Step[Any], run: RunContext) -> str:
    """A hash of the step's own inputs and the outputs it reads from earlier steps."""
    material = {
        "step": step.id,
        "inputs": to_json(step.inputs(run)),
        "after": {dep: to_json(run.outputs.get(dep)) for dep in step.after},
    }
    text = json.dumps(material, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class Runner:
    """Runs a plan of steps for one run, journaling each; see the module docstring."""

    def __init__(self, run: RunContext, plan: Plan) -> None:
        ids = [step.id for step in flatten(plan)]
        if len(ids) != len(set(ids)):
            raise ValueError(f"step ids repeat in {ids}")
        self.run = run
        self.plan = plan
        self.results: dict[str, StepResult] = {}

    def preview(self) -> list[StepPreview]:
        """The dry run: what every step would do; nothing is executed or journaled."""
        return [StepPreview(s.id, s.title, s.preview(self.run)) for s in flatten(self.plan)]

    def execute(self) -> dict[str, StepResult]:
        """Run every step not already done; stops at a cancel (``Cancelled`` propagates)."""
        for entry in self.plan:
            self.run.cancel.raise_if_set()
            if isinstance(entry, Parallel):
                self._parallel(entry.lanes)
            else:
                self._one(entry)
        return self.results

    def _lane(self, steps: Sequence[Step[Any]]) -> None:
        for step in steps:
            self.run.cancel.raise_if_set()
            self._one(step)

    def _parallel(self, lanes: Sequence[Sequence[Step[Any]]]) -> None:
        with ThreadPoolExecutor(len(lanes), thread_name_prefix="exitplan-lane") as pool:
            futures = [pool.submit(self._lane, lane) for lane in lanes]
            errors = [f.exception() for f in futures]
        # A cancel reaches every lane; report it as the cancel it is.
        for error in sorted((e for e in errors if e), key=lambda e: not isinstance(e, Cancelled)):
            raise error

    def _one(self, step: Step[Any]) -> None:
        run = self.run
        missing = [dep for dep in step.after if dep not in run.outputs]
        if missing:
            why = ", ".join(
                f"{dep} {self.results[dep].status if dep in self.results else 'not done'}"
                for dep in missing
            )
            run.journal.start_step(run.run_id, step.id)
            self._settle(step, "skipped", f"needs {why}")
            return
        key = inputs_key(step, run)
        record = run.journal.step(run.run_id, step.id)
        if record is not None and record.status == "done" and record.inputs_key == key:
            try:
                run.outputs[step.id] = from_json(step.output_type, record.output)
            except (ValueError, TypeError, KeyError):
                log.warning(
                    "step %s: the journal's output is unreadable; running it again", step.id
                )
            else:
                self.results[step.id] = StepResult(step.id, "reused", record.detail)
                run.events.emit(StepFinished(step=step.id, status="reused", detail=record.detail))
                return
        run.journal.start_step(run.run_id, step.id, key)
        run.events.emit(StepStarted(step=step.id, detail=step.title))
        try:
            output = step.execute(run)
        except StepSkipped as exc:
            self._settle(step, "skipped", str(exc))
        except StepFailed as exc:
            if exc.output is not None:  # what it achieved is still there for later steps
                run.outputs[step.id] = exc.output
            self._settle(step, "failed", str(exc), output=exc.output)
        except Cancelled:
            self._settle(step, "cancelled", run.cancel.describe())
            raise
        except ExitplanError as exc:
            self._settle(step, "failed", str(exc))
        except Exception as exc:  # a bug in one step must not lose the journal of the others
            log.exception("step %s failed unexpectedly", step.id)
            self._settle(step, "failed", f"internal error: {type(exc).__name__}: {exc}")
        else:
            run.outputs[step.id] = output
            self._settle(step, "done", step.summary(output), output=output)

    def _settle(
        self,
        step: Step[Any],
        status: str,
        detail: str,
        *,
        output: Any = None,
    ) -> None:
        self.run.journal.finish_step(
            self.run.run_id, step.id, status, detail, None if output is None else to_json(output)
        )
        self.results[step.id] = StepResult(step.id, status, detail)
        self.run.events.emit(StepFinished(step=step.id, status=status, detail=detail))
