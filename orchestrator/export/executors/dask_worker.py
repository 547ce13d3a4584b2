"""What runs inside a Dask worker: one copy task, and its reports on their way back.

``run_copy_task`` is the function every task calls. Per worker process it
keeps one ``WorkerRuntime`` per run, built from the run's ``WorkerSpec``
with the worker's own environment (its credentials), and a cancel flag: the
run's ``distributed.Event``, looked at between chunks (at most four times a
second, since each look is a round trip to the scheduler). Dask's ``cancel``
does not stop a running task (distributed#4694); this flag does, at the
next chunk.

Reports go to the coordinator as worker events on the run's topic (plain
lists and dicts: Dask sends them as msgpack), and the task returns every
item's outcome as its result, which is what the coordinator trusts.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import asdict
from typing import Any

from orchestrator.errors import Cancelled
from orchestrator.export.executors.base import (
    BytesRead,
    CopyTask,
    ItemEnded,
    ItemOutcome,
    PartWritten,
    Report,
    StoredCopy,
)
from orchestrator.export.executors.spec import BuiltFromSpec, WorkerSpec

log = logging.getLogger(__name__)

#: Seconds between two looks at the run's cancel event.
_CANCEL_POLL_S = 0.25
#: Runtimes a worker keeps (one per run it has served lately).
_KEEP_RUNTIMES = 4


class ClusterCancel:
    """The run's cancel flag as seen from a worker (``transfer.CancelCheck``)."""

    def __init__(self, name: str) -> None:
        from distributed import Event

        self._event = Event(name)
        self._lock = threading.Lock()
        self._set = False
        self._looked = 0.0

    def is_set(self) -> bool:
        if self._set:
            return True
        now = time.monotonic()
        if now - self._looked < _CANCEL_POLL_S:
            return False
        with self._lock:
            if not self._set and now - self._looked >= _CANCEL_POLL_S:
                self._looked = now
                try:
                    self._set = bool(self._event.is_set())
                except Exception as exc:  # the scheduler is gone: nobody waits for us
                    log.warning("cannot reach the scheduler for the cancel flag: %s", exc)
                    self._set = True
        return self._set

    def raise_if_set(self) -> None:
        if self.is_set():
            raise Cancelled("stopped: the run was cancelled")

    def wait(self, seconds: float) -> bool:
        end = time.monotonic() + seconds
        while not self.is_set():
            left = end - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(_CANCEL_POLL_S, left))
        return True


class _Runtimes:
    """Per worker process: a runtime per (spec, cancel event), the newest kept."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._runtimes: OrderedDict[tuple[str, str], Any] = OrderedDict()

    def get(self, spec: WorkerSpec, cancel_name: str) -> Any:
        from orchestrator.export.transfer import (
            ItemCopier,
            WorkerRuntime,
            provider_rule_of,
            retry_rule,
        )

        key = (spec.key(), cancel_name)
        with self._lock:
            copier = self._runtimes.get(key)
            if copier is not None:
                self._runtimes.move_to_end(key)
                return copier
            built = BuiltFromSpec(spec)
            rules: dict[str, Any] = {}

            def rule_for(kind: str) -> Any:
                if kind not in rules:
                    rules[kind] = retry_rule(provider_rule_of(built.exporter(kind)))
                return rules[kind]

            runtime = WorkerRuntime(
                exporter=built.exporter,
                destinations=built.destinations,
                settings=spec.settings,
                cancel=ClusterCancel(cancel_name),
                retry_rule_for=rule_for,
                bwlimit=spec.worker_bwlimit,
            )
            copier = ItemCopier(runtime)
            self._runtimes[key] = copier
            while len(self._runtimes) > _KEEP_RUNTIMES:
                _, old = self._runtimes.popitem(last=False)
                old.runtime.close()
            return copier


_RUNTIMES = _Runtimes()


def run_copy_task(
    spec: WorkerSpec, task: CopyTask, cancel_name: str, topic: str
) -> list[dict[str, Any]]:
    """Run ``task`` on this worker; returns each item's outcome (encoded).

    Retry-safe: yes. The coordinator submits with ``retries=0`` and decides
    itself; a task run twice (a worker lost under it) finds what the first run
    published (``ItemWork.check_first``) and does not write it again.
    """
    from distributed import get_worker

    worker = get_worker()
    copier = _RUNTIMES.get(spec, cancel_name)
    outcomes: list[dict[str, Any]] = []

    def report(message: Report) -> None:
        encoded = encode_report(message)
        if isinstance(message, ItemEnded):
            outcomes.append(encoded["outcome"])
        worker.log_event(topic, encoded)

    copier.run_task(task, report)
    return outcomes


# -- reports as plain data (worker events are msgpack) -------------------------------


def encode_report(report: Report) -> dict[str, Any]:
    if isinstance(report, BytesRead):
        return {"op": "bytes", **asdict(report)}
    if isinstance(report, PartWritten):
        return {"op": "part", **asdict(report)}
    if isinstance(report, ItemEnded):
        outcome = asdict(report.outcome)
        outcome["record"] = dict(report.outcome.record) if report.outcome.record else None
        return {"op": "item", "outcome": outcome}
    raise TypeError(f"not a worker report: {report!r}")


def decode_report(data: dict[str, Any]) -> Report:
    op = data.get("op")
    if op == "bytes":
        return BytesRead(data["idem_key"], int(data["attempt"]), data["kind"], int(data["nbytes"]))
    if op == "part":
        return PartWritten(
            data["idem_key"],
            int(data["attempt"]),
            tuple(data["destinations"]),
            int(data["part_index"]),
            int(data["done_bytes"]),
        )
    if op == "item":
        return ItemEnded(decode_outcome(data["outcome"]))
    raise ValueError(f"not a worker report: {data!r}")


def decode_outcome(data: dict[str, Any]) -> ItemOutcome:
    values = dict(data)
    values["stored"] = tuple(StoredCopy(**dict(copy)) for copy in data.get("stored", ()))
    for name in ("failed", "staged", "discarded_parts"):
        values[name] = tuple(data.get(name, ()))
    return ItemOutcome(**values)
