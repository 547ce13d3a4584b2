"""Stopping a run: one token, set once, with a typed reason.

Everything that waits (retry backoff, a rate limiter, a worker between two
chunks, a subprocess such as ``pg_dump``) checks the same token, so a
Ctrl-C, a SIGTERM or the deadline reaches work in flight at once instead of
when the current item happens to finish.
"""

from __future__ import annotations

import enum
import threading

from orchestrator.errors import Cancelled


class CancelReason(enum.Enum):
    """Why a run was stopped; decides its exit code and what the report says."""

    #: Ctrl-C (SIGINT): the operator asked; ``exitplan resume`` carries on.
    INTERRUPTED = "interrupted (Ctrl-C)"
    #: SIGTERM (systemd, docker stop, a CI timeout): treated like Ctrl-C.
    TERMINATED = "terminated (SIGTERM)"
    #: The hard deadline passed: the source is gone, or about to be.
    DEADLINE = "the deadline passed"

    @property
    def exit_code(self) -> int:
        return 3 if self is CancelReason.DEADLINE else 130


class CancelToken:
    """Set once to stop a run; everything waiting on it wakes at once. Thread-safe."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self.reason: CancelReason | None = None

    def cancel(self, reason: CancelReason) -> None:
        """Stop the run; the first reason given is the one kept."""
        with self._lock:
            if self.reason is None:
                self.reason = reason
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True if cancelled meanwhile."""
        return self._event.wait(seconds)

    def raise_if_set(self) -> None:
        if self._event.is_set():
            raise Cancelled(f"stopped: {self.describe()}")

    def describe(self) -> str:
        return self.reason.value if self.reason is not None else "not cancelled"
