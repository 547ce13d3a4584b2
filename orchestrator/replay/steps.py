"""The run's ``replay`` and ``verify-service`` steps, and the engine side of ``exitplan replay``.

``replay`` reads the placement (the host, with its pinned key) and the
manifest the export published, validates the playbook against that
manifest, opens the secrets bundle with the operator's age identity, and
replays the playbook on the host (``ReplayRunner``). Whatever a replay step
makes is in the undo log (kind ``replay-step``) before it is made.

``verify-service`` then proves from the outside of the playbook that the
service serves the source's data: its health URL answers, the row counts it
reports equal those the export read from the source's own snapshot, and the
media files it serves have the sha256 the manifest recorded at the source.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import quote

import playbooks
from orchestrator.config import Config
from orchestrator.errors import ConfigError, ExitplanError
from orchestrator.events import EventBus
from orchestrator.export.transfer import Destination
from orchestrator.placement.provision import Placement
from orchestrator.replay.artifacts import ArtifactSource
from orchestrator.replay.hostinfo import gather_facts
from orchestrator.replay.ops.base import OpFailed
from orchestrator.replay.ops.service import http_digest
from orchestrator.replay.playbook import Playbook, load_playbook
from orchestrator.replay.runner import RecordUndo, ReplayOptions, ReplayResult, ReplayRunner
from orchestrator.replay.secrets import resolve_secrets
from orchestrator.replay.templating import Redactor, render_text
from orchestrator.run.cancel import CancelToken
from orchestrator.run.journal import Journal
from orchestrator.run.serde import to_json
from orchestrator.run.steps import RunContext, Step, StepFailed, StepSkipped
from providers.compute import open_host
from providers.interfaces.host import Host

log = logging.getLogger(__name__)

#: The playbook the sandbox replays when the config names none.
SANDBOX_PLAYBOOK = Path(playbooks.__file__).resolve().parent / "microblog.yaml"
#: The undo log's kind for whatever a replay step made on the host.
REPLAY_UNDO = "replay-step"
IDENTITY_ENV = "EXITPLAN_AGE_IDENTITY"
SANDBOX_IDENTITY = "sandbox-identity.age"


def playbook_path(config: Config, given: Path | None = None) -> Path | None:
    """``--playbook``, else the config's ``playbook:``, else the sandbox's own, else None."""
    if given is not None:
        return given
    if config.playbook is not None:
        return Path(config.playbook)
    if config.source.aws.sandbox:
        return SANDBOX_PLAYBOOK
    return None


def identity_path(config: Config, given: Path | None = None) -> Path | None:
    """``--identity``, else ``$EXITPLAN_AGE_IDENTITY``, else the sandbox's key in the workspace."""
    if given is not None:
        return given
    if os.environ.get(IDENTITY_ENV):
        return Path(os.environ[IDENTITY_ENV])
    sandbox = Path(config.workspace) / SANDBOX_IDENTITY
    return sandbox if sandbox.is_file() else None


def host_resource(placement: Placement) -> dict[str, Any]:
    """What an undo needs to reach the host again (key *paths*, pinned key; no secret)."""
    ready = placement.ready_host()
    return {
        "address": ready.address,
        "port": ready.port,
        "user": ready.user,
        "host_key": ready.host_key,
        "node_id": ready.node_id,
        "key_file": str(ready.key_file) if ready.key_file else None,
        "transport": ready.transport,
    }


def host_label(placement: Placement) -> str:
    return (
        placement.candidate
        if placement.transport == "local"
        else f"{placement.candidate}:{placement.address}:{placement.port}"
    )


class _RedactingFilter(logging.Filter):
    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = self.redactor.text(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and record.exc_info[1] is not None:
            text = self.redactor.text(str(record.exc_info[1]))
            if text != str(record.exc_info[1]):
                record.exc_info = None
                record.msg = f"{record.msg} ({text})"
        return True


@contextlib.contextmanager
def redacted_logs(redactor: Redactor) -> Iterator[None]:
    """Every log handler scrubs the replay's secret values while the replay runs."""
    handlers = list(logging.getLogger().handlers)
    flt = _RedactingFilter(redactor)
    for handler in handlers:
        handler.addFilter(flt)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(flt)


@dataclass
class ReplaySession:
    """A validated playbook, its artifacts and secrets, and the open host, ready to replay."""

    playbook: Playbook
    artifacts: ArtifactSource
    runner: ReplayRunner
    host: Host
    scratch: Path
    redactor: Redactor

    def close(self) -> None:
        self.host.close()
        shutil.rmtree(self.scratch, ignore_errors=True)


def prepare_replay(
    *,
    path: Path,
    placement: Placement,
    destinations: list[Destination],
    journal: Journal,
    run_id: str,
    events: EventBus,
    cancel: CancelToken,
    directory: Path,
    identity: Path | None,
    record_undo: RecordUndo,
    options: ReplayOptions,
    scratch_suffix: str = "",
) -> ReplaySession:
    """Validate ``path`` against the export's manifest and open everything a replay needs.

    ``scratch_suffix`` (a drill's ``-drill-<run>``) reaches the playbook as
    ``exitplan.scratch_suffix``: playbooks put it in the names of what they
    make on the host, so a drill never touches a real exit's service.

    Raises ``ConfigError`` (nothing has run on any host) for a bad playbook,
    an artifact the manifest lacks, a secret the bundle lacks or no identity.
    """
    artifacts = ArtifactSource((d.name, d.store) for d in destinations)
    playbook = load_playbook(path, artifacts.manifest_keys())
    redactor = Redactor()
    scratch = directory / "replay-scratch"
    secrets = resolve_secrets(playbook.secrets, artifacts, identity, scratch, redactor)
    host = open_host(placement.ready_host())
    local = placement.transport == "local"
    runner = ReplayRunner(
        playbook,
        host,
        host_label=host_label(placement),
        journal=journal,
        run_id=run_id,
        events=events,
        cancel=cancel,
        artifacts=artifacts,
        secrets=secrets,
        redactor=redactor,
        read_facts=lambda: gather_facts(host, local=local),
        scratch=scratch,
        record_undo=record_undo,
        host_resource=host_resource(placement),
        exitplan_vars={
            "run_id": run_id,
            "playbook_dir": str(playbook.directory),
            "scratch_suffix": scratch_suffix,
        },
        options=options,
    )
    return ReplaySession(playbook, artifacts, runner, host, scratch, redactor)


# --------------------------------------------------------------------------- the run's steps


@dataclass(frozen=True)
class ReplayStepRow:
    step: str
    status: str
    detail: str


@dataclass(frozen=True)
class ReplayOutput:
    """What the replay did on the host (secret-free)."""

    host: str
    playbook: str
    mode: str
    changed: int
    ok: int
    skipped: int
    reused: int
    failed: int
    finished: bool
    service_url: str | None
    steps: tuple[ReplayStepRow, ...]


def replay_output(result: ReplayResult) -> ReplayOutput:
    return ReplayOutput(
        host=result.host,
        playbook=result.playbook,
        mode=result.mode,
        changed=result.count("changed"),
        ok=result.count("ok"),
        skipped=result.count("skipped"),
        reused=result.count("reused"),
        failed=result.count("failed"),
        finished=result.finished,
        service_url=result.service_url,
        steps=tuple(ReplayStepRow(o.step, o.status, o.detail) for o in result.outcomes),
    )


def _placement(run: RunContext) -> Placement:
    place = run.outputs.get("place")
    placement = getattr(place, "placement", None)
    if not isinstance(placement, Placement):
        raise StepSkipped("no host was placed")
    return placement


class ReplayStep(Step[ReplayOutput]):
    """Replays the playbook on the placed host from the verified export."""

    id: ClassVar[str] = "replay"
    title: ClassVar[str] = "replay the playbook on the new host"
    output_type: ClassVar[type[Any]] = ReplayOutput
    after: ClassVar[tuple[str, ...]] = ("place", "manifest")

    def __init__(self, only_kinds: tuple[str, ...] | None = None) -> None:
        #: ``--only``: the run exports part of the data, so the playbook's artifacts may be missing.
        self.only_kinds = only_kinds

    def inputs(self, run: RunContext) -> Mapping[str, Any]:
        path = playbook_path(run.config)
        return {"playbook": str(path) if path else None, "only": self.only_kinds}

    def preview(self, run: RunContext) -> str:
        path = playbook_path(run.config)
        if path is None:
            return "no playbook configured: the service is not brought up"
        if self.only_kinds is not None:
            return "skipped: --only exports part of the data; `exitplan replay` afterwards"
        return f"replay {path.name} on the chosen host (journaled, undo recorded)"

    def execute(self, run: RunContext) -> ReplayOutput:
        path = playbook_path(run.config)
        if path is None:
            raise StepSkipped("no playbook: set `playbook:` in the config to bring the service up")
        if self.only_kinds is not None:
            raise StepSkipped(
                f"this run exports only {', '.join(self.only_kinds)} (--only); once the data the "
                f"playbook needs is exported, `exitplan replay {run.run_id}` brings the service up"
            )
        placement = _placement(run)

        def record_undo(step_id: str, resource: dict[str, Any], description: str) -> int:
            return run.record_undo(self.id, REPLAY_UNDO, resource, description)

        try:
            session = prepare_replay(
                path=path,
                placement=placement,
                destinations=run.destinations(),
                journal=run.journal,
                run_id=run.run_id,
                events=run.events,
                cancel=run.cancel,
                directory=run.directory,
                identity=identity_path(run.config),
                record_undo=record_undo,
                options=ReplayOptions(),
                scratch_suffix=run.scratch_suffix,
            )
        except ConfigError as exc:
            raise StepFailed(str(exc)) from exc
        try:
            with redacted_logs(session.redactor):
                result = session.runner.run()
        finally:
            session.close()
        output = replay_output(result)
        if not result.finished:
            first = result.failed[0] if result.failed else None
            why = f"step {first.step} failed: {first.detail}" if first else "handlers still pending"
            raise StepFailed(f"{result.summary()}; {why}; `exitplan resume` carries on", output)
        return output

    def summary(self, output: ReplayOutput) -> str:
        text = f"{output.playbook} on {output.host}: {output.changed} changed, {output.ok} ok"
        if output.reused:
            text += f", {output.reused} reused"
        return text + (f"; {output.service_url}" if output.service_url else "")


@dataclass(frozen=True)
class ServiceCheckResult:
    #: "health", "rows" (one per table) or "file" (one per sampled object).
    kind: str
    name: str
    served: str
    source: str
    equal: bool


@dataclass(frozen=True)
class ServiceOutput:
    url: str
    healthy: bool
    checks: tuple[ServiceCheckResult, ...]
    #: When the health check was seen green, with the data checks equal: the end of RTO.
    healthy_at: datetime | None = None

    @property
    def ok(self) -> bool:
        return self.healthy and all(c.equal for c in self.checks)


def check_service(
    playbook: Playbook, url: str, host: Host, python: str, artifacts: ArtifactSource, scratch: Path
) -> ServiceOutput:
    """Ask the running service, from the host, what it serves; compare with the source's."""
    assert playbook.service is not None
    base = url.rstrip("/")
    status, _, _ = http_digest(host, python, base + playbook.service.health, 10)
    results: list[ServiceCheckResult] = []
    for check in playbook.service.checks:
        ref = playbook.artifacts[check.artifact]
        if check.kind == "rows":
            document = json.loads(artifacts.fetch(ref.key or "", scratch).read_text())
            expected: dict[str, int] = next(
                (
                    d.get("row_counts", {})
                    for d in document.get("databases", [])
                    if d.get("name") == check.database
                ),
                {},
            )
            served = _served_json(host, python, base + check.path)
            tables = served.get("tables", {}) if isinstance(served, dict) else {}
            for table, count in sorted(expected.items()):
                got = tables.get(table)
                results.append(
                    ServiceCheckResult("rows", table, str(got), str(count), got == count)
                )
        else:
            prefix = ref.prefix or ""
            entries = [e for e in artifacts.under(prefix) if e.size > 0][: check.sample]
            for entry in entries:
                rel = entry.key[len(prefix) :]
                got_status, _, digest = http_digest(
                    host, python, base + check.path.format(key=quote(rel)), 30
                )
                served = digest if got_status == 200 else f"HTTP {got_status}"
                results.append(
                    ServiceCheckResult("file", rel, served, entry.sha256, served == entry.sha256)
                )
    return ServiceOutput(url=url, healthy=status == 200, checks=tuple(results))


def _served_json(host: Host, python: str, url: str) -> Any:
    from orchestrator.replay.ops.service import http_get

    status, body = http_get(host, python, url, 10)
    if status != 200:
        return {}
    try:
        return json.loads(body)
    except ValueError:
        return {}


class VerifyServiceStep(Step[ServiceOutput]):
    """Proves the service answers with the source's data (row counts, media sha256)."""

    id: ClassVar[str] = "verify-service"
    title: ClassVar[str] = "check the service serves the source's data"
    output_type: ClassVar[type[Any]] = ServiceOutput
    after: ClassVar[tuple[str, ...]] = ("replay",)

    def preview(self, run: RunContext) -> str:
        return "ask the service for its health, row counts and media, compared with the source's"

    def execute(self, run: RunContext) -> ServiceOutput:
        replay = run.output("replay", ReplayOutput)
        path = playbook_path(run.config)
        if path is None or replay.service_url is None:
            raise StepSkipped("the playbook declares no `service:` to check")
        placement = _placement(run)
        artifacts = ArtifactSource((d.name, d.store) for d in run.destinations())
        playbook = load_playbook(path, artifacts.manifest_keys())
        scratch = run.directory / "verify-scratch"
        host = open_host(placement.ready_host())
        try:
            facts = gather_facts(host, local=placement.transport == "local")
            output = check_service(
                playbook, replay.service_url, host, facts.python3, artifacts, scratch
            )
        except (OpFailed, ExitplanError) as exc:
            raise StepFailed(
                f"the service at {replay.service_url} could not be checked: {exc}"
            ) from exc
        finally:
            host.close()
            shutil.rmtree(scratch, ignore_errors=True)
        if output.ok:
            output = replace(output, healthy_at=run.clock.now())
        if not output.ok:
            bad = [c for c in output.checks if not c.equal]
            detail = "; ".join(f"{c.name}: served {c.served}, source {c.source}" for c in bad[:5])
            raise StepFailed(
                f"{output.url}: "
                + ("not healthy" if not output.healthy else f"differs from the source ({detail})"),
                output,
            )
        return output

    def summary(self, output: ServiceOutput) -> str:
        rows = [c for c in output.checks if c.kind == "rows"]
        files = [c for c in output.checks if c.kind == "file"]
        return f"{output.url} answers; {len(rows)} table counts and {len(files)} file(s) equal the source's"


def service_report(outputs: Mapping[str, Any]) -> dict[str, Any] | None:
    """What the run report says about the service (None when no replay ran)."""
    replay = outputs.get("replay")
    if not isinstance(replay, ReplayOutput):
        return None
    service = outputs.get("verify-service")
    report: dict[str, Any] = {
        "url": replay.service_url,
        "host": replay.host,
        "playbook": replay.playbook,
        "replay": {k: getattr(replay, k) for k in ("changed", "ok", "skipped", "reused", "failed")},
    }
    if isinstance(service, ServiceOutput):
        report["answering"] = service.healthy
        report["checks"] = [to_json(c) for c in service.checks]
        posts = next(
            (c for c in service.checks if c.kind == "rows" and c.name.endswith(".posts")), None
        )
        if posts is not None:
            report["posts"] = {"served": posts.served, "source": posts.source, "equal": posts.equal}
        media = next((c for c in service.checks if c.kind == "file"), None)
        if media is not None:
            report["media"] = {
                "key": media.name,
                "served_sha256": media.served,
                "source_sha256": media.source,
                "equal": media.equal,
            }
    return report


def render_service_url(playbook: Playbook, context: Mapping[str, Any]) -> str | None:
    if playbook.service is None:
        return None
    return render_text(playbook.service.url, context)
