"""The copy engine: every item out of the source, into every destination, verified.

For each exporter the engine streams the item listing (never holding it
whole), skips what the journal already has verified at a destination, and
copies the rest on a thread pool. Each item is read from the source once and
fed to every destination that still needs it. While the bytes stream, the
engine computes md5 and sha256; the source stream checks them against what
the source promised *before* the destinations publish, so a short or damaged
body is never visible as a complete object. Transient faults are retried with
jittered, capped backoff that honours Retry-After; cancellation (Ctrl-C, the
deadline) stops new work and waiting retries at once.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

import botocore.exceptions
import urllib3.exceptions
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt
from tenacity.wait import wait_random_exponential

from orchestrator.errors import Cancelled, ChecksumMismatch, ExitplanError, RetryableError
from orchestrator.events import EventBus, ItemFinished
from orchestrator.export.exporters.base import (
    Exporter,
    ExportItem,
    Part,
    RangedSource,
    SourceStream,
    is_unchecked,
    unchecked,
)
from orchestrator.run.cancel import CancelToken
from orchestrator.run.journal import Journal
from orchestrator.run.progress import RunProgress
from providers import aws
from providers.interfaces.object_store import (
    ObjectStore,
    PartWriter,
    StoredObject,
    StoreWriteError,
)

log = logging.getLogger(__name__)

CHUNK_SIZE = 1024 * 1024
#: How often a part's progress is journaled: what a kill can cost per part.
CHECKPOINT_BYTES = 4 * 1024 * 1024


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


class RateLimiter:
    """A token bucket shared by all workers (``--bwlimit``)."""

    def __init__(self, bytes_per_second: int, cancel: CancelToken) -> None:
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


def should_retry(exc: BaseException) -> bool:
    """The engine's retry rule: the source's, the destinations', and damaged bodies."""
    if isinstance(exc, Cancelled):
        return False
    if isinstance(exc, RetryableError) or aws.should_retry(exc):
        return True
    return isinstance(exc, urllib3.exceptions.HTTPError | ConnectionError | TimeoutError)


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


class _WaitHonouringRetryAfter:
    """Jittered exponential backoff, never shorter than Retry-After, never longer
    than the cap (a server asking for more is asked again at the cap)."""

    def __init__(self, cap: float) -> None:
        self._jitter = wait_random_exponential(multiplier=0.25, max=cap)
        self._cap = cap

    def __call__(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        return min(self._cap, max(self._jitter(state), _retry_after_seconds(exc)))


class _Hashing:
    """Iterates a source stream, hashing, counting, throttling and checking at the end."""

    def __init__(
        self,
        item: ExportItem,
        stream: SourceStream,
        cancel: CancelToken,
        limiter: RateLimiter | None,
        on_bytes: Any,
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


def _drain(feed: queue.Queue[Any], cancel: CancelToken) -> Iterator[bytes]:
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


class TransferEngine:
    """Copies the items of exporters to destinations; one engine per run.

    ``sleep`` is how the engine waits between two attempts at an item or a
    part (default: on the cancel token, so a cancel wakes it at once); tests
    inject one to see the waits asked for without spending them.
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
        self._limiter = (
            RateLimiter(self.settings.bwlimit, self.cancel) if self.settings.bwlimit else None
        )
        fanout_threads = self.settings.concurrency * max(0, len(self.destinations) - 1)
        self._fanout_pool = (
            ThreadPoolExecutor(fanout_threads, thread_name_prefix="exitplan-fanout")
            if fanout_threads
            else None
        )

        # Parts of large items are fetched on their own pool: an item worker
        # waiting on its parts must never wait for a slot in its own pool.
        self._part_pool = ThreadPoolExecutor(
            self.settings.concurrency, thread_name_prefix="exitplan-part"
        )

    def close(self) -> None:
        if self._fanout_pool is not None:
            self._fanout_pool.shutdown(wait=True, cancel_futures=True)
        self._part_pool.shutdown(wait=True, cancel_futures=True)

    # -- one exporter ------------------------------------------------------

    def export(self, exporter: Exporter) -> None:
        """Copy every item ``exporter`` lists; failures are journaled, not raised.

        An item is skipped where the journal has it stored (verified, or
        unchecked when the source has no checksum for it), except: an item
        others depend on (``keeps_record``) is copied again everywhere when
        any destination lacks it or its record is gone, and an item that
        ``depends_on`` one being copied is copied again with it.

        Raises ``Cancelled`` when the cancel token was set (the journal is
        consistent: unfinished items stay in-flight and are redone on resume).
        """
        kind = exporter.kind
        window = 2 * self.settings.concurrency
        in_flight: set[Future[None]] = set()
        #: dest_keys of items with dependents that this listing copies.
        copying: set[str] = set()
        with ThreadPoolExecutor(
            self.settings.concurrency, thread_name_prefix=f"exitplan-{kind}"
        ) as pool:
            try:
                for item in exporter.list_items():
                    if self.cancel.is_set():
                        break
                    self.progress.listed(kind, item.size or 0)
                    pending, record = self._pending(item, copying)
                    if not pending:
                        if record is not None:
                            exporter.recall(item, record)
                        exporter.item_settled(item, "skipped")
                        self.progress.skipped(kind, item.size or 0)
                        self.events.emit(
                            ItemFinished(
                                kind=kind, key=item.dest_key, size=item.size or 0, status="skipped"
                            )
                        )
                        continue
                    if item.keeps_record:
                        copying.add(item.dest_key)
                    while len(in_flight) >= window:
                        done, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
                        for future in done:
                            future.result()
                    in_flight.add(pool.submit(self._copy_item, exporter, item, pending))
                else:
                    self.progress.listing_done(kind)
            finally:
                if self.cancel.is_set():
                    for future in in_flight:
                        future.cancel()
                for future in in_flight:
                    if not future.cancelled():
                        future.exception()  # wait; errors are journaled per item
        self.journal.flush()
        self.progress.tick(force=True)
        self.cancel.raise_if_set()

    def _pending(
        self, item: ExportItem, copying: set[str]
    ) -> tuple[list[Destination], Mapping[str, Any] | None]:
        """The destinations ``item`` must be copied to, and the record of a skipped one."""
        wanted = [
            d for d in self.destinations if item.destinations is None or d.name in item.destinations
        ]
        if item.depends_on is not None and item.depends_on in copying:
            return wanted, None  # what it describes is being copied again
        pending = [
            d for d in wanted if not self.journal.is_stored(d.name, item.dest_key, item.idem_key)
        ]
        if not item.keeps_record:
            return pending, None
        record = None if pending else self.journal.record_of(item.idem_key)
        if pending or record is None:
            # Its dependents describe one set of bytes: every destination
            # gets the same copy, and one without a record is read again.
            return wanted, None
        return [], record

    # -- one item ----------------------------------------------------------

    def _mark_in_flight(self, item: ExportItem, destinations: list[Destination]) -> None:
        for destination in destinations:
            self.journal.mark_in_flight(
                self.run_id,
                destination.name,
                item.idem_key,
                kind=item.kind,
                dest_key=item.dest_key,
                size=item.size,
                tier=item.tier,
                source=item.source,
            )

    def _copy_item(self, exporter: Exporter, item: ExportItem, pending: list[Destination]) -> None:
        self._mark_in_flight(item, pending)
        remaining = list(pending)
        last_error: BaseException | None = None
        staged_parts: set[str] = set()
        retrying = Retrying(
            stop=stop_after_attempt(self.settings.max_attempts),
            wait=_WaitHonouringRetryAfter(self.settings.max_backoff_s),
            retry=retry_if_exception(should_retry),
            sleep=self._sleep_unless_cancelled,
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt:
                    self.cancel.raise_if_set()
                    remaining, last_error = self._copy_once(exporter, item, remaining, staged_parts)
                    if remaining and item.keeps_record and len(remaining) < len(pending):
                        # Its dependents describe one copy: every destination
                        # gets the next attempt's, and none counts as done meanwhile.
                        remaining = list(pending)
                        self._mark_in_flight(item, remaining)
                    if remaining and last_error is not None:
                        raise last_error
        except Cancelled:
            return  # stays in-flight in the journal: redone on resume
        except (Exception, GeneratorExit) as exc:  # one item's failure must not stop the rest
            last_error = exc
        if remaining:
            exporter.item_settled(item, "failed")
            message = _describe_error(last_error)
            for destination in remaining:
                if destination.name in staged_parts:
                    self._discard_staged_parts(destination, item)
                self.journal.mark_failed(destination.name, item.dest_key, item.idem_key, message)
            self.progress.failed(item.kind, item.size or 0)
            self.events.emit(
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

    def _discard_staged_parts(self, destination: Destination, item: ExportItem) -> None:
        """An item given up on keeps no resumable staging copy (it may be what
        filled the disk); a later run starts it afresh."""
        try:
            destination.store.open_part_writer(item.dest_key, 0, _resume_token(item)).abort()
        except (OSError, ExitplanError) as exc:
            log.warning("could not remove the staged parts of %s: %s", item.dest_key, exc)
        self.journal.clear_parts(destination.name, item.idem_key)

    def _sleep_unless_cancelled(self, seconds: float) -> None:
        if self._sleep is not None:
            self.cancel.raise_if_set()
            self._sleep(seconds)
            self.cancel.raise_if_set()
            return
        if self.cancel.wait(seconds):
            raise Cancelled(f"stopped: {self.cancel.describe()}")

    def _mark_stored(
        self,
        destination: Destination,
        item: ExportItem,
        *,
        size: int,
        sha256: str,
        source_checksum: str | None,
    ) -> None:
        if is_unchecked(source_checksum):
            self.journal.mark_unchecked(
                destination.name,
                item.dest_key,
                item.idem_key,
                size=size,
                sha256=sha256,
                source_checksum=source_checksum or unchecked("the source offers no checksum"),
            )
        else:
            self.journal.mark_verified(
                destination.name,
                item.dest_key,
                item.idem_key,
                size=size,
                sha256=sha256,
                source_checksum=source_checksum,
            )

    def _copy_once(
        self,
        exporter: Exporter,
        item: ExportItem,
        targets: list[Destination],
        staged_parts: set[str],
    ) -> tuple[list[Destination], BaseException | None]:
        """One attempt; returns the destinations still missing the item and why."""
        if all("part_write" in target.store.capabilities for target in targets):
            ranged = exporter.open_ranged(item)
            if ranged is not None:
                staged_parts.update(target.name for target in targets)
                return self._settle_attempt(
                    exporter, item, *self._copy_ranged_once(item, ranged, targets)
                )
        stream = exporter.open(item)

        def on_bytes(nbytes: int) -> None:
            self.progress.copied(item.kind, nbytes)

        hashing = _Hashing(item, stream, self.cancel, self._limiter, on_bytes)
        try:
            outcomes = self._put_everywhere(item.dest_key, hashing, targets)
            record = stream.record() if hashing.finished and item.keeps_record else None
        finally:
            stream.close()
        failed: list[Destination] = []
        error: BaseException | None = None
        recorded = False
        for destination, outcome in zip(targets, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                failed.append(destination)
                error = outcome
                continue
            try:
                self._check_stored(destination, outcome, hashing)
            except ChecksumMismatch as exc:
                failed.append(destination)
                error = exc
                continue
            if record is not None and not recorded:
                # Before the item counts as verified: a kill between the two
                # leaves a record without a verified item, which is harmless.
                self.journal.save_record(item.idem_key, record)
                recorded = True
            self._mark_stored(
                destination,
                item,
                size=hashing.size,
                sha256=hashing.sha256.hexdigest(),
                source_checksum=hashing.source_checksum,
            )
        return self._settle_attempt(
            exporter, item, failed, error, hashing.size, hashing.source_checksum
        )

    def _settle_attempt(
        self,
        exporter: Exporter,
        item: ExportItem,
        failed: list[Destination],
        error: BaseException | None,
        size: int,
        source_checksum: str | None,
    ) -> tuple[list[Destination], BaseException | None]:
        if not failed:
            status = "unchecked" if is_unchecked(source_checksum) else "verified"
            exporter.item_settled(item, status)
            self.progress.done(item.kind, size)
            self.events.emit(
                ItemFinished(
                    kind=item.kind,
                    key=item.dest_key,
                    size=size,
                    status=status,
                    error=source_checksum if status == "unchecked" and source_checksum else "",
                )
            )
        elif error is not None and isinstance(error, Cancelled):
            raise error
        return failed, error

    def _copy_ranged_once(
        self, item: ExportItem, ranged: RangedSource, targets: list[Destination]
    ) -> tuple[list[Destination], BaseException | None, int, str | None]:
        """Fetch the parts not yet written, in parallel, in place; then verify and publish.

        Each part is journaled once written at every target, so an attempt
        cut short (a fault, a kill -9) resumes from the parts it finished. The
        whole is then re-read from each target and checked before publishing:
        that read is the end-to-end check of what the store actually holds.
        """
        token = _resume_token(item)
        writers: dict[str, PartWriter] = {}
        try:
            for target in targets:
                writers[target.name] = target.store.open_part_writer(
                    item.dest_key, ranged.size, token
                )
            # A part counts as far as every target has it.
            progress = [self.journal.part_progress(t.name, item.idem_key) for t in targets]
            done = {
                index: min(p.get(index, 0) for p in progress)
                for index in set.intersection(*(set(p) for p in progress))
            }
            self._fetch_parts(item, ranged, writers, done)
        except BaseException:
            for writer in writers.values():
                _release(writer)  # keep the staged parts for the next attempt
            raise
        failed: list[Destination] = []
        error: BaseException | None = None
        size = 0
        source_checksum: str | None = None
        for target in targets:
            writer = writers[target.name]
            try:
                md5 = hashlib.md5(usedforsecurity=False) if ranged.wants_md5 else None
                sha256 = hashlib.sha256()
                size = 0
                for chunk in writer.read_back():
                    if md5 is not None:
                        md5.update(chunk)
                    sha256.update(chunk)
                    ranged.observe(chunk)
                    size += len(chunk)
                source_checksum = ranged.verify(
                    size=size,
                    md5_hex=md5.hexdigest() if md5 is not None else "",
                    sha256_hex=sha256.hexdigest(),
                )
            except ChecksumMismatch as exc:
                # The staged bytes are wrong somewhere: start this one over.
                writer.abort()
                self.journal.clear_parts(target.name, item.idem_key)
                failed.append(target)
                error = exc
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
                self.journal.clear_parts(target.name, item.idem_key)
                failed.append(target)
                error = exc
                continue
            self.journal.clear_parts(target.name, item.idem_key)
            self._mark_stored(
                target,
                item,
                size=size,
                sha256=sha256.hexdigest(),
                source_checksum=source_checksum,
            )
        return failed, error, size, source_checksum

    def _fetch_parts(
        self,
        item: ExportItem,
        ranged: RangedSource,
        writers: dict[str, PartWriter],
        done: dict[int, int],
    ) -> None:
        window = 2 * self.settings.concurrency
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
            self.cancel.raise_if_set()
            if first_error is not None:
                break
            while len(in_flight) >= window:
                finished, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
                settle(finished)
            in_flight.add(
                self._part_pool.submit(
                    self._fetch_part, item, ranged, part, writers, done.get(part.index, 0)
                )
            )
        settle(set(wait(in_flight).done))
        if first_error is not None:
            raise first_error
        self.cancel.raise_if_set()

    def _fetch_part(
        self,
        item: ExportItem,
        ranged: RangedSource,
        part: Part,
        writers: dict[str, PartWriter],
        written: int,
    ) -> None:
        """Fetch one part from where it was left, writing it in place as it arrives.

        Progress is journaled every ``CHECKPOINT_BYTES``, so a kill costs at
        most that much of each part on the wire; a retry carries on from the
        last byte written, as a resume does.
        """
        retrying = Retrying(
            stop=stop_after_attempt(self.settings.max_attempts),
            wait=_WaitHonouringRetryAfter(self.settings.max_backoff_s),
            retry=retry_if_exception(should_retry),
            sleep=self._sleep_unless_cancelled,
            reraise=True,
        )
        for attempt in retrying:
            with attempt:
                self.cancel.raise_if_set()
                checkpointed = written
                for chunk in ranged.stream_part(part, written):
                    self.cancel.raise_if_set()
                    if written + len(chunk) > part.length:
                        raise ChecksumMismatch(
                            f"{item.dest_key}: part {part.index} is longer than {part.length}"
                        )
                    if self._limiter is not None:
                        self._limiter.consume(len(chunk))
                    for writer in writers.values():
                        writer.write_at(part.offset + written, chunk)
                    written += len(chunk)
                    self.progress.copied(item.kind, len(chunk))
                    if written - checkpointed >= CHECKPOINT_BYTES:
                        self._checkpoint(item, part, writers, written)
                        checkpointed = written
                if written != part.length:
                    raise ChecksumMismatch(
                        f"{item.dest_key}: part {part.index} has {written} of {part.length} bytes"
                    )
        self._checkpoint(item, part, writers, written)

    def _checkpoint(
        self, item: ExportItem, part: Part, writers: dict[str, PartWriter], written: int
    ) -> None:
        for name in writers:
            self.journal.mark_part_progress(name, item.idem_key, part.index, written)

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
        if len(targets) == 1:
            try:
                return [targets[0].store.put_stream(key, chunks)]
            except Cancelled:
                raise
            except (Exception, GeneratorExit) as exc:
                return [_as_store_failure(targets[0], exc)]
        assert self._fanout_pool is not None
        feeds: list[queue.Queue[Any]] = [queue.Queue(maxsize=8) for _ in targets[1:]]
        futures = [
            self._fanout_pool.submit(target.store.put_stream, key, _drain(feed, self.cancel))
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
