"""The executor interface: where copy tasks run, and what comes back from them.

The transfer coordinator (``orchestrator.export.transfer``) is the only one
to write the journal, update progress and emit events. Everything it hands a
worker is a ``CopyTask``: one item, or a batch of small ones, each with the
destinations it still has to reach, its attempt number and what the journal
knows of its staged parts. A worker makes one attempt at each item and says
how it went in ``Report`` messages:

* ``BytesRead`` while a stream is read (progress, throughput);
* ``PartWritten`` once a part of a ranged item is written in place at its
  destinations (the coordinator journals it: a killed run carries on from it);
* ``ItemEnded`` with the item's ``ItemOutcome`` (sizes, sha256, the source's
  checksum, what it published, what went wrong and whether a retry may help);
* ``TaskEnded`` once the task is over, with an error if the task itself was
  lost (its worker died): the items of it that never ended are then retried,
  and their destinations looked at before anything is written again.

An executor runs tasks and passes the reports on, in the order each task made
them; it never retries (the coordinator decides from the journal) and stops
running tasks cooperatively: ``cancel`` sets a flag that every task checks
between chunks. Two executors pass the same contract suite
(``tests/contract/executor_contract.py``): ``ThreadExecutor`` (the default:
threads of this process) and ``DaskExecutor`` (processes on any number of
machines).
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from orchestrator.export.exporters.base import ExportItem
from orchestrator.run.cancel import CancelToken


@dataclass(frozen=True)
class ItemWork:
    """One item of a task: where it still has to go, and what the journal knows of it."""

    item: ExportItem
    #: Names of the destinations this attempt writes to.
    destinations: tuple[str, ...]
    #: 1 for the first attempt; the coordinator counts, the worker only reports it back.
    attempt: int
    #: The coordinator's limit: the worker gives up for good (and drops staged
    #: parts) when this attempt fails and either it is the last or no retry can help.
    max_attempts: int
    #: Ranged items: part index -> bytes already written in place at every one
    #: of ``destinations`` (from the journal), so a resumed part carries on.
    parts_done: Mapping[int, int] = field(default_factory=dict)
    #: How the previous attempt ended is unknown (its worker or the coordinator
    #: died): a destination already holding the item's bytes is checked and
    #: kept, never written a second time.
    check_first: bool = False


@dataclass(frozen=True)
class CopyTask:
    """What one worker runs: items copied one after another, each on its own."""

    #: Unique per submission, built from the items' idempotency keys and
    #: attempts (``task_key``): running the same task twice does the same thing.
    key: str
    items: tuple[ItemWork, ...]
    #: Holds a large stream (ranged parts, or an item of unknown size): a
    #: distributed executor caps how many of those run on one machine.
    large: bool = False


def task_key(run_id: str, items: Sequence[ItemWork]) -> str:
    """A task's key: stable for the same items at the same attempts."""
    digest = hashlib.sha256()
    for work in items:
        digest.update(f"{work.item.idem_key}\0{work.attempt}\0".encode())
    return f"exitplan-copy-{run_id}-{digest.hexdigest()[:24]}"


@dataclass(frozen=True)
class StoredCopy:
    """The item is published at ``destination`` and checked against what was read."""

    destination: str
    size: int
    sha256: str
    #: What the source's own checksum said (``md5:...``), or ``unchecked: why``.
    source_checksum: str | None
    #: Found already published with these bytes (an attempt whose end was
    #: never reported wrote it): checked, and not written again.
    adopted: bool = False


@dataclass(frozen=True)
class ItemOutcome:
    """How one attempt at one item ended, as the worker saw it."""

    idem_key: str
    attempt: int
    stored: tuple[StoredCopy, ...] = ()
    #: Destinations the attempt did not reach.
    failed: tuple[str, ...] = ()
    #: Why, in words for the journal and the report (never a secret).
    error: str = ""
    #: Whether another attempt may succeed (the source provider's retry rule).
    retryable: bool = False
    #: Seconds the source asked us to wait (Retry-After), 0 if it did not say.
    retry_after: float = 0.0
    #: Stopped by a cancel: nothing is settled, the item stays in-flight.
    cancelled: bool = False
    #: What items depending on this one need (``SourceStream.record``), once verified.
    record: Mapping[str, Any] | None = None
    #: Destinations whose staged parts this attempt used (read in place).
    staged: tuple[str, ...] = ()
    #: Destinations whose staged parts were dropped (damaged, or given up on).
    discarded_parts: tuple[str, ...] = ()
    #: Bytes read from the source this attempt, and how long it took the worker.
    bytes_read: int = 0
    seconds: float = 0.0
    #: Requests made to the source (GETs, ranged parts), as the worker counted.
    requests: int = 1


# -- reports: worker -> coordinator ---------------------------------------------------


@dataclass(frozen=True)
class BytesRead:
    """Bytes of ``idem_key`` read from the source since the last report (progress)."""

    idem_key: str
    attempt: int
    kind: str
    nbytes: int


@dataclass(frozen=True)
class PartWritten:
    """``done_bytes`` of part ``part_index`` are written in place at ``destinations``."""

    idem_key: str
    attempt: int
    destinations: tuple[str, ...]
    part_index: int
    done_bytes: int


@dataclass(frozen=True)
class ItemEnded:
    outcome: ItemOutcome


@dataclass(frozen=True)
class TaskEnded:
    """The task is over. ``error`` is set when the task itself failed or was lost
    (a worker died under it): its items that never ended are to be retried."""

    key: str
    error: str = ""
    #: Never started: cancelled before a worker took it.
    cancelled: bool = False
    #: Outcomes the task returned (a distributed executor's authoritative
    #: result); the coordinator ignores those it already had from ``ItemEnded``.
    outcomes: tuple[ItemOutcome, ...] = ()


Report = BytesRead | PartWritten | ItemEnded | TaskEnded

#: Runs one task in this process, reporting as it goes; never raises for an item.
TaskRunner = Callable[[CopyTask, Callable[[Report], None]], None]


@dataclass(frozen=True)
class TransferJob:
    """What an executor needs to run the tasks of one run."""

    run_id: str
    #: Runs a task here, with the coordinator's own exporters and destinations.
    run_here: TaskRunner
    cancel: CancelToken
    #: A secret-free description from which a worker elsewhere builds its own
    #: exporters and destinations (``executors.spec.WorkerSpec``), or None
    #: when this run's items cannot be copied outside this process.
    spec: Any = None


class Executor(ABC):
    """Runs copy tasks and passes their reports back. Used from the coordinator's thread."""

    #: Whether tasks run in other processes (from ``TransferJob.spec``, so only
    #: items of portable exporters go there).
    remote: bool = False

    @abstractmethod
    def start(self, job: TransferJob) -> None:
        """Get ready to run the tasks of ``job`` (threads, or a cluster connection)."""

    @property
    @abstractmethod
    def capacity(self) -> int:
        """Tasks to keep submitted at once: the sliding window of submissions."""

    #: Small items (at most ``batch_bytes`` each, and together) sent in one task.
    batch_items: int = 1
    batch_bytes: int = 8 * 1024 * 1024

    @abstractmethod
    def submit(self, task: CopyTask) -> None:
        """Queue ``task``; its reports come back through ``reports``. Never blocks long."""

    @abstractmethod
    def reports(self, timeout: float) -> list[Report]:
        """Reports that arrived, waiting up to ``timeout`` seconds for the first one."""

    @abstractmethod
    def cancel(self) -> None:
        """Stop: tasks not started end with ``TaskEnded(cancelled=True)``, running ones
        stop between chunks (their items end ``cancelled``). Idempotent."""

    @abstractmethod
    def close(self) -> None:
        """Release threads and connections. Idempotent."""

    def describe(self) -> str:
        return type(self).__name__
