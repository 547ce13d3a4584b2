"""Run progress: counters per kind, the throughput they imply, and the deadline view.

Workers report bytes and items as they go; ``tick`` turns that, at most
twice a second, into a journal row per kind (what ``exitplan status`` reads)
and a ``Projection`` event (what the progress bars show): remaining bytes,
measured throughput, projected finish, and whether that beats the deadline.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from orchestrator.clock import Clock
from orchestrator.events import EventBus, ExportPlanned, Projection
from orchestrator.run.deadline import Deadline
from orchestrator.run.journal import Journal, KindProgress

_TICK_SECONDS = 0.5


@dataclass(frozen=True)
class Forecast:
    remaining_bytes: int
    bytes_per_second: float
    projected_finish: datetime | None
    will_make_it: bool | None


def forecast(
    *,
    remaining_bytes: int,
    copied_bytes: int,
    elapsed_s: float,
    now: datetime,
    deadline: Deadline | None,
) -> Forecast:
    """Project the finish from the throughput measured so far.

    With nothing measured yet there is no projection (None), rather than a
    made-up one; with nothing left the finish is now.
    """
    rate = copied_bytes / elapsed_s if elapsed_s > 0 and copied_bytes > 0 else 0.0
    if remaining_bytes == 0:
        finish: datetime | None = now
    elif rate > 0:
        finish = now + timedelta(seconds=remaining_bytes / rate)
    else:
        finish = None
    verdict = None
    if deadline is not None and finish is not None:
        verdict = deadline.will_make_it(finish)
    return Forecast(remaining_bytes, rate, finish, verdict)


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
        self._started = clock.monotonic()
        self._last_tick = float("-inf")

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
        self._update(kind, copied_bytes=nbytes)

    def snapshot(self) -> list[KindProgress]:
        with self._lock:
            return list(self._kinds.values())

    def current_forecast(self) -> Forecast:
        kinds = self.snapshot()
        return forecast(
            remaining_bytes=sum(k.remaining_bytes for k in kinds),
            copied_bytes=sum(k.copied_bytes for k in kinds),
            elapsed_s=self.clock.monotonic() - self._started,
            now=self.clock.now(),
            deadline=self.deadline,
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
            )
        )
