"""Keeps what a report needs from the event stream: projections, throughput, warnings.

Subscribe a ``ReportRecorder`` to the run's ``EventBus``; at the end put its
``projections()``, ``throughput()`` and ``warnings()`` in the ``RunReport``.
Memory stays bounded however long the run: samples are taken at most every
``interval_s`` and, past ``max_samples``, every other one is dropped and the
interval doubled (so a 30-hour run keeps an even spread, not its first hour).

Throughput per kind is the bytes of items verified in each interval over the
interval's length, so a large item counts when it finishes; a runner that
knows finer rates can call ``record_throughput`` instead.
"""

from __future__ import annotations

import threading
from datetime import datetime
from typing import TypeVar

from orchestrator.clock import Clock
from orchestrator.events import Event, ItemFinished, Projection, RunWarning
from orchestrator.report.model import ProjectionSample, ThroughputSample

_Sample = TypeVar("_Sample", ProjectionSample, ThroughputSample)


class ReportRecorder:
    """An event subscriber; thread-safe (events come from worker threads)."""

    def __init__(self, clock: Clock, *, interval_s: float = 5.0, max_samples: int = 2000) -> None:
        if interval_s <= 0 or max_samples < 4:
            raise ValueError("interval_s must be > 0 and max_samples >= 4")
        self._clock = clock
        self._interval_s = interval_s
        self._max_samples = max_samples
        self._lock = threading.Lock()
        self._projections: list[ProjectionSample] = []
        self._last_projection: datetime | None = None
        self._throughput: list[ThroughputSample] = []
        self._bucket_start = clock.now()
        self._bucket_bytes: dict[str, int] = {}
        self._kinds_seen: list[str] = []
        self._warnings: list[str] = []

    def __call__(self, event: Event) -> None:
        if isinstance(event, Projection):
            self.record_projection(event.projected_finish, event.p90_finish, event.remaining_bytes)
        elif isinstance(event, ItemFinished) and event.status == "verified":
            self._add_bytes(event.kind, event.size)
        elif isinstance(event, RunWarning):
            with self._lock:
                self._warnings.append(event.message)

    def record_projection(
        self, p50_finish: datetime | None, p90_finish: datetime | None, remaining_bytes: int | None
    ) -> None:
        """Keep a projection, unless one was kept less than ``interval_s`` ago."""
        now = self._clock.now()
        with self._lock:
            last = self._last_projection
            if last is not None and (now - last).total_seconds() < self._interval_s:
                return
            self._last_projection = now
            self._projections.append(
                ProjectionSample(
                    at=now,
                    p50_finish=p50_finish,
                    p90_finish=p90_finish,
                    remaining_bytes=remaining_bytes,
                )
            )
            if len(self._projections) > self._max_samples:
                self._projections = _thin(self._projections)
                self._interval_s *= 2

    def record_throughput(self, kind: str, bytes_per_s: float) -> None:
        """Keep a rate measured elsewhere (for example by the transfer engine)."""
        with self._lock:
            self._append_throughput([ThroughputSample(self._clock.now(), kind, bytes_per_s)])

    def _add_bytes(self, kind: str, size: int) -> None:
        now = self._clock.now()
        with self._lock:
            if kind not in self._kinds_seen:
                self._kinds_seen.append(kind)
            self._close_bucket_if_due(now)
            self._bucket_bytes[kind] = self._bucket_bytes.get(kind, 0) + size

    def _close_bucket_if_due(self, now: datetime, *, force: bool = False) -> None:
        elapsed = (now - self._bucket_start).total_seconds()
        if elapsed <= 0 or (elapsed < self._interval_s and not force):
            return
        if self._bucket_bytes:
            self._append_throughput(
                [
                    ThroughputSample(now, kind, self._bucket_bytes.get(kind, 0) / elapsed)
                    for kind in self._kinds_seen
                ]
            )
        self._bucket_start = now
        self._bucket_bytes = {}

    def _append_throughput(self, samples: list[ThroughputSample]) -> None:
        self._throughput.extend(samples)
        if len(self._throughput) > self._max_samples * max(1, len(self._kinds_seen)):
            self._throughput = _thin(self._throughput)
            self._interval_s *= 2

    def close(self) -> None:
        """Count the bytes of the last, unfinished interval (call once, at the end)."""
        with self._lock:
            self._close_bucket_if_due(self._clock.now(), force=True)

    def projections(self) -> tuple[ProjectionSample, ...]:
        with self._lock:
            return tuple(self._projections)

    def throughput(self) -> tuple[ThroughputSample, ...]:
        with self._lock:
            return tuple(self._throughput)

    def warnings(self) -> tuple[str, ...]:
        with self._lock:
            return tuple(self._warnings)


def _thin(samples: list[_Sample]) -> list[_Sample]:
    """Every other instant's samples (all kinds of an instant stay together), and the last."""
    instants = sorted({s.at for s in samples})
    kept = set(instants[::2]) | {instants[-1]} if instants else set()
    return [s for s in samples if s.at in kept]
