"""The deadline watchdog: cancels the run at the deadline, whatever is running.

Work in flight checks the cancel token between chunks, retries and
subprocess polls, so cancelling is what stops a large object, an EBS image
or a ``pg_dump`` at the deadline; waiting for an item to finish would let
one item run hours past it. The watchdog reads the injected clock: on the
real clock it wakes on its own, on a ``FrozenClock`` it is called by
``advance`` itself, so tests move time and see the cancel at once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from orchestrator.clock import Clock
from orchestrator.run.cancel import CancelReason, CancelToken
from orchestrator.run.deadline import Deadline

#: Longest the watchdog sleeps between two looks at the real clock (a wall
#: clock can jump; a suspended laptop wakes past the deadline).
_POLL_S = 1.0


class Watchdog:
    """Cancels ``cancel`` with ``CancelReason.DEADLINE`` once ``clock`` reaches the deadline."""

    def __init__(self, deadline: Deadline, clock: Clock, cancel: CancelToken) -> None:
        self.deadline = deadline
        self.clock = clock
        self.cancel = cancel
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._unsubscribe: Callable[[], None] | None = None

    def check(self) -> bool:
        """Cancel if the deadline has passed; True when it has."""
        if self.deadline.remaining(self.clock).total_seconds() <= 0:
            self.cancel.cancel(CancelReason.DEADLINE)
            return True
        return False

    def start(self) -> Watchdog:
        if self.check():
            return self
        on_advance = getattr(self.clock, "on_advance", None)
        if callable(on_advance):
            self._unsubscribe = on_advance(self.check)
            return self
        self._thread = threading.Thread(target=self._watch, name="exitplan-deadline", daemon=True)
        self._thread.start()
        return self

    def _watch(self) -> None:
        while not self._stop.is_set() and not self.cancel.is_set():
            left = self.deadline.remaining(self.clock).total_seconds()
            if left <= 0:
                self.cancel.cancel(CancelReason.DEADLINE)
                return
            self._stop.wait(min(_POLL_S, left))

    def stop(self) -> None:
        self._stop.set()
        if self._unsubscribe is not None:
            self._unsubscribe()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Watchdog:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
