"""A simulated source and coordinator behind the engine's interfaces, on a FrozenClock.

For the deadline planner's scenarios (issue 11): a throttled source whose
bandwidth can change mid-run, that answers 503 SlowDown for a while, with
setup and per-request latency; and a coordinator loop that does what the
transfer coordinator does with a ``WorkSource`` (``orchestrator.export.work``):
fills ``concurrency`` slots from ``next_item``, journals what is taken with
``take_descoped`` and what ends, tells ``settled`` every outcome, and stops
what runs at the hard deadline. Time is simulated in small steps on the
injected clock: a 20-minute run takes well under a second, and nothing sleeps.

Transfers share the bandwidth equally (processor sharing, as TCP streams
over one bottleneck roughly do); each item first spends its setup and its
requests' latency, then its bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from orchestrator.clock import FrozenClock
from orchestrator.events import Event, EventBus, ItemFinished, RunWarning
from orchestrator.export.exporters.base import Exporter, ExportItem, SourceStream
from orchestrator.export.work import Outcome, Wait, WorkSource
from orchestrator.plan.priorities import Prioritizer
from orchestrator.run.deadline import Deadline
from orchestrator.run.journal import Journal
from orchestrator.run.progress import RunProgress

MIB = 1024 * 1024


class SimExporter(Exporter):
    """Lists the items it is given, in that order; never opened (the simulation moves bytes)."""

    def __init__(self, kind: str, items: list[ExportItem], prioritizer: Prioritizer) -> None:
        super().__init__(None, tier_of=prioritizer)  # type: ignore[arg-type]  # no account
        self.kind = kind  # type: ignore[misc]  # one class for every simulated kind
        self._items = items

    def list_items(self) -> Iterator[ExportItem]:
        yield from self._items

    def open(self, item: ExportItem) -> SourceStream:
        raise AssertionError("the simulation never opens an item")


def sim_item(
    kind: str,
    key: str,
    size: int,
    prioritizer: Prioritizer,
    *,
    bucket: str = "bucket",
    depends_on: str | None = None,
) -> ExportItem:
    source = {"kind": kind, "bucket": bucket, "name": key}
    return ExportItem(
        kind=kind,
        idem_key=f"{kind}:{bucket}/{key}",
        dest_key=f"{kind}/{bucket}/{key}",
        size=size,
        source=source,
        tier=prioritizer(source),
        depends_on=depends_on,
    )


@dataclass
class Network:
    """The source's behaviour over time (seconds from the start)."""

    #: Total bytes per second the source serves, at second t.
    bandwidth: Callable[[float], float]
    #: Seconds one request takes (latency), at second t.
    latency_s: float = 0.02
    #: Seconds of setup before an item of these kinds sends anything.
    setup_s: Mapping[str, float] = field(default_factory=dict)
    #: [start, end) of a period in which the source answers 503 SlowDown to
    #: ``throttled_share`` of requests, each retried after ``retry_after_s``.
    throttle: tuple[float, float] | None = None
    throttled_share: float = 0.5
    retry_after_s: float = 1.0

    def throttled(self, t: float) -> bool:
        return self.throttle is not None and self.throttle[0] <= t < self.throttle[1]


@dataclass
class _Transfer:
    item: ExportItem
    started: float
    setup_left: float
    requests_left: float
    bytes_left: float
    requests: int
    moved: float = 0.0


@dataclass
class SimResult:
    started: datetime
    #: dest_key -> when it was saved.
    saved: dict[str, datetime]
    #: dest_key -> reason, as journaled last (re-admitted items are not here).
    descoped: dict[str, str]
    #: Items still running when the deadline stopped them.
    stopped: list[str]
    #: dest_key -> when it was (last) started.
    started_at: dict[str, datetime]
    #: (when, message) of every RunWarning.
    warnings: list[tuple[datetime, str]]
    events: list[Event]
    ended: datetime


def simulate(
    source: WorkSource,
    *,
    clock: FrozenClock,
    network: Network,
    deadline: Deadline,
    journal: Journal,
    run_id: str,
    events: EventBus,
    progress: RunProgress,
    concurrency: int = 8,
    step_s: float = 0.05,
    destination: str = "vault",
    parts_per_item: int = 8,
) -> SimResult:
    """Run ``source`` to its end (or the hard deadline) on ``clock``; see the module docstring."""
    started = clock.now()
    start_mono = clock.monotonic()
    seen: list[Event] = []
    warnings: list[tuple[datetime, str]] = []

    def keep(event: Event) -> None:
        seen.append(event)
        if isinstance(event, RunWarning):
            warnings.append((clock.now(), event.message))

    events.subscribe(keep)
    active: list[_Transfer] = []
    saved: dict[str, datetime] = {}
    started_at: dict[str, datetime] = {}
    descoped: dict[str, str] = {}
    exhausted = False
    while True:
        for taken in source.take_descoped():
            item = taken.item
            journal.mark_descoped(
                run_id,
                destination,
                item.idem_key,
                kind=item.kind,
                dest_key=item.dest_key,
                size=item.size,
                tier=item.tier,
                source=item.source,
                reason=taken.reason,
            )
            descoped[item.dest_key] = taken.reason
            events.emit(
                ItemFinished(item.kind, item.dest_key, item.size or 0, "descoped", taken.reason)
            )
        now = clock.now()
        if now >= deadline.at:
            break
        while not exhausted and len(active) < concurrency:
            got = source.next_item(now)
            if got is None:
                exhausted = True
                break
            if got is Wait.WAIT:
                break
            assert isinstance(got, ExportItem)
            descoped.pop(got.dest_key, None)  # re-admitted
            started_at[got.dest_key] = now
            journal.mark_in_flight(
                run_id,
                destination,
                got.idem_key,
                kind=got.kind,
                dest_key=got.dest_key,
                size=got.size,
                tier=got.tier,
                source=got.source,
            )
            progress.listed(got.kind, got.size or 0)
            size = got.size or 0
            requests = 1 + size // (16 * MIB)
            active.append(
                _Transfer(
                    got,
                    clock.monotonic(),
                    network.setup_s.get(got.kind, 0.0),
                    requests,
                    float(size),
                    requests,
                )
            )
        if exhausted and not active:
            # Take what was descoped at the end, then stop.
            for taken in source.take_descoped():
                descoped[taken.item.dest_key] = taken.reason
                item = taken.item
                journal.mark_descoped(
                    run_id,
                    destination,
                    item.idem_key,
                    kind=item.kind,
                    dest_key=item.dest_key,
                    size=item.size,
                    tier=item.tier,
                    source=item.source,
                    reason=taken.reason,
                )
            break
        t = clock.monotonic() - start_mono
        throttled = network.throttled(t)
        moving = [tr for tr in active if tr.setup_left <= 0 and tr.requests_left <= 0]
        share = network.bandwidth(t) * (1 - network.throttled_share if throttled else 1.0)
        share /= max(1, len(moving))
        for tr in active:
            if tr.setup_left > 0:
                tr.setup_left -= step_s
                continue
            if tr.requests_left > 0:
                # Requests of one item go out ``parts_per_item`` at a time.
                latency = network.latency_s
                if throttled:
                    p = network.throttled_share
                    latency += network.retry_after_s * p / (1 - p)
                tr.requests_left -= step_s / latency * min(parts_per_item, tr.requests)
                continue
            moved = min(tr.bytes_left, share * step_s)
            tr.bytes_left -= moved
            tr.moved += moved
            progress.copied(tr.item.kind, int(moved))
        clock.advance(timedelta(seconds=step_s))
        for tr in [
            tr
            for tr in active
            if tr.setup_left <= 0 and tr.requests_left <= 0 and tr.bytes_left <= 0.5
        ]:
            active.remove(tr)
            size = tr.item.size or 0
            journal.mark_verified(
                destination,
                tr.item.dest_key,
                tr.item.idem_key,
                size=size,
                sha256="0" * 64,
                source_checksum="md5:sim",
            )
            progress.done(tr.item.kind, size)
            saved[tr.item.dest_key] = clock.now()
            source.settled(
                Outcome(
                    tr.item,
                    "verified",
                    size,
                    clock.monotonic() - tr.started,
                    tr.requests,
                )
            )
    journal.flush()
    return SimResult(
        started=started,
        saved=saved,
        descoped=descoped,
        stopped=[tr.item.dest_key for tr in active],
        started_at=started_at,
        warnings=warnings,
        events=seen,
        ended=clock.now(),
    )


def listing_of(items: list[ExportItem]) -> dict[str, Any]:
    return {item.dest_key: item for item in items}
