"""The copy engine: every item out of the source, into every destination, verified.

Two halves, which meet only through the messages of
``orchestrator.export.executors.base``:

**The coordinator** (``TransferEngine.run``) pulls items from a
``WorkSource`` (the order, admission and descoping are the source's), skips
what the journal already has stored, holds an item until the item it
``depends_on`` has settled, and hands the rest to an executor as tasks, a
sliding window of them at a time. It alone writes the journal, updates
progress and emits events, from the outcomes workers send back; it decides
retries (jittered, capped backoff that honours Retry-After, by the source
provider's retry rule) and tells the source how every item ended.

**The worker** (``ItemCopier``) makes one attempt at each item of a task,
in this process or on another machine. Each item is read from the source
once and fed to every destination that still needs it; md5 and sha256 are
computed as the bytes stream, and the source stream checks them against what
the source promised *before* the destinations publish, so a short or damaged
body is never visible as a complete object. Large items go as parallel
ranged parts written in place, each part reported (and journaled by the
coordinator) as it lands, so a kill costs at most a checkpoint per part.
Cancellation (Ctrl-C, the deadline) reaches workers between chunks.
"""

from __future__ import annotations

import hashlib
import heapq
import logging
import queue
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Protocol

import botocore.exceptions
import urllib3.exceptions
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt
from tenacity.wait import wait_random_exponential

from orchestrator.errors import Cancelled, ChecksumMismatch, ExitplanError, RetryableError
from orchestrator.events import EventBus, ItemFinished
from orchestrator.export.executors.base import (
    BytesRead,
    CopyTask,
    Executor,
    ItemEnded,
    ItemOutcome,
    ItemWork,
    PartWritten,
    Report,
    StoredCopy,
    TaskEnded,
    TransferJob,
    task_key,
)
from orchestrator.export.executors.threads import ThreadExecutor
from orchestrator.export.exporters.base import (
    Exporter,
    ExportItem,
    Part,
    RangedSource,
    SourceStream,
    is_unchecked,
    unchecked,
)
from orchestrator.export.work import KindByKind, Outcome, Wait, WorkSource
from orchestrator.run.cancel import CancelToken
from orchestrator.run.journal import Journal
from orchestrator.run.progress import RunProgress
from providers.interfaces.object_store import (
    ObjectNotFound,
    ObjectStore,
    PartWriter,
    StoredObject,
    StoreWriteError,
)

log = logging.getLogger(__name__)

CHUNK_SIZE = 1024 * 1024
#: How often a part's progress is reported (and journaled): what a kill can cost per part.
CHECKPOINT_BYTES = 4 * 1024 * 1024
#: A worker reports bytes read at most this often per item (progress).
_BYTES_REPORT = 4 * 1024 * 1024

RetryRule = Callable[[BaseException], bool]


@dataclass(frozen=True)
class Destination:
    """A named place the export goes to."""

    name: str
    store: ObjectStore


@dataclass(frozen=True)
class TransferSettings:
    concurrency: int = 16
    chunk_size: int = CHUNK_SIZE
    max_attempts: int = 6
    #: Total bytes per second read from the source, or None for no limit.
    bwlimit: int | None = None
    #: Longest wait between two attempts at one item.
    max_backoff_s: float = 20.0


class CancelCheck(Protocol):
    """What a worker asks of a cancel signal (a ``CancelToken``, or a cluster-wide flag)."""

    def is_set(self) -> bool: ...

    def raise_if_set(self) -> None: ...

    def wait(self, seconds: float) -> bool: ...


class RateLimiter:
    """A token bucket shared by all workers of a process (``--bwlimit``)."""

    def __init__(self, bytes_per_second: int, cancel: CancelCheck) -> None:
        self.rate = float(bytes_per_second)
        self._cancel = cancel
        self._lock = threading.Lock()
        self._allowance = self.rate
        self._last = time.monotonic()

    def consume(self, nbytes: int) -> None:
        with self._lock:
            now = time.monotonic()
            self._allowance = min(self.rate, self._allowance + (now - self._last) * self.rate)
            self._last = now
            self._allowance -= nbytes
            debt = -self._allowance
        if debt > 0:
            self._cancel.wait(debt / self.rate)


def retry_rule(provider_rule: RetryRule | None) -> RetryRule:
    """The engine's retry rule: the source provider's, the destinations', and damaged bodies.

    ``provider_rule`` is the source provider's own (``AwsAccount.should_retry``):
    the engine knows no provider's errors itself.
    """

    def should_retry(exc: BaseException) -> bool:
        if isinstance(exc, Cancelled):
            return False
        if isinstance(exc, RetryableError):
            return True
        if provider_rule is not None and provider_rule(exc):
            return True
        return isinstance(exc, urllib3.exceptions.HTTPError | ConnectionError | TimeoutError)

    return should_retry


def provider_rule_of(exporter: Exporter) -> RetryRule | None:
    """The retry rule of the provider ``exporter`` reads from, if it declares one."""
    rule = getattr(getattr(exporter, "account", None), "should_retry", None)
    return rule if callable(rule) else None


def _retry_after_seconds(exc: BaseException | None) -> float:
    retry_after = getattr(exc, "retry_after", None)
    if isinstance(retry_after, int | float):
        return float(retry_after)
    if isinstance(exc, botocore.exceptions.ClientError):
        headers = exc.response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
        try:
            return float(headers.get("retry-after", 0))
        except ValueError:
            return 0.0
    return 0.0


def backoff_seconds(attempt: int, retry_after: float, cap: float) -> float:
    """Jittered exponential backoff after ``attempt`` failed, never shorter than
    Retry-After, never longer than the cap (a server asking for more is asked
    again at the cap)."""
    jitter = random.uniform(0, min(cap, 0.25 * 2 ** (attempt - 1)))  # noqa: S311 - jitter, not a secret
    return min(cap, max(jitter, retry_after))


class _WaitHonouringRetryAfter:
    """``backoff_seconds`` as a tenacity wait (for the parts of a ranged item)."""

    def __init__(self, cap: float) -> None:
        self._jitter = wait_random_exponential(multiplier=0.25, max=cap)
        self._cap = cap

    def __call__(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        return min(self._cap, max(self._jitter(state), _retry_after_seconds(exc)))


# =====================================================================================
# The worker: one attempt at each item of a task. Never touches the journal.
# =====================================================================================


class _Meter:
    """Counts an item's bytes as they are read; reports them now and then (progress)."""

    def __init__(self, work: ItemWork, report: Callable[[Report], None]) -> None:
        self.work = work
        self._report = report
        self._lock = threading.Lock()
        self.total = 0
        self._unreported = 0
        self.requests = 0

    def add(self, nbytes: int) -> None:
        with self._lock:
            self.total += nbytes
            self._unreported += nbytes
            if self._unreported < _BYTES_REPORT:
                return
            unreported, self._unreported = self._unreported, 0
        item = self.work.item
        self._report(BytesRead(item.idem_key, self.work.attempt, item.kind, unreported))


class _Hashing:
    """Iterates a source stream, hashing, counting, throttling and checking at the end."""

    def __init__(
        self,
        item: ExportItem,
        stream: SourceStream,
        cancel: CancelCheck,
        limiter: RateLimiter | None,
        on_bytes: Callable[[int], None],
    ) -> None:
        self.item = item
        self.stream = stream
        self.cancel = cancel
        self.limiter = limiter
        self.on_bytes = on_bytes
        # The md5 is the slowest hash; sources with a cheaper checksum skip it.
        self.md5 = hashlib.md5(usedforsecurity=False) if stream.wants_md5 else None
        self.sha256 = hashlib.sha256()
        self.size = 0
        self.source_checksum: str | None = None
        #: Set once every byte was read and the source's checks passed.
        self.finished = False

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.stream:
            self.cancel.raise_if_set()
            if self.item.size is not None and self.size + len(chunk) > self.item.size:
                # Bounded work: a body longer than listed is never read to its end.
                raise ChecksumMismatch(
                    f"{self.item.dest_key}: the body goes on past the {self.item.size} bytes "
                    "the source listed"
                )
            if self.limiter is not None:
                self.limiter.consume(len(chunk))
            if self.md5 is not None:
                self.md5.update(chunk)
            self.sha256.update(chunk)
            self.size += len(chunk)
            self.on_bytes(len(chunk))
            yield chunk
        if self.item.size is not None and self.size != self.item.size:
            raise ChecksumMismatch(
                f"{self.item.dest_key}: read {self.size} bytes, the source listed "
                f"{self.item.size}; the body was cut short"
            )
        # Raised here, before the last chunk is handed over, the store never
        # sees the end of the stream and publishes nothing.
        self.source_checksum = self.stream.verify(
            size=self.size,
            md5_hex=self.md5.hexdigest() if self.md5 is not None else "",
            sha256_hex=self.sha256.hexdigest(),
        )
        self.finished = True


_END = object()


class _Failed:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def _drain(feed: queue.Queue[Any], cancel: CancelCheck) -> Iterator[bytes]:
    while True:
        try:
            chunk = feed.get(timeout=0.5)
        except queue.Empty:
            cancel.raise_if_set()
            continue
        if chunk is _END:
            return
        if isinstance(chunk, _Failed):
            raise RetryableError("the source stream failed; nothing published") from chunk.exc
        yield chunk


class WorkerRuntime:
    """What a worker copies with: exporters, destinations, pools, the cancel signal.

    One per process and run (the coordinator's own in this process; a Dask
    worker builds one from a ``WorkerSpec``). ``sleep`` is how a part waits
    between two attempts (default: on the cancel signal, so a cancel wakes
    it at once); tests inject one to see the waits without spending them.
    """

    def __init__(
        self,
        *,
        exporter: Callable[[str], Exporter],
        destinations: Sequence[Destination],
        settings: TransferSettings,
        cancel: CancelCheck,
        retry_rule_for: Callable[[str], RetryRule],
        sleep: Callable[[float], None] | None = None,
        bwlimit: int | None = None,
    ) -> None:
        self.exporter = exporter
        self.destinations = {d.name: d for d in destinations}
        self.settings = settings
        self.cancel = cancel
        self.retry_rule_for = retry_rule_for
        self.sleep = sleep
        self.limiter = RateLimiter(bwlimit, cancel) if bwlimit else None
        fanout_threads = settings.concurrency * max(0, len(destinations) - 1)
        self.fanout_pool = (
            ThreadPoolExecutor(fanout_threads, thread_name_prefix="exitplan-fanout")
            if fanout_threads
            else None
        )
        # Parts of large items are fetched on their own pool: an item worker
        # waiting on its parts must never wait for a slot in its own pool.
        self.part_pool = ThreadPoolExecutor(
            settings.concurrency, thread_name_prefix="exitplan-part"
        )

    def sleep_unless_cancelled(self, seconds: float) -> None:
        if self.sleep is not None:
            self.cancel.raise_if_set()
            self.sleep(seconds)
            self.cancel.raise_if_set()
            return
        if self.cancel.wait(seconds):
            self.cancel.raise_if_set()
            raise Cancelled("stopped")

    def close(self) -> None:
        if self.fanout_pool is not None:
            self.fanout_pool.shutdown(wait=True, cancel_futures=True)
        self.part_pool.shutdown(wait=True, cancel_futures=True)


@dataclass
class _Attempt:
    """What one attempt at one item found, on its way to an ``ItemOutcome``."""

    stored: list[StoredCopy] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    error: BaseException | None = None
    record: Mapping[str, Any] | None = None
    staged: list[str] = field(default_factory=list)
    discarded: list[str] = field(default_factory=list)


class ItemCopier:
    """Runs copy tasks: one attempt at each item, an ``ItemEnded`` report for each."""

    def __init__(self, runtime: WorkerRuntime) -> None:
        self.runtime = runtime

    def run_task(self, task: CopyTask, report: Callable[[Report], None]) -> None:
        """Copy each item of ``task`` in turn; never raises for one item's failure."""
        for work in task.items:
            report(ItemEnded(self.copy(work, report)))

    def copy(self, work: ItemWork, report: Callable[[Report], None]) -> ItemOutcome:
        """One attempt at ``work``: what was stored where, and what went wrong."""
        item = work.item
        runtime = self.runtime
        started = time.monotonic()
        meter = _Meter(work, report)
        attempt = _Attempt()
        cancelled = False
        should_retry = runtime.retry_rule_for(item.kind)
        try:
            targets = [runtime.destinations[name] for name in work.destinations]
            runtime.cancel.raise_if_set()
            exporter = runtime.exporter(item.kind)
            if work.check_first:
                targets = self._adopt(exporter, work, targets, meter, attempt)
            if targets:
                self._copy_once(exporter, work, targets, meter, attempt, report)
        except Cancelled:
            cancelled = True
        except (Exception, GeneratorExit) as exc:  # one item's failure must not stop the rest
            attempt.error = exc
            done = {copy.destination for copy in attempt.stored}
            attempt.failed = [name for name in work.destinations if name not in done]
        if isinstance(attempt.error, Cancelled):
            cancelled = True
        retryable = attempt.error is not None and should_retry(attempt.error)
        given_up = not retryable or work.attempt >= work.max_attempts
        if attempt.failed and attempt.staged and not cancelled and given_up:
            # An item given up on keeps no resumable staging copy (it may
            # be what filled the disk); a later run starts it afresh.
            for name in attempt.failed:
                if name in attempt.staged and name not in attempt.discarded:
                    self._discard_staged_parts(runtime.destinations[name], item)
                    attempt.discarded.append(name)
        if cancelled:
            done = {copy.destination for copy in attempt.stored}
            attempt.failed = [name for name in work.destinations if name not in done]
        return ItemOutcome(
            idem_key=item.idem_key,
            attempt=work.attempt,
            stored=tuple(attempt.stored),
            failed=tuple(attempt.failed),
            error="" if cancelled or not attempt.failed else _describe_error(attempt.error),
            retryable=retryable,
            retry_after=_retry_after_seconds(attempt.error),
            cancelled=cancelled,
            record=attempt.record,
            staged=tuple(attempt.staged),
            discarded_parts=tuple(attempt.discarded),
            bytes_read=meter.total,
            seconds=time.monotonic() - started,
            requests=max(1, meter.requests),
        )

    def _discard_staged_parts(self, destination: Destination, item: ExportItem) -> None:
        try:
            destination.store.open_part_writer(item.dest_key, 0, _resume_token(item)).abort()
        except (OSError, ExitplanError) as exc:
            log.warning("could not remove the staged parts of %s: %s", item.dest_key, exc)

    # -- a destination that may hold the item already -------------------------------

    def _adopt(
        self,
        exporter: Exporter,
        work: ItemWork,
        targets: list[Destination],
        meter: _Meter,
        attempt: _Attempt,
    ) -> list[Destination]:
        """Keep what an attempt whose end was never reported published: a destination
        whose object has the source's bytes is checked, not written again. Returns
        the destinations still to write."""
        item = work.item
        found: list[tuple[Destination, StoredObject]] = []
        for target in targets:
            stat = target.store.stat(item.dest_key)
            if stat is not None and (item.size is None or stat.size == item.size):
                found.append((target, stat))
        if not found:
            return targets
        adopted: set[str] = set()
        ranged = None
        if all("part_write" in t.store.capabilities for t, _ in found):
            ranged = exporter.open_ranged(item)
        if ranged is not None:
            meter.requests += 1
            for target, _ in found:
                try:
                    size, sha256, checksum = self._read_back(
                        target.store.get(item.dest_key), ranged
                    )
                except (ChecksumMismatch, ObjectNotFound):
                    continue  # not the source's bytes: written again
                attempt.stored.append(StoredCopy(target.name, size, sha256, checksum, adopted=True))
                adopted.add(target.name)
        else:
            stream = exporter.open(item)
            meter.requests += 1
            hashing = _Hashing(item, stream, self.runtime.cancel, self.runtime.limiter, meter.add)
            try:
                for _ in hashing:
                    pass
                record = stream.record() if item.keeps_record else None
            finally:
                stream.close()
            if item.keeps_record and record is None:
                return targets
            for target, _ in found:
                digest = hashlib.sha256()
                size = 0
                try:
                    for chunk in target.store.get(item.dest_key):
                        digest.update(chunk)
                        size += len(chunk)
                except ObjectNotFound:
                    continue
                if size == hashing.size and digest.hexdigest() == hashing.sha256.hexdigest():
                    attempt.stored.append(
                        StoredCopy(
                            target.name, size, digest.hexdigest(), hashing.source_checksum, True
                        )
                    )
                    attempt.record = record
                    adopted.add(target.name)
        if adopted:
            log.info(
                "%s was already published at %s; checked, not written again",
                item.dest_key,
                ", ".join(sorted(adopted)),
            )
        return [t for t in targets if t.name not in adopted]

    def _read_back(
        self, chunks: Iterable[bytes], ranged: RangedSource
    ) -> tuple[int, str, str | None]:
        """(size, sha256, source checksum) of bytes the ranged source vouches for.

        Raises ``ChecksumMismatch`` (from the source's checks) when it does not.
        """
        md5 = hashlib.md5(usedforsecurity=False) if ranged.wants_md5 else None
        sha256 = hashlib.sha256()
        size = 0
        for chunk in chunks:
            self.runtime.cancel.raise_if_set()
            if md5 is not None:
                md5.update(chunk)
            sha256.update(chunk)
            ranged.observe(chunk)
            size += len(chunk)
        checksum = ranged.verify(
            size=size,
            md5_hex=md5.hexdigest() if md5 is not None else "",
            sha256_hex=sha256.hexdigest(),
        )
        return size, sha256.hexdigest(), checksum

    # -- one attempt ------------------------------------------------------------------

    def _copy_once(
        self,
        exporter: Exporter,
        work: ItemWork,
        targets: list[Destination],
        meter: _Meter,
        attempt: _Attempt,
        report: Callable[[Report], None],
    ) -> None:
        item = work.item
        if all("part_write" in target.store.capabilities for target in targets):
            ranged = exporter.open_ranged(item)
            if ranged is not None:
                attempt.staged.extend(target.name for target in targets)
                meter.requests += 1  # the HEAD that sized it
                self._copy_ranged_once(work, ranged, targets, meter, attempt, report)
                return
        stream = exporter.open(item)
        meter.requests += 1
        hashing = _Hashing(item, stream, self.runtime.cancel, self.runtime.limiter, meter.add)
        try:
            outcomes = self._put_everywhere(item.dest_key, hashing, targets)
            record = stream.record() if hashing.finished and item.keeps_record else None
        finally:
            stream.close()
        for destination, outcome in zip(targets, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                attempt.failed.append(destination.name)
                attempt.error = outcome
                continue
            try:
                self._check_stored(destination, outcome, hashing)
            except ChecksumMismatch as exc:
                attempt.failed.append(destination.name)
                attempt.error = exc
                continue
            attempt.record = record
            attempt.stored.append(
                StoredCopy(
                    destination.name,
                    hashing.size,
                    hashing.sha256.hexdigest(),
                    hashing.source_checksum,
                )
            )
        if isinstance(attempt.error, Cancelled):
            raise attempt.error

    def _copy_ranged_once(
        self,
        work: ItemWork,
        ranged: RangedSource,
        targets: list[Destination],
        meter: _Meter,
        attempt: _Attempt,
        report: Callable[[Report], None],
    ) -> None:
        """Fetch the parts not yet written, in parallel, in place; then verify and publish.

        Each part is reported once written at every target (the coordinator
        journals it), so an attempt cut short (a fault, a kill -9) resumes
        from the parts it finished. The whole is then re-read from each
        target and checked before publishing: that read is the end-to-end
        check of what the store actually holds.
        """
        item = work.item
        token = _resume_token(item)
        writers: dict[str, PartWriter] = {}
        try:
            for target in targets:
                writers[target.name] = target.store.open_part_writer(
                    item.dest_key, ranged.size, token
                )
            self._fetch_parts(work, ranged, writers, dict(work.parts_done), meter, report)
        except BaseException:
            for writer in writers.values():
                _release(writer)  # keep the staged parts for the next attempt
            raise
        for target in targets:
            writer = writers[target.name]
            try:
                size, sha256, source_checksum = self._read_back(writer.read_back(), ranged)
            except ChecksumMismatch as exc:
                # The staged bytes are wrong somewhere: start this one over.
                writer.abort()
                attempt.discarded.append(target.name)
                attempt.failed.append(target.name)
                attempt.error = exc
                continue
            except BaseException:
                for open_writer in writers.values():
                    _release(open_writer)  # committed or aborted ones are closed already
                raise
            try:
                stored = writer.commit()
                published = target.store.stat(stored.key)
                if published is None or published.size != size:
                    raise ChecksumMismatch(f"{target.name}: {stored.key} is not published whole")
            except Exception as exc:
                writer.abort()
                attempt.discarded.append(target.name)
                attempt.failed.append(target.name)
                attempt.error = exc
                continue
            attempt.stored.append(StoredCopy(target.name, size, sha256, source_checksum))

    def _fetch_parts(
        self,
        work: ItemWork,
        ranged: RangedSource,
        writers: dict[str, PartWriter],
        done: dict[int, int],
        meter: _Meter,
        report: Callable[[Report], None],
    ) -> None:
        runtime = self.runtime
        window = 2 * runtime.settings.concurrency
        in_flight: set[Future[None]] = set()
        first_error: BaseException | None = None

        def settle(futures: set[Future[None]]) -> None:
            nonlocal first_error
            for future in futures:
                exc = future.exception()
                if exc is not None and first_error is None:
                    first_error = exc

        for part in ranged.parts():
            if done.get(part.index, 0) >= part.length:
                continue
            runtime.cancel.raise_if_set()
            if first_error is not None:
                break
            while len(in_flight) >= window:
                finished, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
                settle(finished)
            meter.requests += 1
            in_flight.add(
                runtime.part_pool.submit(
                    self._fetch_part,
                    work,
                    ranged,
                    part,
                    writers,
                    done.get(part.index, 0),
                    meter,
                    report,
                )
            )
        settle(set(wait(in_flight).done))
        if first_error is not None:
            raise first_error
        runtime.cancel.raise_if_set()

    def _fetch_part(
        self,
        work: ItemWork,
        ranged: RangedSource,
        part: Part,
        writers: dict[str, PartWriter],
        written: int,
        meter: _Meter,
        report: Callable[[Report], None],
    ) -> None:
        """Fetch one part from where it was left, writing it in place as it arrives.

        Progress is reported every ``CHECKPOINT_BYTES``, so a kill costs at
        most that much of each part on the wire; a retry carries on from the
        last byte written, as a resume does.
        """
        runtime = self.runtime
        item = work.item
        retrying = Retrying(
            stop=stop_after_attempt(runtime.settings.max_attempts),
            wait=_WaitHonouringRetryAfter(runtime.settings.max_backoff_s),
            retry=retry_if_exception(runtime.retry_rule_for(item.kind)),
            sleep=runtime.sleep_unless_cancelled,
            reraise=True,
        )

        def checkpoint(done_bytes: int) -> None:
            report(PartWritten(item.idem_key, work.attempt, tuple(writers), part.index, done_bytes))

        for attempt in retrying:
            with attempt:
                runtime.cancel.raise_if_set()
                checkpointed = written
                for chunk in ranged.stream_part(part, written):
                    runtime.cancel.raise_if_set()
                    if written + len(chunk) > part.length:
                        raise ChecksumMismatch(
                            f"{item.dest_key}: part {part.index} is longer than {part.length}"
                        )
                    if runtime.limiter is not None:
                        runtime.limiter.consume(len(chunk))
                    for writer in writers.values():
                        writer.write_at(part.offset + written, chunk)
                    written += len(chunk)
                    meter.add(len(chunk))
                    if written - checkpointed >= CHECKPOINT_BYTES:
                        checkpoint(written)
                        checkpointed = written
                if written != part.length:
                    raise ChecksumMismatch(
                        f"{item.dest_key}: part {part.index} has {written} of {part.length} bytes"
                    )
        checkpoint(written)

    def _check_stored(
        self, destination: Destination, stored: StoredObject, hashing: _Hashing
    ) -> None:
        """What the store says it wrote, and what it now publishes, against what was read.

        Never skipped: a store's own figures are of what its writes accepted,
        and the stat shows the published object is whole.
        """
        if not hashing.finished:
            raise ChecksumMismatch(
                f"{destination.name}: the store stopped reading {stored.key} after "
                f"{hashing.size} bytes and did not say why"
            )
        sha = hashing.sha256.hexdigest()
        if stored.size != hashing.size or (stored.sha256 is not None and stored.sha256 != sha):
            raise ChecksumMismatch(
                f"{destination.name}: stored {stored.size} bytes (sha256 {stored.sha256}) "
                f"but sent {hashing.size} bytes (sha256 {sha})"
            )
        published = destination.store.stat(stored.key)
        if published is None or published.size != hashing.size:
            raise ChecksumMismatch(
                f"{destination.name}: {stored.key} is not published with {hashing.size} bytes"
            )

    def _put_everywhere(
        self, key: str, chunks: Iterable[bytes], targets: list[Destination]
    ) -> list[StoredObject | BaseException]:
        """Feed one read to every target; each result is a StoredObject or its error."""
        cancel = self.runtime.cancel
        if len(targets) == 1:
            try:
                return [targets[0].store.put_stream(key, chunks)]
            except Cancelled:
                raise
            except (Exception, GeneratorExit) as exc:
                return [_as_store_failure(targets[0], exc)]
        pool = self.runtime.fanout_pool
        assert pool is not None
        feeds: list[queue.Queue[Any]] = [queue.Queue(maxsize=8) for _ in targets[1:]]
        futures = [
            pool.submit(target.store.put_stream, key, _drain(feed, cancel))
            for target, feed in zip(targets[1:], feeds, strict=True)
        ]

        def offer(feed: queue.Queue[Any], future: Future[StoredObject], message: Any) -> None:
            # A secondary store that failed stops reading; never block on it.
            while not future.done():
                try:
                    feed.put(message, timeout=0.5)
                    return
                except queue.Full:
                    continue

        def primary() -> Iterator[bytes]:
            finished = False
            failure: BaseException = RetryableError("the primary destination stopped reading")
            try:
                for chunk in chunks:
                    for feed, future in zip(feeds, futures, strict=True):
                        offer(feed, future, chunk)
                    yield chunk
                finished = True
            except BaseException as exc:
                failure = exc
                raise
            finally:
                ending = _END if finished else _Failed(failure)
                for feed, future in zip(feeds, futures, strict=True):
                    offer(feed, future, ending)

        results: list[StoredObject | BaseException] = []
        try:
            results.append(targets[0].store.put_stream(key, primary()))
        except (Exception, GeneratorExit) as exc:
            results.append(_as_store_failure(targets[0], exc))
        for target, future in zip(targets[1:], futures, strict=True):
            try:
                results.append(future.result())
            except (Exception, GeneratorExit) as exc:
                results.append(_as_store_failure(target, exc))
        return results


# =====================================================================================
# The coordinator: the only writer of the journal, progress and events.
# =====================================================================================


@dataclass
class _Flight:
    """An item the coordinator started and has not settled yet."""

    item: ExportItem
    exporter: Exporter
    #: Every destination the item goes to this run (for items others depend on).
    wanted: list[str]
    #: Destinations still to reach.
    remaining: list[str]
    executor: Executor
    attempt: int = 1
    check_first: bool = False
    #: The task it is in, or None while it waits (ready, or for a retry).
    task: str | None = None
    bytes_read: int = 0
    seconds: float = 0.0
    requests: int = 0
    #: Bytes of the current attempt already counted in progress.
    reported: int = 0
    size: int = 0
    source_checksum: str | None = None


@dataclass
class TransferRun:
    """What the coordinator saw of the kinds of one run."""

    #: Kinds whose listing failed, with the error (the other kinds went on).
    listing_failures: dict[str, BaseException] = field(default_factory=dict)
    #: Kinds the source listed, in the order first seen.
    kinds: list[str] = field(default_factory=list)


class TransferEngine:
    """Copies the items of a work source to destinations; one engine per run.

    Items run on ``executor`` (default: a thread pool of this process); an
    executor that runs tasks elsewhere (Dask) gets the items of portable
    exporters, with ``worker_spec`` telling its workers how to build theirs,
    and everything else runs here. ``retry_rule`` is the source provider's
    (by default the one the exporter's account declares). ``sleep`` is how
    the engine waits between two attempts (default: the retry is due later
    and other items go on meanwhile); tests inject one to see the waits
    asked for without spending them.
    """

    def __init__(
        self,
        *,
        destinations: Sequence[Destination],
        journal: Journal,
        run_id: str,
        events: EventBus,
        progress: RunProgress,
        settings: TransferSettings | None = None,
        cancel: CancelToken | None = None,
        sleep: Callable[[float], None] | None = None,
        executor: Executor | None = None,
        worker_spec: Any = None,
        retry_rule: RetryRule | None = None,
    ) -> None:
        if not destinations:
            raise ValueError("a transfer needs at least one destination")
        self.destinations = tuple(destinations)
        self.journal = journal
        self.run_id = run_id
        self.events = events
        self.progress = progress
        self.settings = settings or TransferSettings()
        self.cancel = cancel or CancelToken()
        self._sleep = sleep
        self._provider_rule = retry_rule
        self._rules: dict[str, RetryRule] = {}
        self._source: WorkSource | None = None
        self._runtime = WorkerRuntime(
            exporter=self._exporter,
            destinations=self.destinations,
            settings=self.settings,
            cancel=self.cancel,
            retry_rule_for=self._rule_for,
            sleep=sleep,
            bwlimit=self.settings.bwlimit,
        )
        self._copier = ItemCopier(self._runtime)
        self._local: Executor = ThreadExecutor(self.settings.concurrency)
        self._remote = executor if executor is not None and executor.remote else None
        if executor is not None and not executor.remote:
            self._local = executor
        self._worker_spec = worker_spec
        self._started: set[int] = set()

    # -- what workers here use ---------------------------------------------------------

    def _exporter(self, kind: str) -> Exporter:
        if self._source is None:
            raise RuntimeError("no work source")
        return self._source.exporter(kind)

    def _rule_for(self, kind: str) -> RetryRule:
        rule = self._rules.get(kind)
        if rule is None:
            provider = self._provider_rule
            if provider is None:
                provider = provider_rule_of(self._exporter(kind))
            rule = self._rules[kind] = retry_rule(provider)
        return rule

    def close(self) -> None:
        self._local.close()
        if self._remote is not None:
            self._remote.close()
        self._runtime.close()

    # -- running -----------------------------------------------------------------------

    def export(self, exporter: Exporter) -> None:
        """Copy every item ``exporter`` lists; failures are journaled, not raised.

        Raises what the exporter's listing raised (after the items it listed
        are settled), and ``Cancelled`` when the cancel token was set.
        """
        outcome = self.run(KindByKind([exporter]))
        failure = outcome.listing_failures.get(exporter.kind)
        if failure is not None:
            raise failure

    def run(self, source: WorkSource) -> TransferRun:
        """Copy every item ``source`` hands out; failures are journaled, not raised.

        An item is skipped where the journal has it stored (verified, or
        unchecked when the source has no checksum for it), except: an item
        others depend on (``keeps_record``) is copied again everywhere when
        any destination lacks it or its record is gone, and an item that
        ``depends_on`` one being copied waits for it and is copied again with
        it. Items the source descopes are journaled ``descoped`` with the
        reason. A kind whose listing fails is reported in the result, and
        the other kinds go on.

        Raises ``Cancelled`` when the cancel token was set (the journal is
        consistent: unfinished items stay in-flight and are redone on resume).
        """
        self._source = source
        run = _CoordinatorRun(self, source)
        try:
            run.loop()
        finally:
            self.journal.flush()
            self.progress.tick(force=True)
        self.cancel.raise_if_set()
        return run.result

    def _start_executor(self, executor: Executor) -> None:
        if id(executor) in self._started:
            return
        executor.start(
            TransferJob(
                run_id=self.run_id,
                run_here=self._copier.run_task,
                cancel=self.cancel,
                spec=self._worker_spec,
            )
        )
        self._started.add(id(executor))


class _CoordinatorRun:
    """One ``TransferEngine.run``: the coordinator's loop and its state."""

    def __init__(self, engine: TransferEngine, source: WorkSource) -> None:
        self.engine = engine
        self.source = source
        self.journal = engine.journal
        self.progress = engine.progress
        self.settings = engine.settings
        self.cancel = engine.cancel
        self.result = TransferRun()
        self.destinations = {d.name: d for d in engine.destinations}
        self.flights: dict[str, _Flight] = {}
        #: dest_key -> idem_key of items in flight (what dependents wait for).
        self.active: dict[str, str] = {}
        #: dest_key of an item in flight -> items that depend on it, waiting.
        self.held: dict[str, list[ExportItem]] = {}
        #: dest_keys of items with dependents that this run copies.
        self.copying: set[str] = set()
        self.ready: dict[int, deque[_Flight]] = {}
        self.executors: dict[int, Executor] = {}
        self.tasks: dict[str, tuple[Executor, list[str]]] = {}
        self.in_flight_tasks: dict[int, int] = {}
        self.retries: list[tuple[float, int, str]] = []
        self._sequence = 0
        self.exhausted = False

    # -- the loop ----------------------------------------------------------------------

    def loop(self) -> None:
        waiting = False
        try:
            while not self.cancel.is_set():
                self._due_retries()
                waiting = False
                while not self.exhausted and self._want_more():
                    pulled = self._pull()
                    if pulled is Wait.WAIT:
                        waiting = True
                        break
                    if pulled is None:
                        self.exhausted = True
                self._take_notices()
                self._dispatch(flush=self.exhausted or waiting)
                if self.exhausted and not self.flights and not self.held:
                    break
                self._absorb(self._wait_for_reports(waiting))
        finally:
            self._wind_down()

    def _want_more(self) -> bool:
        """Pull another item while some executor could start more than is ready for it."""
        if self.cancel.is_set():
            return False
        ready = sum(len(q) for q in self.ready.values())
        room = self.engine._local.capacity * max(1, self.engine._local.batch_items)
        if self.engine._remote is not None:
            room += self.engine._remote.capacity * max(1, self.engine._remote.batch_items)
        return ready < room

    def _pull(self) -> ExportItem | Wait | None:
        try:
            pulled = self.source.next_item(self.progress.clock.now())
        except Exception as exc:  # a source that raises: stop listing, finish what runs
            log.warning("the work source failed: %s", exc, exc_info=True)
            self.result.listing_failures["(work source)"] = exc
            return None
        if isinstance(pulled, ExportItem):
            if pulled.kind not in self.result.kinds:
                self.result.kinds.append(pulled.kind)
            self.progress.listed(pulled.kind, pulled.size or 0)
            self._start(pulled)
        return pulled

    def _take_notices(self) -> None:
        for end in self.source.take_listing_ends():
            if end.kind not in self.result.kinds:
                self.result.kinds.append(end.kind)
            if end.error is not None:
                self.result.listing_failures[end.kind] = end.error
            elif not self.cancel.is_set():
                self.progress.listing_done(end.kind)
        for descoped in self.source.take_descoped():
            self._descope(descoped.item, descoped.reason)

    def _wait_for_reports(self, waiting: bool) -> list[Report]:
        """Reports from whichever executor has work, waiting only when nothing else can go on."""
        executors = [e for key, e in self.executors.items() if self.in_flight_tasks.get(key)]
        if any(self.ready.get(id(e)) and self._room(e) for e in self.executors.values()):
            timeout = 0.0
        elif self.retries:
            timeout = max(0.0, min(0.5, self.retries[0][0] - time.monotonic()))
        else:
            timeout = 0.25 if waiting else 0.5
        if not executors:
            if timeout > 0:
                self.cancel.wait(timeout)
            return []
        if len(executors) == 1:
            return executors[0].reports(timeout)
        found: list[Report] = []
        for executor in executors:
            found += executor.reports(0)
        if not found and timeout > 0:
            found = executors[0].reports(min(timeout, 0.05))
        return found

    def _wind_down(self) -> None:
        """After a cancel (or an error of our own): stop the workers, settle what they
        report, and leave every unfinished item in-flight for the next run."""
        if self.cancel.is_set():
            for executor in self.executors.values():
                executor.cancel()
        while self.tasks:
            busy = [e for key, e in self.executors.items() if self.in_flight_tasks.get(key)]
            for executor in busy:
                self._absorb(executor.reports(0.1))
        self._take_notices()

    # -- starting items ----------------------------------------------------------------

    def _start(self, item: ExportItem) -> None:
        """Skip, hold or queue an item the source handed out (or a dependent released)."""
        if item.depends_on is not None and item.depends_on in self.active:
            self.held.setdefault(item.depends_on, []).append(item)
            return
        exporter = self.source.exporter(item.kind)
        wanted = [
            name
            for name in self.destinations
            if item.destinations is None or name in item.destinations
        ]
        pending, record, check_first = self._pending(item, wanted)
        if not pending:
            if record is not None:
                exporter.recall(item, record)
            exporter.item_settled(item, "skipped")
            self.progress.skipped(item.kind, item.size or 0)
            self.engine.events.emit(
                ItemFinished(
                    kind=item.kind, key=item.dest_key, size=item.size or 0, status="skipped"
                )
            )
            self.source.settled(Outcome(item, "skipped", 0, 0.0, 0))
            return
        if item.keeps_record:
            self.copying.add(item.dest_key)
        executor = self._executor_for(exporter, item)
        flight = _Flight(
            item=item,
            exporter=exporter,
            wanted=wanted,
            remaining=pending,
            executor=executor,
            check_first=check_first,
        )
        self.flights[item.idem_key] = flight
        self.active[item.dest_key] = item.idem_key
        self._mark_in_flight(item, pending)
        self.ready.setdefault(id(executor), deque()).append(flight)

    def _pending(
        self, item: ExportItem, wanted: list[str]
    ) -> tuple[list[str], Mapping[str, Any] | None, bool]:
        """The destinations ``item`` must be copied to, the record of a skipped one,
        and whether an earlier process may have published it unjournaled."""
        states = {name: self.journal.item_state(name, item.dest_key) for name in wanted}
        check_first = any(
            state is not None and state[0] == item.idem_key and state[1] == "in-flight"
            for state in states.values()
        )
        if item.depends_on is not None and item.depends_on in self.copying:
            return wanted, None, check_first  # what it describes is being copied again
        pending = [
            name
            for name, state in states.items()
            if state is None
            or state[0] != item.idem_key
            or state[1] not in ("verified", "unchecked")
        ]
        if not item.keeps_record:
            return pending, None, check_first
        record = None if pending else self.journal.record_of(item.idem_key)
        if pending or record is None:
            # Its dependents describe one set of bytes: every destination
            # gets the same copy, and one without a record is read again.
            return wanted, None, check_first
        return [], record, check_first

    def _executor_for(self, exporter: Exporter, item: ExportItem) -> Executor:
        remote = self.engine._remote
        spec = self.engine._worker_spec
        if (
            remote is not None
            and spec is not None
            and getattr(exporter, "portable", False)
            and item.kind in getattr(spec, "kinds", ())
        ):
            executor = remote
        else:
            executor = self.engine._local
        if id(executor) not in self.executors:
            self.engine._start_executor(executor)
            self.executors[id(executor)] = executor
        return executor

    def _mark_in_flight(self, item: ExportItem, destinations: Iterable[str]) -> None:
        for name in destinations:
            self.journal.mark_in_flight(
                self.engine.run_id,
                name,
                item.idem_key,
                kind=item.kind,
                dest_key=item.dest_key,
                size=item.size,
                tier=item.tier,
                source=item.source,
            )

    def _descope(self, item: ExportItem, reason: str) -> None:
        """An item the source will not start: journaled ``descoped`` with the reason
        (unless every destination already has it stored: then it is skipped)."""
        wanted = [
            name
            for name in self.destinations
            if item.destinations is None or name in item.destinations
        ]
        if item.kind not in self.result.kinds:
            self.result.kinds.append(item.kind)
        pending, record, _ = self._pending(item, wanted)
        exporter = self.source.exporter(item.kind)
        if not pending:
            if record is not None:
                exporter.recall(item, record)
            exporter.item_settled(item, "skipped")
            self.progress.skipped(item.kind, item.size or 0)
            self.engine.events.emit(
                ItemFinished(
                    kind=item.kind, key=item.dest_key, size=item.size or 0, status="skipped"
                )
            )
            return
        for name in pending:
            self.journal.mark_descoped(
                self.engine.run_id,
                name,
                item.idem_key,
                kind=item.kind,
                dest_key=item.dest_key,
                size=item.size,
                tier=item.tier,
                source=item.source,
                reason=reason,
            )
        exporter.item_settled(item, "descoped")
        self.engine.events.emit(
            ItemFinished(
                kind=item.kind,
                key=item.dest_key,
                size=item.size or 0,
                status="descoped",
                error=reason,
            )
        )

    # -- tasks -------------------------------------------------------------------------

    def _room(self, executor: Executor) -> bool:
        return self.in_flight_tasks.get(id(executor), 0) < executor.capacity

    def _dispatch(self, flush: bool) -> None:
        """Submit ready items as tasks while each executor has room in its window."""
        for key, executor in self.executors.items():
            ready = self.ready.get(key)
            while ready and self._room(executor) and not self.cancel.is_set():
                first = ready[0]
                if executor.batch_items <= 1 or not self._small(first, executor):
                    batch = [ready.popleft()]
                else:
                    batch = self._batch(ready, executor, flush)
                    if not batch:
                        break
                self._submit(executor, batch)

    def _small(self, flight: _Flight, executor: Executor) -> bool:
        size = flight.item.size
        return size is not None and size <= executor.batch_bytes // 4

    def _batch(self, ready: deque[_Flight], executor: Executor, flush: bool) -> list[_Flight]:
        """Small items for one task; a short batch only when nothing more is coming soon
        or the executor would otherwise sit idle."""
        count = 0
        total = 0
        for flight in ready:
            if not self._small(flight, executor) or count >= executor.batch_items:
                break
            if total + (flight.item.size or 0) > executor.batch_bytes and count:
                break
            count += 1
            total += flight.item.size or 0
        full = count >= executor.batch_items or count < len(ready)
        idle = self.in_flight_tasks.get(id(executor), 0) < max(1, executor.capacity // 2)
        if not (full or flush or idle):
            return []
        return [ready.popleft() for _ in range(count)]

    def _submit(self, executor: Executor, flights: list[_Flight]) -> None:
        works = tuple(self._work(f) for f in flights)
        large = any(f.item.size is None or f.item.size > executor.batch_bytes for f in flights)
        task = CopyTask(task_key(self.engine.run_id, works), works, large)
        for flight in flights:
            flight.task = task.key
            flight.reported = 0
        self.tasks[task.key] = (executor, [f.item.idem_key for f in flights])
        self.in_flight_tasks[id(executor)] = self.in_flight_tasks.get(id(executor), 0) + 1
        executor.submit(task)

    def _work(self, flight: _Flight) -> ItemWork:
        item = flight.item
        parts_done: dict[int, int] = {}
        progress = [
            self.journal.part_progress(name, item.idem_key)
            for name in flight.remaining
            if self.journal.has_parts(name, item.idem_key)
        ]
        if progress and len(progress) == len(flight.remaining):
            # A part counts as far as every target has it.
            parts_done = {
                index: min(p.get(index, 0) for p in progress)
                for index in set.intersection(*(set(p) for p in progress))
            }
        return ItemWork(
            item=item,
            destinations=tuple(flight.remaining),
            attempt=flight.attempt,
            max_attempts=self.settings.max_attempts,
            parts_done=parts_done,
            check_first=flight.check_first,
        )

    def _due_retries(self) -> None:
        now = time.monotonic()
        while self.retries and self.retries[0][0] <= now:
            _, _, idem_key = heapq.heappop(self.retries)
            flight = self.flights.get(idem_key)
            if flight is not None:
                self.ready.setdefault(id(flight.executor), deque()).append(flight)

    # -- reports -----------------------------------------------------------------------

    def _absorb(self, reports: list[Report]) -> None:
        for report in reports:
            if isinstance(report, ItemEnded):
                self._item_ended(report.outcome)
            elif isinstance(report, BytesRead):
                self.progress.copied(report.kind, report.nbytes)
                flight = self.flights.get(report.idem_key)
                if flight is not None and flight.attempt == report.attempt:
                    flight.reported += report.nbytes
            elif isinstance(report, PartWritten):
                flight = self.flights.get(report.idem_key)
                # A report from an attempt already settled (it may arrive late
                # from another machine) must not bring back parts it dropped.
                if flight is not None and flight.attempt == report.attempt and flight.task:
                    for name in report.destinations:
                        self.journal.mark_part_progress(
                            name, report.idem_key, report.part_index, report.done_bytes
                        )
            elif isinstance(report, TaskEnded):
                self._task_ended(report)

    def _task_ended(self, report: TaskEnded) -> None:
        for outcome in report.outcomes:
            self._item_ended(outcome)
        entry = self.tasks.pop(report.key, None)
        if entry is None:
            return
        executor, idem_keys = entry
        self.in_flight_tasks[id(executor)] -= 1
        for idem_key in idem_keys:
            flight = self.flights.get(idem_key)
            if flight is None or flight.task != report.key:
                continue
            if self.cancel.is_set():
                self._forget(flight)  # stays in-flight in the journal: redone on resume
                continue
            lost = ItemOutcome(
                idem_key=idem_key,
                attempt=flight.attempt,
                failed=tuple(flight.remaining),
                error=f"the worker copying it was lost ({report.error or 'no outcome'})",
                retryable=True,
            )
            flight.check_first = True
            self._item_ended(lost)

    def _item_ended(self, outcome: ItemOutcome) -> None:
        flight = self.flights.get(outcome.idem_key)
        if flight is None or flight.task is None or outcome.attempt != flight.attempt:
            return  # already settled (a late or repeated report)
        item = flight.item
        flight.task = None
        self.progress.copied(item.kind, max(0, outcome.bytes_read - flight.reported))
        flight.bytes_read += outcome.bytes_read
        flight.seconds += outcome.seconds
        flight.requests += outcome.requests
        for name in outcome.discarded_parts:
            self.journal.clear_parts(name, item.idem_key)
        if outcome.record is not None and outcome.stored:
            # Before the item counts as verified: a kill between the two
            # leaves a record without a verified item, which is harmless.
            self.journal.save_record(item.idem_key, outcome.record)
        for copy in outcome.stored:
            if copy.destination not in flight.remaining:
                continue
            if copy.destination in outcome.staged:
                self.journal.clear_parts(copy.destination, item.idem_key)
            self._mark_stored(copy, item)
            flight.remaining.remove(copy.destination)
            flight.size = copy.size
            flight.source_checksum = copy.source_checksum
        if outcome.cancelled:
            self._forget(flight)
            return
        if not flight.remaining:
            self._finished(flight)
            return
        if item.keeps_record and len(flight.remaining) < len(flight.wanted):
            # Its dependents describe one copy: every destination gets the
            # next attempt's, and none counts as done meanwhile.
            flight.remaining = list(flight.wanted)
            self._mark_in_flight(item, flight.remaining)
        if outcome.retryable and flight.attempt < self.settings.max_attempts:
            self._retry(flight, outcome)
        else:
            self._give_up(flight, outcome.error or "unknown error")

    def _retry(self, flight: _Flight, outcome: ItemOutcome) -> None:
        wait_s = backoff_seconds(flight.attempt, outcome.retry_after, self.settings.max_backoff_s)
        flight.attempt += 1
        due = time.monotonic()
        if self.engine._sleep is not None:
            try:
                self.engine._sleep(wait_s)
            except Cancelled:
                return
        else:
            due += wait_s
        self._sequence += 1
        heapq.heappush(self.retries, (due, self._sequence, flight.item.idem_key))

    def _mark_stored(self, copy: StoredCopy, item: ExportItem) -> None:
        if is_unchecked(copy.source_checksum):
            self.journal.mark_unchecked(
                copy.destination,
                item.dest_key,
                item.idem_key,
                size=copy.size,
                sha256=copy.sha256,
                source_checksum=copy.source_checksum or unchecked("the source offers no checksum"),
            )
        else:
            self.journal.mark_verified(
                copy.destination,
                item.dest_key,
                item.idem_key,
                size=copy.size,
                sha256=copy.sha256,
                source_checksum=copy.source_checksum,
            )

    def _finished(self, flight: _Flight) -> None:
        item = flight.item
        status = "unchecked" if is_unchecked(flight.source_checksum) else "verified"
        flight.exporter.item_settled(item, status)
        self.progress.done(item.kind, flight.size)
        self.engine.events.emit(
            ItemFinished(
                kind=item.kind,
                key=item.dest_key,
                size=flight.size,
                status=status,
                error=flight.source_checksum
                if status == "unchecked" and flight.source_checksum
                else "",
            )
        )
        self._settled(flight, status)

    def _give_up(self, flight: _Flight, message: str) -> None:
        item = flight.item
        flight.exporter.item_settled(item, "failed")
        for name in flight.remaining:
            self.journal.mark_failed(name, item.dest_key, item.idem_key, message)
        self.progress.failed(item.kind, item.size or 0)
        self.engine.events.emit(
            ItemFinished(
                kind=item.kind,
                key=item.dest_key,
                size=item.size or 0,
                status="failed",
                error=message,
            )
        )
        # The renderer shows it (ItemFinished), the journal and the report
        # keep it: a full disk must not print one console line per item.
        log.info("gave up on %s: %s", item.dest_key, message)
        self._settled(flight, "failed")

    def _settled(self, flight: _Flight, status: str) -> None:
        self.source.settled(
            Outcome(flight.item, status, flight.bytes_read, flight.seconds, flight.requests)
        )
        self._forget(flight)

    def _forget(self, flight: _Flight) -> None:
        item = flight.item
        self.flights.pop(item.idem_key, None)
        if self.active.get(item.dest_key) == item.idem_key:
            del self.active[item.dest_key]
        for dependent in self.held.pop(item.dest_key, []):
            if self.cancel.is_set():
                continue  # never started: nothing of it is in the journal
            self._start(dependent)


def _resume_token(item: ExportItem) -> str:
    """The stable staging name of a ranged item's parts (letters and digits)."""
    return hashlib.sha256(item.idem_key.encode()).hexdigest()[:40]


def _as_store_failure(destination: Destination, exc: BaseException) -> BaseException:
    """A GeneratorExit escaping a store means it stopped reading and swallowed why."""
    if isinstance(exc, GeneratorExit):
        return StoreWriteError(
            f"destination {destination.name}: the store stopped reading the stream and "
            "did not say why (a full disk or a failed write); check the destination and "
            "run `exitplan resume`"
        )
    return exc


def _release(writer: PartWriter) -> None:
    close = getattr(writer, "close", None)
    if callable(close):
        close()


def _describe_error(exc: BaseException | None) -> str:
    if exc is None:
        return "unknown error"
    if isinstance(exc, botocore.exceptions.ClientError):
        error = exc.response.get("Error", {})
        return f"{error.get('Code', 'ClientError')}: {error.get('Message', '')}".strip()
    text = str(exc) or type(exc).__name__
    if isinstance(exc, RetryableError | StoreWriteError):
        return text  # written to be read as it is
    return f"{type(exc).__name__}: {text}"
