"""An injectable clock, so deadline and throughput logic is tested without sleeping."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current wall time, timezone-aware (UTC)."""
        ...

    def monotonic(self) -> float:
        """Seconds from an arbitrary origin that never goes backwards."""
        ...


class SystemClock:
    """The real clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()


class FrozenClock:
    """A clock that moves only when told to; for tests.

    Whoever must react to time passing (the deadline watchdog) subscribes
    with ``on_advance`` and is called synchronously inside ``advance``, so a
    test that moves the clock past the deadline sees the run cancelled
    before ``advance`` returns: no thread has to be waited for.
    """

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("FrozenClock needs a timezone-aware start time")
        self._now = start
        self._mono = 0.0
        self._listeners: list[Callable[[], None]] = []
        self._lock = threading.Lock()

    def on_advance(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call ``listener`` after every ``advance``; returns the unsubscribe function."""
        with self._lock:
            self._listeners.append(listener)

        def unsubscribe() -> None:
            with self._lock, contextlib.suppress(ValueError):
                self._listeners.remove(listener)

        return unsubscribe

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        return self._mono

    def advance(self, delta: timedelta) -> None:
        with self._lock:
            self._now += delta
            self._mono += delta.total_seconds()
            listeners = list(self._listeners)
        for listener in listeners:
            listener()
