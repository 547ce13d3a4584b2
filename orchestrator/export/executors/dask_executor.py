"""Copy tasks on a Dask cluster: many machines pulling at once, one journal.

``pip install 'exitplan[dask]'``, then either ``transfer: {executor: dask,
scheduler: tcp://host:8786}`` (a cluster you run) or ``--workers N`` (a
``LocalCluster`` of N worker processes on this machine).

The coordinator stays the only writer of the journal; workers only copy
(``dask_worker.run_copy_task``) and report. What this executor adds:

* **a sliding window**: at most twice as many tasks submitted as the cluster
  has threads, never every item at once;
* **batches**: small objects go ``batch_items`` to a task, so Dask's cost per
  task (a few milliseconds, see bench/RESULTS.md) is spread over many;
* **idempotent tasks, no Dask retries**: each task's key is built from its
  items' idempotency keys and attempts, submitted with ``retries=0``; the
  coordinator decides retries from the journal. A scheduler that reruns the
  tasks of a lost worker by itself (``allowed-failures`` above 0, Dask's
  default) gets every item with ``check_first``, so a rerun finds what the
  first run published and never writes it twice; the LocalCluster this
  executor starts has ``allowed_failures=0``, so a lost worker's tasks come
  back as failed and the coordinator retries just those items, checked first;
* **a cap on large streams per machine**: tasks holding a large item ask for
  one ``exitplan-stream`` resource where the workers declare it (``dask
  worker --resources exitplan-stream=2``; the LocalCluster does);
* **cooperative cancellation**: a ``distributed.Event`` per run that tasks
  look at between chunks (Dask's ``cancel`` cannot stop a running task);
* **no credentials in task arguments**: workers build their source and
  destinations from a secret-free ``WorkerSpec`` and their own environment.
"""

from __future__ import annotations

import logging
import queue
import uuid
from dataclasses import replace
from typing import Any

from orchestrator.errors import ConfigError
from orchestrator.export.executors.base import (
    CopyTask,
    Executor,
    Report,
    TaskEnded,
    TransferJob,
)
from orchestrator.export.executors.dask_worker import decode_outcome, decode_report, run_copy_task

log = logging.getLogger(__name__)

#: The worker resource that caps large streams per machine.
STREAM_RESOURCE = "exitplan-stream"
#: Small objects per task: Dask costs a few ms per task (bench/RESULTS.md,
#: "Dask: the cost of a task"); 32 objects of W1 take ~60 ms of work.
DEFAULT_BATCH_ITEMS = 32
DEFAULT_BATCH_BYTES = 8 * 1024 * 1024
#: Large streams at once per worker process of a LocalCluster.
DEFAULT_STREAMS_PER_WORKER = 2
_CONNECT_TIMEOUT_S = 30


def dask_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("distributed") is not None


def require_dask(what: str) -> None:
    if not dask_available():
        raise ConfigError(
            f"{what} needs Dask, which is not installed: pip install 'exitplan[dask]'"
        )


class DaskExecutor(Executor):
    """Runs copy tasks on a Dask cluster: ``scheduler`` (an address) or ``workers``
    local worker processes of ``threads_per_worker`` threads each."""

    remote = True

    def __init__(
        self,
        *,
        scheduler: str | None = None,
        workers: int | None = None,
        threads_per_worker: int = 16,
        streams_per_worker: int = DEFAULT_STREAMS_PER_WORKER,
        batch_items: int = DEFAULT_BATCH_ITEMS,
        batch_bytes: int = DEFAULT_BATCH_BYTES,
    ) -> None:
        if (scheduler is None) == (workers is None):
            raise ValueError("give a scheduler address or a number of local workers")
        require_dask("transfer.executor: dask")
        self.scheduler = scheduler
        self.workers = workers
        self.threads_per_worker = threads_per_worker
        self.streams_per_worker = streams_per_worker
        self.batch_items = batch_items
        self.batch_bytes = batch_bytes
        self._cluster: Any = None
        self._client: Any = None
        self._job: TransferJob | None = None
        self._spec: Any = None
        self._threads = 1
        self._streams = False
        self._reruns = False
        self._futures: dict[str, Any] = {}
        self._arrivals: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._cancel_name = ""
        self._topic = ""
        self._cancelled = False

    # -- the cluster -------------------------------------------------------------------

    def start(self, job: TransferJob) -> None:
        if job.spec is None:
            raise ValueError("a Dask executor needs the run's worker spec")
        if self._client is None:
            self._connect()
        assert self._client is not None
        client = self._client
        self._job = job
        info = client.scheduler_info()
        workers = list(info.get("workers", {}).values())
        self._threads = max(1, sum(int(w.get("nthreads", 1)) for w in workers))
        self._streams = any(STREAM_RESOURCE in (w.get("resources") or {}) for w in workers)
        try:
            allowed = client.run_on_scheduler(_allowed_failures)
        except Exception:  # a scheduler that runs no code of ours: assume Dask's default
            allowed = 3
        self._reruns = int(allowed) > 0
        spec = job.spec
        if spec.settings.bwlimit:
            spec = replace(
                spec, worker_bwlimit=max(1, spec.settings.bwlimit // max(1, len(workers)))
            )
        # Once per run, not once per task: every task refers to the same copy.
        self._spec = client.scatter(spec, broadcast=True, hash=False)
        tag = f"{job.run_id}-{uuid.uuid4().hex[:8]}"
        self._cancel_name = f"exitplan-cancel-{tag}"
        self._topic = f"exitplan-reports-{tag}"
        client.subscribe_topic(self._topic, self._arrivals.put)

    def _connect(self) -> None:
        from distributed import Client, LocalCluster

        if self.workers is not None:
            self._cluster = LocalCluster(
                n_workers=self.workers,
                threads_per_worker=self.threads_per_worker,
                processes=True,
                dashboard_address=None,
                silence_logs=logging.ERROR,
                resources={STREAM_RESOURCE: self.streams_per_worker},
                scheduler_kwargs={"allowed_failures": 0},
            )
            self._client = Client(self._cluster)
            return
        try:
            self._client = Client(self.scheduler, timeout=_CONNECT_TIMEOUT_S)
        except (OSError, TimeoutError) as exc:
            raise ConfigError(
                f"transfer.scheduler: cannot reach the Dask scheduler at {self.scheduler} "
                f"({exc}); start it (`dask scheduler`) or fix the address"
            ) from None

    @property
    def capacity(self) -> int:
        return 2 * self._threads

    def describe(self) -> str:
        if self.workers is not None:
            return f"Dask, {self.workers} local worker process(es)"
        return f"Dask at {self.scheduler}"

    # -- tasks -------------------------------------------------------------------------

    def submit(self, task: CopyTask) -> None:
        if self._client is None or self._job is None:
            raise RuntimeError("the executor was not started")
        if self._reruns:
            # The scheduler may run a task again by itself after losing its
            # worker; that run must find what the first one published.
            task = replace(task, items=tuple(replace(w, check_first=True) for w in task.items))
        resources = {STREAM_RESOURCE: 1} if task.large and self._streams else None
        future = self._client.submit(
            run_copy_task,
            self._spec,
            task,
            self._cancel_name,
            self._topic,
            key=task.key,
            pure=False,
            retries=0,
            resources=resources,
        )
        self._futures[task.key] = future
        future.add_done_callback(self._arrivals.put)

    def reports(self, timeout: float) -> list[Report]:
        arrived: list[Any] = []
        try:
            arrived.append(
                self._arrivals.get(timeout=timeout) if timeout > 0 else self._arrivals.get_nowait()
            )
        except queue.Empty:
            return []
        while True:
            try:
                arrived.append(self._arrivals.get_nowait())
            except queue.Empty:
                break
        found: list[Report] = []
        done = []
        for entry in arrived:
            if isinstance(entry, tuple):  # a worker event: (timestamp, message)
                try:
                    found.append(decode_report(entry[1]))
                except (KeyError, TypeError, ValueError) as exc:
                    log.warning("ignoring a worker report that cannot be read: %s", exc)
            else:
                done.append(entry)
        finished = [f for f in done if f.status == "finished"]
        results = self._client.gather(finished, errors="skip") if finished else []
        for future, outcomes in zip(finished, results, strict=True):
            self._futures.pop(future.key, None)
            found.append(TaskEnded(future.key, outcomes=tuple(decode_outcome(o) for o in outcomes)))
        for future in done:
            if future.status == "finished":
                continue
            self._futures.pop(future.key, None)
            if future.status == "cancelled":
                found.append(TaskEnded(future.key, cancelled=True))
                continue
            try:
                error = future.exception(timeout=_CONNECT_TIMEOUT_S)
                text = f"{type(error).__name__}: {error}"
            except Exception as exc:
                text = f"{type(exc).__name__}: {exc}"
            found.append(TaskEnded(future.key, error=text))
        return found

    def cancel(self) -> None:
        if self._cancelled or self._client is None:
            return
        self._cancelled = True
        from distributed import Event

        try:
            Event(self._cancel_name, client=self._client).set()
        except Exception as exc:
            log.warning("could not tell the Dask workers to stop: %s", exc)

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                if self._topic:
                    client.unsubscribe_topic(self._topic)
                if self._cancel_name:
                    from distributed import Event

                    Event(self._cancel_name, client=client).clear()
            except Exception as exc:
                log.debug("closing the Dask client: %s", exc)
            client.close()
        cluster, self._cluster = self._cluster, None
        if cluster is not None:
            cluster.close()


def _allowed_failures(dask_scheduler: Any) -> int:
    """How often the scheduler reruns a task whose worker died (runs on the scheduler)."""
    return int(getattr(dask_scheduler, "allowed_failures", 3))
