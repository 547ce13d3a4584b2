"""Where a run's live scheduler and its progress counters find each other.

The export step builds the progress counters and asks ``plan.schedule`` for
its work source; neither is handed the other. The scheduler needs the bytes
flowing now (to measure the egress between two finished items) and the
progress display needs the scheduler's P50/P90 (not a byte average). Both
register here under the run id for the life of the export, and look the
other up; a run without a deadline has no scheduler, and its progress falls
back to its own per-kind figures.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

_lock = threading.Lock()
_schedulers: weakref.WeakValueDictionary[str, Any] = weakref.WeakValueDictionary()
_progress: weakref.WeakValueDictionary[str, Any] = weakref.WeakValueDictionary()


def register_scheduler(run_id: str, scheduler: Any) -> None:
    with _lock:
        _schedulers[run_id] = scheduler


def scheduler_for(run_id: str) -> Any | None:
    with _lock:
        return _schedulers.get(run_id)


def register_progress(run_id: str, progress: Any) -> None:
    with _lock:
        _progress[run_id] = progress


def progress_for(run_id: str) -> Any | None:
    with _lock:
        return _progress.get(run_id)


def forget(run_id: str) -> None:
    with _lock:
        _schedulers.pop(run_id, None)
        _progress.pop(run_id, None)
