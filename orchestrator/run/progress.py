"""Run progress: counters per kind, the rates they imply, and the deadline view.

Workers report bytes and items as they go; ``tick`` turns that, at most
twice a second, into a journal row per kind (what ``exitplan status`` reads)
and a ``Projection`` event (what the progress display shows): remaining
bytes, the P50 and P90 finish, the cutoff and the verdict.

With a deadline, the export runs from the deadline scheduler
(``orchestrator.plan.scheduler``), whose cost model knows each kind's setup,
request and byte costs on a shared egress: its outlook is the projection.
Without one, each kind is projected at its own measured rate (EBS blocks
and small S3 objects move at very different rates; one average over both
is wrong for both), the kinds one after the other, as the export runs them.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from orchestrator.clock import Clock
from orchestrator.events import EventBus, ExportPlanned, Projection
from orchestrator.plan import live
from orchestrator.run.deadline import Deadline
from orchestrator.run.journal import Journal, KindProgress

_TICK_SECONDS = 0.5
#: A kind's rate is its own once it has moved bytes for this long.
_KIND_RATE_MIN_S = 1.0


@dataclass(frozen=True)
class Forecast:
    remaining_bytes: int
    bytes_per_second: float
    #: The P50 finish (None: nothing measured yet, no made-up figure).
    projected_finish: datetime | None
    will_make_it: bool | None
    #: The pessimistic finish, where a cost model gives one.
    p90_finish: datetime | None = None
    cutoff: datetime | None = None
    verdict: str = ""
    descoped_items: int = 0
    descoped_bytes: int = 0


def forecast(
    *,
    remaining_bytes: int,
    copied_bytes: int,
    elapsed_s: float,
    now: datetime,
    deadline: Deadline | None,
    kind_rates: dict[str, tuple[int, float]] | None = None,
) -> Forecast:
    """Project the finish from the rates measured so far.

    ``kind_rates`` maps a kind to (remaining bytes, its measured bytes/s):
    each kind's remainder is projected at its own rate (kinds without one at
    the overall rate), one kind after the other. With nothing measured yet
    there is no projection (None), rather than a made-up one; with nothing
    left the finish is now.
    """
    rate = copied_bytes / elapsed_s if elapsed_s > 0 and copied_bytes > 0 else 0.0
    if remaining_bytes == 0:
        finish: datetime | None = now
    elif kind_rates:
        seconds = 0.0
        known = True
        for left, kind_rate in kind_rates.values():
            if left <= 0:
                continue
            use = kind_rate if kind_rate > 0 else rate
            if use <= 0:
                known = False
                break
            seconds += left / use
        finish = now + timedelta(seconds=seconds) if known else None
    elif rate > 0:
        finish = now + timedelta(seconds=remaining_bytes / rate)
    else:
        finish = None
    verdict = None
    if deadline is not None and finish is not None:
        verdict = deadline.will_make_it(finish)
    return Forecast(
        remaining_bytes,
        rate,
        finish,
        verdict,
        cutoff=deadline.cutoff if deadline else None,
        verdict="" if verdict is None else ("on track" if verdict else "late"),
    )


class RunProgress:
    """Thread-safe counters for one run, persisted and announced on ``tick``."""

    def __init__(
        self,
        *,
        run_id: str,
        journal: Journal,
        events: EventBus,
        clock: Clock,
        deadline: Deadline | None,
    ) -> None:
        self.run_id = run_id
        self.journal = journal
        self.events = events
        self.clock = clock
        self.deadline = deadline
        self._lock = threading.Lock()
        self._kinds: dict[str, KindProgress] = {}
        #: Kind -> (monotonic time of its first byte, of its latest byte).
        self._active: dict[str, tuple[float, float]] = {}
        self._started = clock.monotonic()
        self._last_tick = float("-inf")
        live.register_progress(run_id, self)

    def _update(self, kind: str, **delta: int) -> None:
        with self._lock:
            current = self._kinds.get(kind) or KindProgress(kind, 0, 0, False, 0, 0, 0, 0, 0, 0, 0)
            changes = {name: getattr(current, name) + value for name, value in delta.items()}
            self._kinds[kind] = replace(current, **changes)

    def listed(self, kind: str, size: int) -> None:
        self._update(kind, listed_items=1, listed_bytes=size)

    def listing_done(self, kind: str) -> None:
        with self._lock:
            current = self._kinds.get(kind) or KindProgress(kind, 0, 0, False, 0, 0, 0, 0, 0, 0, 0)
            self._kinds[kind] = replace(current, listing_done=True)
            snapshot = self._kinds[kind]
        self.events.emit(
            ExportPlanned(
                kind=kind,
                items=snapshot.listed_items,
                bytes=snapshot.listed_bytes,
                listing_done=True,
            )
        )

    def skipped(self, kind: str, size: int) -> None:
        self._update(kind, skipped_items=1, skipped_bytes=size)
        self.tick()

    def done(self, kind: str, size: int) -> None:
        self._update(kind, done_items=1, done_bytes=size)
        self.tick()

    def failed(self, kind: str, size: int = 0) -> None:
        self._update(kind, failed_items=1, failed_bytes=size)
        self.tick()

    def copied(self, kind: str, nbytes: int) -> None:
        now = self.clock.monotonic()
        with self._lock:
            first, _last = self._active.get(kind, (now, now))
            self._active[kind] = (first, now)
        self._update(kind, copied_bytes=nbytes)

    def snapshot(self) -> list[KindProgress]:
        with self._lock:
            return list(self._kinds.values())

    def current_forecast(self) -> Forecast:
        scheduler = live.scheduler_for(self.run_id)
        outlook = scheduler.outlook() if scheduler is not None else None
        if outlook is not None:
            return Forecast(
                remaining_bytes=outlook.remaining_bytes,
                bytes_per_second=outlook.egress_p50,
                projected_finish=outlook.finish_p50,
                will_make_it=outlook.finish_p90 <= outlook.cutoff,
                p90_finish=outlook.finish_p90,
                cutoff=outlook.cutoff,
                verdict=outlook.verdict,
                descoped_items=outlook.descoped_items,
                descoped_bytes=outlook.descoped_bytes,
            )
        kinds = self.snapshot()
        with self._lock:
            active = dict(self._active)
        kind_rates = {}
        for k in kinds:
            first, last = active.get(k.kind, (0.0, 0.0))
            span = last - first
            own = k.copied_bytes / span if span >= _KIND_RATE_MIN_S else 0.0
            kind_rates[k.kind] = (k.remaining_bytes, own)
        return forecast(
            remaining_bytes=sum(k.remaining_bytes for k in kinds),
            copied_bytes=sum(k.copied_bytes for k in kinds),
            elapsed_s=self.clock.monotonic() - self._started,
            now=self.clock.now(),
            deadline=self.deadline,
            kind_rates=kind_rates,
        )

    def tick(self, force: bool = False) -> None:
        """Persist and announce progress, at most every half second unless forced."""
        now = self.clock.monotonic()
        with self._lock:
            if not force and now - self._last_tick < _TICK_SECONDS:
                return
            self._last_tick = now
            kinds = list(self._kinds.values())
        for kind in kinds:
            self.journal.save_progress(self.run_id, kind)
        outlook = self.current_forecast()
        self.events.emit(
            Projection(
                remaining_bytes=outlook.remaining_bytes,
                bytes_per_second=outlook.bytes_per_second,
                projected_finish=outlook.projected_finish,
                deadline=self.deadline.at if self.deadline else None,
                will_make_it=outlook.will_make_it,
                p90_finish=outlook.p90_finish,
                cutoff=outlook.cutoff,
                verdict=outlook.verdict,
                descoped_items=outlook.descoped_items,
                descoped_bytes=outlook.descoped_bytes,
            )
        )
