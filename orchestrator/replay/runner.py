"""The journaled replay of one playbook on one host.

For each step, in order: evaluate ``if:`` and render the arguments (facts
read now), hash the rendered arguments (secrets by version, never by value),
then check -> apply -> verify. The journal (``replay_steps``) has the step
``running`` before anything changes and ``changed``/``ok``/``skipped``/
``failed`` with its registered output after; handlers a step notifies are
written as pending *before* the step is marked done, so a crash between the
two can only run a handler once more, never lose it.

A replay that did not finish (a step failed or was running when exitplan
was killed, or handlers are still pending) is carried on by the next
replay of the same run and host: steps already done with the same inputs
are not run again, and their registered outputs are read back. A replay
that did finish is checked in full the next time (facts may have drifted);
a host as the playbook wants it reports 0 changed.

``--check`` changes nothing on the host and writes nothing to the journal;
with ``--diff`` each file op shows what it would change, secrets redacted.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.errors import Cancelled, ExitplanError
from orchestrator.events import EventBus
from orchestrator.replay.artifacts import ArtifactSource
from orchestrator.replay.events import ReplayStarted, ReplayStepDone
from orchestrator.replay.hostinfo import HostFacts
from orchestrator.replay.ops import OPS
from orchestrator.replay.ops.base import Check, OpContext, coerce_args
from orchestrator.replay.playbook import Playbook, StepSpec
from orchestrator.replay.secrets import ResolvedSecrets
from orchestrator.replay.templating import (
    Redactor,
    RenderError,
    evaluate_condition,
    render_text,
    render_value,
)
from orchestrator.run.cancel import CancelToken
from orchestrator.run.journal import Journal
from providers.interfaces.host import Host

log = logging.getLogger(__name__)

#: Journal statuses of a step that is settled (a resumed replay does not run it again).
SETTLED = ("changed", "ok", "skipped")


@dataclass(frozen=True)
class ReplayOptions:
    check: bool = False
    diff: bool = False
    #: Start at this step (earlier ones' outputs come from the journal).
    from_step: str | None = None
    #: Run this step (or handler) alone, checked afresh.
    only: str | None = None
    #: Answers a ``pause``; None: nobody can (a non-interactive run fails at a pause).
    approve: Callable[[str], bool] | None = None


@dataclass(frozen=True)
class StepOutcome:
    step: str
    title: str
    status: str  # changed | ok | would-change | skipped | reused | failed
    detail: str
    diff: str = ""
    handler: bool = False
    marker: str = ""
    attempts: int = 1


@dataclass(frozen=True)
class ReplayResult:
    host: str
    playbook: str
    mode: str
    outcomes: tuple[StepOutcome, ...]
    #: Whether every step ran to its end and no handler is left pending.
    finished: bool
    #: The rendered ``service.url`` of the playbook, when it declares one.
    service_url: str | None = None
    outputs: Mapping[str, Any] = field(default_factory=dict)

    def count(self, status: str) -> int:
        return sum(1 for o in self.outcomes if o.status == status)

    @property
    def failed(self) -> list[StepOutcome]:
        return [o for o in self.outcomes if o.status == "failed"]

    def summary(self) -> str:
        parts = [
            f"{self.count(s)} {s}"
            for s in ("changed", "ok", "would-change", "reused", "skipped", "failed")
            if self.count(s) or s in ("changed", "ok")
        ]
        return f"{self.playbook} on {self.host}: " + ", ".join(parts)


#: Records an undo the moment before a change: (step id, resource, description) -> entry id.
RecordUndo = Callable[[str, dict[str, Any], str], int]


class _StepFailed(Exception):
    def __init__(self, message: str, attempts: int) -> None:
        super().__init__(message)
        self.attempts = attempts


class ReplayRunner:
    """Replays ``playbook`` on ``host``; see the module docstring."""

    def __init__(
        self,
        playbook: Playbook,
        host: Host,
        *,
        host_label: str,
        journal: Journal,
        run_id: str,
        events: EventBus,
        cancel: CancelToken,
        artifacts: ArtifactSource | None,
        secrets: ResolvedSecrets,
        redactor: Redactor,
        read_facts: Callable[[], HostFacts],
        scratch: Path,
        record_undo: RecordUndo,
        host_resource: Mapping[str, Any],
        exitplan_vars: Mapping[str, Any],
        options: ReplayOptions | None = None,
    ) -> None:
        self.playbook = playbook
        self.host = host
        self.label = host_label
        self.journal = journal
        self.run_id = run_id
        self.events = events
        self.cancel = cancel
        self.artifacts = artifacts
        self.secrets = secrets
        self.redactor = redactor
        self._read_facts = read_facts
        self._facts: HostFacts | None = None
        self.scratch = scratch
        self.record_undo = record_undo
        self.host_resource = dict(host_resource)
        self.exitplan_vars = dict(exitplan_vars)
        self.options = options or ReplayOptions()
        self.outputs: dict[str, Any] = {}
        self.outcomes: list[StepOutcome] = []
        self._notified: list[str] = []

    # -- facts and templates -------------------------------------------------

    def facts(self) -> HostFacts:
        """Facts read at most once per step, when first asked for in that step."""
        if self._facts is None:
            self._facts = self._read_facts()
        return self._facts

    def _context(self, variables: Mapping[str, Any], *, facts: bool = True) -> dict[str, Any]:
        """What templates see. ``facts``: read the host's facts (one command) for them;
        a step whose templates never name ``facts`` does not pay for that."""
        artifacts = {}
        for name, ref in self.playbook.artifacts.items():
            view: dict[str, Any] = {"key": ref.key or ref.prefix, "prefix": ref.prefix}
            if self.artifacts is not None and ref.key:
                entry = self.artifacts.entries.get(ref.key)
                if entry is not None:
                    view.update(sha256=entry.sha256, size=entry.size)
            artifacts[name] = view
        return {
            **variables,
            "secrets": dict(self.secrets.values),
            "artifacts": artifacts,
            "facts": self.facts().as_template() if facts else {},
            "steps": self.outputs,
            "host": {
                "name": self.label,
                **{
                    k: v
                    for k, v in self.host_resource.items()
                    if k in ("address", "port", "transport", "user")
                },
            },
            "exitplan": self.exitplan_vars,
        }

    def _variables(self) -> dict[str, Any]:
        """``vars`` rendered in order (each may use the ones before it, host and facts)."""
        variables: dict[str, Any] = {}
        for name, value in self.playbook.vars.items():
            variables[name] = render_value(
                value, self._context(variables, facts=_names_facts(value))
            )
        return variables

    # -- the replay --------------------------------------------------------

    def _unfinished(self) -> bool:
        records = self.journal.replay_steps(self.run_id, self.label)
        return any(r.status not in SETTLED for r in records) or bool(
            self.journal.pending_handlers(self.run_id, self.label)
        )

    def run(self) -> ReplayResult:
        """Replay the playbook; never raises for a failed step (the result says), only
        ``Cancelled`` (the journal is consistent; the next replay carries on)."""
        options = self.options
        carry_on = not options.check and options.only is None and self._unfinished()
        mode = "check" if options.check else ("continue" if carry_on else "full")
        self.events.emit(
            ReplayStarted(self.label, self.playbook.name, len(self.playbook.steps), mode)
        )
        log.info("replay of %s on %s (%s)", self.playbook.name, self.label, mode)
        variables = self._variables()
        steps = list(self.playbook.steps)
        if options.only is not None:
            steps = [
                s for s in (*self.playbook.steps, *self.playbook.handlers) if s.id == options.only
            ]
            if not steps:
                raise ExitplanError(
                    f"--only {options.only}: no such step or handler in {self.playbook.path}"
                )
        start = 0
        if options.from_step is not None:
            ids = [s.id for s in steps]
            if options.from_step not in ids:
                raise ExitplanError(
                    f"--from {options.from_step}: no such step in {self.playbook.path}"
                )
            start = ids.index(options.from_step)
        for step in steps[:start]:
            record = self.journal.replay_step(self.run_id, self.label, step.id)
            if record is not None and record.output is not None:
                self.outputs[step.id] = record.output
        aborted = False
        for step in steps[start:]:
            self.cancel.raise_if_set()
            outcome = self._step(step, variables, reuse=carry_on)
            self.outcomes.append(outcome)
            if step.handler and outcome.status != "failed" and not options.check:
                self.journal.handler_done(self.run_id, self.label, step.id)
            if outcome.status == "failed" and step.on_failure == "abort":
                aborted = True
                break
        if not aborted and options.only is None:
            self._handlers(variables)
        pending = [] if options.check else self.journal.pending_handlers(self.run_id, self.label)
        finished = (
            not aborted and not pending and not any(o.status == "failed" for o in self.outcomes)
        )
        service_url = None
        if self.playbook.service is not None:
            try:
                service_url = render_text(
                    self.playbook.service.url,
                    self._context(variables, facts=_names_facts(self.playbook.service.url)),
                )
            except RenderError:
                service_url = None
        return ReplayResult(
            host=self.label,
            playbook=self.playbook.name,
            mode=mode,
            outcomes=tuple(self.outcomes),
            finished=finished,
            service_url=service_url,
            outputs=dict(self.outputs),
        )

    def _handlers(self, variables: Mapping[str, Any]) -> None:
        pending = set(
            self._notified
            if self.options.check
            else self.journal.pending_handlers(self.run_id, self.label)
        )
        for handler in self.playbook.handlers:
            if handler.id not in pending:
                continue
            self.cancel.raise_if_set()
            outcome = self._step(handler, variables, reuse=False)
            self.outcomes.append(outcome)
            if outcome.status != "failed" and not self.options.check:
                self.journal.handler_done(self.run_id, self.label, handler.id)

    # -- one step ------------------------------------------------------------

    def _inputs_hash(self, step: StepSpec, args: Mapping[str, Any]) -> str:
        material = {
            "op": step.op,
            "args": self.redactor.value(args),
            "secrets": dict(sorted(self.secrets.versions.items())),
        }
        text = json.dumps(material, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def _done(self, step: StepSpec, status: str, detail: str, **extra: Any) -> StepOutcome:
        outcome = StepOutcome(
            step.id,
            step.title,
            status,
            self.redactor.text(detail),
            handler=step.handler,
            marker=OPS[step.op].marker,
            **extra,
        )
        self.events.emit(
            ReplayStepDone(
                self.label,
                step.id,
                status,
                outcome.detail,
                outcome.diff,
                step.handler,
                outcome.marker,
                outcome.attempts,
            )
        )
        log.info("replay %s %s: %s %s", self.label, step.id, status, outcome.detail)
        return outcome

    def _step(self, step: StepSpec, variables: Mapping[str, Any], *, reuse: bool) -> StepOutcome:
        self._facts = None  # facts are read again for every step that needs them
        op = OPS[step.op]
        journal = not self.options.check
        if reuse:
            record = self.journal.replay_step(self.run_id, self.label, step.id)
            if record is not None and record.status == "skipped":
                return self._done(step, "reused", "skipped by an earlier replay of this run")
        try:
            # A template file is read when the op runs: it gets the facts either way.
            uses_facts = step.op == "template" or _names_facts([step.args, step.condition])
            context = self._context(variables, facts=uses_facts)
            if step.condition is not None and not evaluate_condition(step.condition, context):
                if journal:
                    self.journal.start_replay_step(self.run_id, self.label, step.id, "")
                    self.journal.finish_replay_step(self.run_id, self.label, step.id, "skipped", {})
                return self._done(step, "skipped", f"if: {step.condition} is false")
            args = coerce_args(op, render_value(step.args, context), step.id)
        except (RenderError, ExitplanError) as exc:
            return self._fail(step, f"{step.where}: {exc}", 1, journal)
        inputs_hash = self._inputs_hash(step, args)
        if reuse:
            record = self.journal.replay_step(self.run_id, self.label, step.id)
            if (
                record is not None
                and record.status in SETTLED
                and record.inputs_hash == inputs_hash
            ):
                self.outputs[step.id] = record.output or {}
                return self._done(step, "reused", "done by an earlier replay of this run")
        if journal:
            self.journal.start_replay_step(self.run_id, self.label, step.id, inputs_hash)
        ctx = OpContext(
            host=self.host,
            facts=self.facts,
            artifacts=self.artifacts,
            redactor=self.redactor,
            cancel=self.cancel,
            timeout=step.timeout,
            scratch=self.scratch,
            playbook_dir=self.playbook.directory,
            check_mode=self.options.check,
            approve=self.options.approve,
            render=lambda text: render_text(text, self._context(variables)),
            artifact_keys={
                n: (a.key or a.prefix or "") for n, a in self.playbook.artifacts.items()
            },
        )
        try:
            status, check, output, attempts = self._attempts(step, ctx, args, context)
        except _StepFailed as failed:
            return self._fail(step, str(failed), failed.attempts, journal)
        output = self.redactor.value(output)
        self.outputs[step.id] = output
        if status == "changed" and step.notify:
            for handler in step.notify:
                if journal:
                    # Durable before the step is marked done: a crash now still runs it.
                    self.journal.notify_handler(self.run_id, self.label, handler, step.id)
                elif handler not in self._notified:
                    self._notified.append(handler)
        if journal:
            self.journal.finish_replay_step(self.run_id, self.label, step.id, status, output)
        diff = check.diff if (self.options.diff and status in ("would-change", "changed")) else ""
        return self._done(
            step, status, check.reason, diff=self.redactor.text(diff), attempts=attempts
        )

    def _attempts(
        self, step: StepSpec, ctx: OpContext, args: Mapping[str, Any], context: Mapping[str, Any]
    ) -> tuple[str, Check, dict[str, Any], int]:
        op = OPS[step.op]
        attempts = 0
        while True:
            attempts += 1
            self._facts = None
            try:
                check = op.check(ctx, args)
                if check.satisfied:
                    return "ok", check, dict(check.output), attempts
                if self.options.check:
                    return "would-change", check, {}, attempts
                self._record_undo(step, args, check, context)
                output = op.apply(ctx, args, check)
                op.verify(ctx, args, check)
                return "changed", check, output, attempts
            except Cancelled:
                raise
            except Exception as exc:  # an op's failure, a lost host, a bug: the step fails
                if not isinstance(exc, ExitplanError):
                    log.debug("step %s raised %s", step.id, type(exc).__name__, exc_info=True)
                message = self.redactor.text(str(exc) or type(exc).__name__)
                if self.options.check and any(o.status == "would-change" for o in self.outcomes):
                    # A dry run cannot read what the steps above would have made.
                    why = f"cannot be checked before the steps above change the host ({message})"
                    return "would-change", Check(False, why), {}, attempts
                if attempts > step.retries:
                    raise _StepFailed(message, attempts) from None
                log.info(
                    "step %s attempt %d failed (%s); retrying in %gs",
                    step.id,
                    attempts,
                    message,
                    step.retry_delay,
                )
                if self.cancel.wait(step.retry_delay):
                    self.cancel.raise_if_set()

    def _record_undo(
        self, step: StepSpec, args: Mapping[str, Any], check: Check, context: Mapping[str, Any]
    ) -> None:
        if step.undo == "none":
            return
        if isinstance(step.undo, dict):
            ((undo_op, undo_args),) = step.undo.items()
            rendered = coerce_args(
                OPS[undo_op], render_value(undo_args, context), f"{step.id}.undo"
            )
            resource = {
                "host": self.host_resource,
                "step": step.id,
                "op": undo_op,
                "custom": rendered,
            }
            self.record_undo(step.id, resource, f"{step.title}: {OPS[undo_op].describe(rendered)}")
            return
        record = OPS[step.op].undo_record(args, check)
        if record is None:
            return
        resource = {"host": self.host_resource, "step": step.id, "op": step.op, "record": record}
        self.record_undo(step.id, resource, self.redactor.text(f"{step.title} on {self.label}"))

    def _fail(self, step: StepSpec, message: str, attempts: int, journal: bool) -> StepOutcome:
        message = self.redactor.text(message)
        if journal:
            if self.journal.replay_step(self.run_id, self.label, step.id) is None:
                self.journal.start_replay_step(self.run_id, self.label, step.id, "")
            self.journal.finish_replay_step(
                self.run_id, self.label, step.id, "failed", None, message
            )
        return self._done(step, "failed", message, attempts=attempts)


def _names_facts(value: Any) -> bool:
    """Whether templates in ``value`` may read ``facts`` (a cheap, safe over-approximation)."""
    return "facts" in json.dumps(value, default=str)
