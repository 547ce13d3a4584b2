"""The undo log: how to remove what a run created outside its workspace.

A step that creates something (a server, a claimed pool host, an EBS
snapshot, a scratch database, a DNS change, files and services on the new
host) records an entry *the moment it exists*, before anything else can
fail: the journal says what it is (``kind`` and a secret-free ``resource``)
and which handler removes it. ``rollback`` runs a run's pending entries
newest first. Every handler is idempotent: removing what is already gone
reports that and succeeds, so a rollback cut short is simply run again.

Handlers are found by kind in ``UNDO_HANDLERS`` (module and function,
imported on first use), so the engine's core does not import every stage.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from orchestrator.clock import Clock
from orchestrator.config import Config
from orchestrator.errors import ExitplanError
from orchestrator.run.journal import Journal, UndoEntry

if TYPE_CHECKING:
    from providers.aws import AwsAccount

log = logging.getLogger(__name__)

#: kind -> (module, function) of the handler that removes it.
UNDO_HANDLERS: dict[str, tuple[str, str]] = {
    "server": ("orchestrator.placement.provision", "undo_server"),
    "ebs-snapshot": ("orchestrator.export.exporters.ebs", "undo_snapshot"),
    "rds-snapshot": ("orchestrator.export.exporters.rds", "undo_snapshot"),
    # A PostgreSQL server exitplan started (the sandbox's, the restore check's).
    "postgres-cluster": ("orchestrator.postgres", "undo_cluster"),
    # Whatever a playbook step made on the host: files, directories, a user, a service.
    "replay-step": ("orchestrator.replay.undo", "undo_replay_step"),
    # DNS record sets the cutover changed: the previous sets are put back.
    "dns_change": ("orchestrator.cutover.steps", "undo_dns"),
}


@dataclass
class UndoContext:
    """What handlers may need: the config and, opened on first use, the source account."""

    config: Config
    clock: Clock
    open_source: Callable[[], contextlib.AbstractContextManager[AwsAccount]] | None = None
    _stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    _source: AwsAccount | None = None

    def source(self) -> AwsAccount:
        if self._source is None:
            if self.open_source is None:
                raise ExitplanError("this rollback cannot reach the source account")
            self._source = self._stack.enter_context(self.open_source())
        return self._source

    def close(self) -> None:
        self._stack.close()


UndoHandler = Callable[[Mapping[str, Any], UndoContext], str]


@dataclass(frozen=True)
class UndoOutcome:
    """What one undo entry came to: ``undone`` (with what was removed) or ``failed``."""

    entry_id: int
    kind: str
    description: str
    state: str
    message: str


def handler_for(kind: str) -> UndoHandler:
    try:
        module, name = UNDO_HANDLERS[kind]
    except KeyError:
        raise ExitplanError(
            f"no undo handler for {kind!r} (known: {', '.join(sorted(UNDO_HANDLERS))})"
        ) from None
    handler: UndoHandler = getattr(importlib.import_module(module), name)
    return handler


def undo_entry(journal: Journal, entry: UndoEntry, context: UndoContext) -> UndoOutcome:
    """Run one entry's handler and record how it went."""
    try:
        message = handler_for(entry.kind)(entry.resource, context)
    except ExitplanError as exc:
        journal.settle_undo(entry.id, "failed", str(exc))
        return UndoOutcome(entry.id, entry.kind, entry.description, "failed", str(exc))
    except Exception as exc:  # one stuck resource must not stop the rest of the rollback
        log.exception("undo of %s failed", entry.description)
        message = f"{type(exc).__name__}: {exc}"
        journal.settle_undo(entry.id, "failed", message)
        return UndoOutcome(entry.id, entry.kind, entry.description, "failed", message)
    journal.settle_undo(entry.id, "undone")
    return UndoOutcome(entry.id, entry.kind, entry.description, "undone", message)


def rollback(
    journal: Journal,
    run_id: str,
    context: UndoContext,
    *,
    kinds: frozenset[str] | None = None,
) -> list[UndoOutcome]:
    """Undo what the run created, newest first; failed entries are tried again too.

    ``kinds`` limits it (a drill's cleanup and the next run's sweep of
    leftover processes use that). Returns one outcome per entry.
    """
    outcomes = []
    for entry in journal.undo_entries(run_id, ("pending", "failed")):
        if kinds is not None and entry.kind not in kinds:
            continue
        outcomes.append(undo_entry(journal, entry, context))
    return outcomes


def owner_alive(resource: Mapping[str, Any]) -> bool:
    """Whether the exitplan process that recorded ``resource`` is still running.

    Processes exitplan starts (a PostgreSQL cluster) record the pid and start
    time of the exitplan process that owns them; a later run stops them only
    when that owner is gone, never a cluster another live run is using.
    """
    pid = resource.get("owner_pid")
    if not isinstance(pid, int):
        return False
    started = resource.get("owner_started")
    return process_start_time(pid) == started and started is not None


def process_start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (``/proc``), or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        return int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def this_process() -> dict[str, Any]:
    """The owner fields of resources this process starts (see ``owner_alive``)."""
    pid = os.getpid()
    return {"owner_pid": pid, "owner_started": process_start_time(pid)}


def process_recorder(
    record: Callable[[str, Mapping[str, Any], str], int],
    update: Callable[[int, Mapping[str, Any]], None],
    kind: str = "postgres-cluster",
) -> Callable[[dict[str, Any]], None]:
    """A callback for things that report themselves as they start (a PostgreSQL server
    reports its directory, then again with its pid): one undo entry per ``workdir``,
    owned by this process, so the next run stops it only once this one is gone."""
    entries: dict[str, int] = {}

    def started(resource: dict[str, Any]) -> None:
        owned = {**resource, **this_process()}
        where = str(resource.get("workdir", ""))
        if where in entries:
            update(entries[where], owned)
        else:
            entries[where] = record(kind, owned, f"PostgreSQL server exitplan started in {where}")

    return started


def pending_runs(journal: Journal) -> Iterator[str]:
    """Runs with undo entries still pending or failed (for `status` and the next run's sweep)."""
    yield from journal.runs_with_pending_undo()
