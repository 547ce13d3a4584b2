"""The contract every copy executor passes: threads here, Dask processes elsewhere.

A subclass sets ``__test__ = True`` and provides the ``executor`` fixture
(a fresh, unstarted executor). The tests run real copy tasks from a moto
server into a local directory, and the real coordinator on top.
"""

from __future__ import annotations

import hashlib
import pickle
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from orchestrator.clock import SystemClock
from orchestrator.config import DestinationConfig, Secret
from orchestrator.events import EventBus
from orchestrator.export.executors.base import (
    BytesRead,
    CopyTask,
    Executor,
    ItemEnded,
    ItemOutcome,
    ItemWork,
    Report,
    TaskEnded,
    TransferJob,
    task_key,
)
from orchestrator.export.executors.spec import (
    DestinationSpec,
    EnvReference,
    SourceSpec,
    WorkerSpec,
    worker_spec,
)
from orchestrator.export.exporters.base import ExportContext, ExportItem
from orchestrator.export.exporters.s3 import S3Exporter
from orchestrator.export.transfer import (
    Destination,
    ItemCopier,
    TransferEngine,
    TransferSettings,
    WorkerRuntime,
    provider_rule_of,
    retry_rule,
)
from orchestrator.plan.priorities import Prioritizer
from orchestrator.run.cancel import CancelReason, CancelToken
from orchestrator.run.journal import Journal
from orchestrator.run.progress import RunProgress
from providers.aws import AwsAccount
from providers.storage import LocalObjectStore

BUCKET = "executor-contract"
MiB = 1024 * 1024
#: Streamed at the rate limit below, it takes long enough to be cancelled mid-way.
SLOW_KEY = "slow/large.bin"
SLOW_SIZE = 24 * MiB
SLOW_RATE = 4 * MiB
PART_SIZE = 64 * MiB  # larger than any object here: every item is one stream


def body(key: str, size: int) -> bytes:
    seed = hashlib.sha256(key.encode()).digest()
    return (seed * (size // 32 + 1))[:size]


SMALL = {f"small/{i:02d}.bin": body(f"s{i}", 1000 + i * 977) for i in range(12)}


class Run:
    """One run's job for an executor: the copier here, and the spec for workers elsewhere."""

    def __init__(self, endpoint: str, tmp: Path, bwlimit: int | None = None) -> None:
        self.cancel = CancelToken()
        self.vault = tmp / "vault"
        self.account = AwsAccount(regions=["us-east-1"], endpoint_url=endpoint)
        self.exporter = S3Exporter(
            self.account,
            tier_of=Prioritizer([]),
            context=ExportContext(run_id="contract", part_size=PART_SIZE),
        )
        self.settings = TransferSettings(concurrency=4, max_backoff_s=0.01, bwlimit=bwlimit)
        self.destination = Destination("vault", LocalObjectStore("vault", self.vault))
        rule = retry_rule(provider_rule_of(self.exporter))
        self.runtime = WorkerRuntime(
            exporter=lambda kind: self.exporter,
            destinations=[self.destination],
            settings=self.settings,
            cancel=self.cancel,
            retry_rule_for=lambda kind: rule,
            bwlimit=bwlimit,
        )
        self.spec = WorkerSpec(
            run_id="contract",
            source=SourceSpec(regions=("us-east-1",), endpoint_url=endpoint),
            part_size=PART_SIZE,
            destinations=(
                DestinationSpec("vault", "vault", "local", (("path", str(self.vault)),)),
            ),
            settings=self.settings,
            kinds=frozenset({"s3"}),
        )
        self.items = {item.source["key"]: item for item in self.exporter.list_items()}

    def job(self) -> TransferJob:
        return TransferJob(
            run_id="contract",
            run_here=ItemCopier(self.runtime).run_task,
            cancel=self.cancel,
            spec=self.spec,
        )

    def task(self, keys: list[str], attempt: int = 1, check_first: bool = False) -> CopyTask:
        works = tuple(
            ItemWork(
                item=self.items[key],
                destinations=("vault",),
                attempt=attempt,
                max_attempts=3,
                check_first=check_first,
            )
            for key in keys
        )
        return CopyTask(task_key("contract", works), works, large=any(k == SLOW_KEY for k in keys))

    def stored(self, key: str) -> Path:
        return self.vault / "s3" / BUCKET / key


def collect(executor: Executor, tasks: int, timeout_s: float = 120.0) -> list[Report]:
    """Every report until ``tasks`` tasks have ended."""
    reports: list[Report] = []
    ended = 0
    deadline = time.monotonic() + timeout_s
    while ended < tasks:
        assert time.monotonic() < deadline, f"only {ended} of {tasks} tasks ended"
        for report in executor.reports(0.5):
            reports.append(report)
            ended += isinstance(report, TaskEnded)
    return reports


def outcomes(reports: list[Report]) -> dict[str, ItemOutcome]:
    """Each item's outcome, from ItemEnded reports or the tasks' own results."""
    found: dict[str, ItemOutcome] = {}
    for report in reports:
        if isinstance(report, ItemEnded):
            found.setdefault(report.outcome.idem_key, report.outcome)
        elif isinstance(report, TaskEnded):
            for outcome in report.outcomes:
                found.setdefault(outcome.idem_key, outcome)
    return found


class ExecutorContract:
    __test__ = False

    @pytest.fixture
    def executor(self) -> Iterator[Executor]:
        raise NotImplementedError

    @pytest.fixture(scope="class")
    @classmethod
    def bucket(cls, moto_endpoint: str) -> str:
        s3 = AwsAccount(regions=["us-east-1"], endpoint_url=moto_endpoint).client("s3")
        s3.create_bucket(Bucket=BUCKET)
        for key, data in SMALL.items():
            s3.put_object(Bucket=BUCKET, Key=key, Body=data)
        s3.put_object(Bucket=BUCKET, Key=SLOW_KEY, Body=body(SLOW_KEY, SLOW_SIZE))
        return moto_endpoint

    def test_every_item_of_every_task_ends_with_its_outcome(
        self, executor: Executor, bucket: str, tmp_path: Path
    ) -> None:
        run = Run(bucket, tmp_path)
        executor.start(run.job())
        assert executor.capacity >= 1
        keys = sorted(SMALL)
        batches = [keys[:5], keys[5:6], keys[6:]]
        for batch in batches:
            executor.submit(run.task(batch))
        reports = collect(executor, len(batches))
        assert {r.key for r in reports if isinstance(r, TaskEnded)} == {
            run.task(b).key for b in batches
        }
        assert not any(r.error or r.cancelled for r in reports if isinstance(r, TaskEnded))
        found = outcomes(reports)
        assert set(found) == {run.items[k].idem_key for k in keys}
        for key in keys:
            outcome = found[run.items[key].idem_key]
            [copy] = outcome.stored
            assert copy.destination == "vault" and not outcome.failed and not outcome.cancelled
            assert copy.size == len(SMALL[key]) and outcome.bytes_read == len(SMALL[key])
            assert copy.sha256 == hashlib.sha256(SMALL[key]).hexdigest()
            assert copy.source_checksum and copy.source_checksum.startswith(("md5:", "crc32:"))
            assert run.stored(key).read_bytes() == SMALL[key]

    def test_a_task_run_again_after_an_unknown_end_writes_nothing_twice(
        self, executor: Executor, bucket: str, tmp_path: Path
    ) -> None:
        """Idempotent tasks: the same items again, told the last end is unknown, find
        what is published, check it, and leave it as it is."""
        run = Run(bucket, tmp_path)
        executor.start(run.job())
        keys = sorted(SMALL)[:4]
        executor.submit(run.task(keys))
        collect(executor, 1)
        before = {key: run.stored(key).stat() for key in keys}
        executor.submit(run.task(keys, attempt=2, check_first=True))
        found = outcomes(collect(executor, 1))
        for key in keys:
            [copy] = found[run.items[key].idem_key].stored
            assert copy.adopted and copy.sha256 == hashlib.sha256(SMALL[key]).hexdigest()
            after = run.stored(key).stat()
            assert (after.st_ino, after.st_mtime_ns) == (
                before[key].st_ino,
                before[key].st_mtime_ns,
            ), f"{key} was written again"

    def test_cancel_reaches_a_running_task_between_chunks(
        self, executor: Executor, bucket: str, tmp_path: Path
    ) -> None:
        run = Run(bucket, tmp_path, bwlimit=SLOW_RATE)
        executor.start(run.job())
        executor.submit(run.task([SLOW_KEY]))
        reports: list[Report] = []
        deadline = time.monotonic() + 60
        while not any(isinstance(r, BytesRead) for r in reports):  # it is reading
            assert time.monotonic() < deadline, "the slow task never reported progress"
            reports += executor.reports(0.5)
        run.cancel.cancel(CancelReason.INTERRUPTED)
        executor.cancel()
        cancelled_at = time.monotonic()
        reports += collect(executor, 1, timeout_s=30)
        stopped_after = time.monotonic() - cancelled_at
        outcome = outcomes(reports)[run.items[SLOW_KEY].idem_key]
        assert outcome.cancelled and not outcome.stored
        assert 0 < outcome.bytes_read < SLOW_SIZE
        # Read at full speed it would take SLOW_SIZE / SLOW_RATE = 6 s more.
        assert stopped_after < 4, stopped_after
        assert not run.stored(SLOW_KEY).exists()

    def test_the_coordinator_copies_through_it_within_its_window(
        self, executor: Executor, bucket: str, tmp_path: Path
    ) -> None:
        run = Run(bucket, tmp_path)
        counting = CountingExecutor(executor)
        journal = Journal(tmp_path / "journal.sqlite")
        run_id = journal.start_run("export", None, {})
        events = EventBus()
        engine = TransferEngine(
            destinations=[run.destination],
            journal=journal,
            run_id=run_id,
            events=events,
            progress=RunProgress(
                run_id=run_id, journal=journal, events=events, clock=SystemClock(), deadline=None
            ),
            settings=replace(run.settings, concurrency=2),
            executor=counting,
            worker_spec=run.spec,
        )
        only_small = SmallOnly(run.account, tier_of=Prioritizer([]), context=run.exporter.context)
        try:
            engine.export(only_small)
        finally:
            engine.close()
        assert journal.item_counts(run_id)["verified"] == len(SMALL)
        for key, data in SMALL.items():
            assert run.stored(key).read_bytes() == data
        assert 1 <= counting.most_in_flight <= executor.capacity
        assert counting.items == len(SMALL)

    def test_task_arguments_hold_no_secret(self, executor: Executor, tmp_path: Path) -> None:
        """What a task carries is pickled (and kept by a scheduler, shown on a dashboard):
        a destination's credential travels as the name of its variable, never its value."""
        canary = "canary-secret-Wq93-never-pickled"
        store = LocalObjectStore("offsite", tmp_path / "offsite")
        config = DestinationConfig(
            "offsite",
            "s3",
            {
                "host": "127.0.0.1",
                "container": "c",
                "key": Secret("dest-key-id", "${DEST_KEY_ID}"),
                "secret": Secret(canary, "${DEST_SECRET}"),
            },
        )
        account = AwsAccount(regions=["us-east-1"], endpoint_url="http://127.0.0.1:9")
        spec = worker_spec(
            run_id="r",
            account=account,
            destinations=[Destination("offsite", store)],
            configs=[config],
            part_size=PART_SIZE,
            settings=TransferSettings(),
            kinds=frozenset({"s3"}),
        )
        assert spec is not None
        item = ExportItem(kind="s3", idem_key="s3:b/k", dest_key="s3/b/k", size=3, source={})
        work = ItemWork(item=item, destinations=("offsite",), attempt=1, max_attempts=3)
        task = CopyTask("k", (work,))
        for pickled in (pickle.dumps((spec, task)), _cloudpickled((spec, task))):
            assert canary.encode() not in pickled
            assert b"dest-key-id" not in pickled
        options = dict(spec.destinations[0].options)
        assert options["secret"] == EnvReference("${DEST_SECRET}")
        # On a worker, the value comes from that worker's environment.
        assert options["secret"].resolve({"DEST_SECRET": "from-the-worker"}, "x") == (
            "from-the-worker"
        )


def _cloudpickled(value: Any) -> bytes:
    cloudpickle = pytest.importorskip("cloudpickle")
    return bytes(cloudpickle.dumps(value))


class SmallOnly(S3Exporter):
    def list_items(self) -> Iterator[ExportItem]:
        return (item for item in super().list_items() if item.source["key"] in SMALL)


class CountingExecutor(Executor):
    """Passes everything to ``inner`` and counts the tasks it holds at once."""

    def __init__(self, inner: Executor) -> None:
        self.inner = inner
        self.remote = inner.remote
        self.batch_items = inner.batch_items
        self.batch_bytes = inner.batch_bytes
        self.in_flight = 0
        self.most_in_flight = 0
        self.items = 0

    def start(self, job: TransferJob) -> None:
        self.inner.start(job)

    @property
    def capacity(self) -> int:
        return self.inner.capacity

    def submit(self, task: CopyTask) -> None:
        self.in_flight += 1
        self.items += len(task.items)
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        self.inner.submit(task)

    def reports(self, timeout: float) -> list[Report]:
        found = self.inner.reports(timeout)
        self.in_flight -= sum(isinstance(r, TaskEnded) for r in found)
        return found

    def cancel(self) -> None:
        self.inner.cancel()

    def close(self) -> None:
        self.inner.close()
