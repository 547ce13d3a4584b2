"""The default executor: worker threads of this process.

Each task runs on a thread of a fixed pool with the coordinator's own
exporters and destinations (``TransferJob.run_here``); its reports go
through one queue, so the coordinator sees them in the order they were made.
Cancelling sets the run's cancel token, which every task checks between
chunks; tasks that have not started end at once, cancelled.
"""

from __future__ import annotations

import logging
import queue
from concurrent.futures import ThreadPoolExecutor

from orchestrator.export.executors.base import CopyTask, Executor, Report, TaskEnded, TransferJob

log = logging.getLogger(__name__)


class ThreadExecutor(Executor):
    """``threads`` worker threads; a window of twice as many tasks."""

    def __init__(self, threads: int) -> None:
        if threads < 1:
            raise ValueError(f"an executor needs at least one thread, not {threads}")
        self.threads = threads
        self._job: TransferJob | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._reports: queue.SimpleQueue[Report] = queue.SimpleQueue()

    def start(self, job: TransferJob) -> None:
        self._job = job
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="exitplan-copy")

    @property
    def capacity(self) -> int:
        return 2 * self.threads

    def submit(self, task: CopyTask) -> None:
        if self._pool is None or self._job is None:
            raise RuntimeError("the executor was not started")
        self._pool.submit(self._run, self._job, task)

    def _run(self, job: TransferJob, task: CopyTask) -> None:
        if job.cancel.is_set():
            self._reports.put(TaskEnded(task.key, cancelled=True))
            return
        try:
            job.run_here(task, self._reports.put)
        except BaseException as exc:  # a bug in a runner: its items are retried, the run goes on
            log.exception("copy task %s failed", task.key)
            self._reports.put(TaskEnded(task.key, error=f"{type(exc).__name__}: {exc}"))
            return
        self._reports.put(TaskEnded(task.key))

    def reports(self, timeout: float) -> list[Report]:
        found: list[Report] = []
        try:
            found.append(
                self._reports.get(timeout=timeout) if timeout > 0 else self._reports.get_nowait()
            )
        except queue.Empty:
            return found
        while True:
            try:
                found.append(self._reports.get_nowait())
            except queue.Empty:
                return found

    def cancel(self) -> None:
        # The job's cancel token is the run's: the coordinator set it already.
        pass

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=False)
            self._pool = None

    def describe(self) -> str:
        return f"{self.threads} threads"
