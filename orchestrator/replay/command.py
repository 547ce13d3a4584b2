"""``exitplan replay [RUN]``: replay a playbook onto the host a run placed, from its export.

The CLI parses arguments and renders events; this module finds the run, its
host (the ``place`` step's output, with the pinned key) and its
destinations, and runs the replay (``orchestrator.replay.steps``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from orchestrator.clock import Clock
from orchestrator.config import Config
from orchestrator.errors import Cancelled, ConfigError
from orchestrator.events import EventBus
from orchestrator.placement.steps import PlaceOutput
from orchestrator.replay.runner import ReplayOptions, ReplayResult
from orchestrator.replay.steps import (
    REPLAY_UNDO,
    identity_path,
    playbook_path,
    prepare_replay,
    redacted_logs,
)
from orchestrator.run.cancel import CancelToken
from orchestrator.run.commands import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    config_for,
    existing_journal,
    open_destinations,
    recorded_run,
    recorded_settings,
    with_sandbox_recipient,
)
from orchestrator.run.serde import from_json


@dataclass(frozen=True)
class ReplayCommandOutcome:
    run_id: str
    result: ReplayResult | None
    exit_code: int
    #: Set when the replay was stopped (Ctrl-C): the next replay carries on.
    interrupted: str | None = None


def replay_command(
    workspace_config: Config,
    run_id: str | None,
    *,
    playbook: Path | None,
    identity: Path | None,
    options: ReplayOptions,
    events: EventBus,
    clock: Clock,
    cancel: CancelToken | None = None,
) -> ReplayCommandOutcome:
    """Replay onto the host of run ``run_id`` (default: the newest run).

    Raises ``ConfigError`` (exit 2, nothing run) when there is no such run,
    the run placed no host, or the playbook does not validate.
    """
    cancel = cancel or CancelToken()
    with existing_journal(workspace_config, clock) as journal:
        run = recorded_run(journal, run_id)
        config = config_for(recorded_settings(run))
        if config.source.aws.sandbox:
            config = with_sandbox_recipient(config)
        record = journal.step(run.id, "place")
        if record is None or record.status != "done" or record.output is None:
            raise ConfigError(
                f"run {run.id} has no host yet (its place step is "
                f"{record.status if record else 'not run'}): `exitplan resume {run.id}` first"
            )
        placement = from_json(PlaceOutput, record.output).placement
        path = playbook_path(config, playbook)
        if path is None:
            raise ConfigError("no playbook: pass --playbook FILE or set `playbook:` in the config")
        directory = Path(config.workspace) / "runs" / run.id

        def record_undo(step_id: str, resource: dict, description: str) -> int:
            return journal.record_undo(run.id, "replay", REPLAY_UNDO, resource, description)

        session = prepare_replay(
            path=path,
            placement=placement,
            destinations=open_destinations(config),
            journal=journal,
            run_id=run.id,
            events=events,
            cancel=cancel,
            directory=directory,
            identity=identity_path(config, identity),
            record_undo=record_undo,
            options=options,
        )
        try:
            with redacted_logs(session.redactor):
                result = session.runner.run()
        except Cancelled as exc:
            return ReplayCommandOutcome(
                run.id, None, EXIT_INTERRUPTED, session.redactor.text(str(exc))
            )
        finally:
            session.close()
    ok = result.finished or (options.check and not result.failed)
    return ReplayCommandOutcome(run.id, result, EXIT_OK if ok else EXIT_FAILED)
