"""Structured events: how the engine tells the world what it is doing.

The engine prints nothing. It emits events to an ``EventBus``; subscribers
render them (the CLI's progress bars), log them, or keep them for a report.
A subscriber that raises is dropped from that event only, never the run.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Event:
    """Base of every event the engine emits."""


@dataclass(frozen=True)
class StepStarted(Event):
    step: str
    detail: str = ""


@dataclass(frozen=True)
class StepFinished(Event):
    step: str
    status: str  # "done", "failed", "skipped"
    detail: str = ""


@dataclass(frozen=True)
class ExportPlanned(Event):
    """An exporter knows how much work it has (totals may grow while listing)."""

    kind: str
    items: int
    bytes: int
    listing_done: bool


@dataclass(frozen=True)
class ItemFinished(Event):
    kind: str
    key: str
    size: int
    status: str  # "verified", "unchecked" (saved; no source checksum), "skipped", "failed"
    error: str = ""


@dataclass(frozen=True)
class Projection(Event):
    """The live answer to "will we make it?"."""

    remaining_bytes: int
    bytes_per_second: float
    #: The P50 finish.
    projected_finish: datetime | None
    deadline: datetime | None
    will_make_it: bool | None
    #: The deadline planner's pessimistic finish, the cutoff it is judged
    #: against, its verdict and what it left out so far (None/empty without one).
    p90_finish: datetime | None = None
    cutoff: datetime | None = None
    verdict: str = ""
    descoped_items: int = 0
    descoped_bytes: int = 0


@dataclass(frozen=True)
class RunWarning(Event):
    message: str


Subscriber = Callable[[Event], None]


@dataclass
class EventBus:
    """Fan events out to subscribers; safe to emit from worker threads."""

    _subscribers: list[Subscriber] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def subscribe(self, subscriber: Subscriber) -> None:
        with self._lock:
            self._subscribers.append(subscriber)

    def emit(self, event: Event) -> None:
        with self._lock:
            subscribers = list(self._subscribers)
        for subscriber in subscribers:
            try:
                subscriber(event)
            except Exception:  # a broken renderer must not stop an evacuation
                log.exception("event subscriber %r failed on %s", subscriber, type(event).__name__)
