"""Drill history: the trend of the drills kept, and whether the last passing one is too old.

Each drill's figures (RTO, RPO per kind, bytes moved; see
``orchestrator.report.model``) are kept in the journal; the trend answers
"is the exit getting slower as the data grows?", and ``overdue_warning`` is
what ``status`` and ``drill --evaluate`` say when the promised interval
(``drill: {every: 90d}``) has passed since the last drill that passed.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from orchestrator.run.deadline import format_duration
from orchestrator.run.journal import DrillRecord


@dataclass(frozen=True)
class Trend:
    """Is the exit getting slower as the data grows? From the drills kept."""

    drills: int
    #: Seconds of RTO per GiB moved, least squares over the drills with both figures.
    rto_s_per_gib: float | None
    #: Change of RTO between the first and last drill with one, in seconds.
    rto_change_s: float | None
    last_passed_at: datetime | None

    def overdue(self, every: timedelta | None, now: datetime) -> timedelta | None:
        """How long past ``every`` the last passing drill is (None: not overdue)."""
        if every is None:
            return None
        if self.last_passed_at is None:
            return timedelta.max
        late = now - self.last_passed_at - every
        return late if late > timedelta(0) else None


def trend(records: Sequence[DrillRecord]) -> Trend:
    points = [
        (float(r.figures.get("bytes_verified", 0)) / 1024**3, float(r.figures["rto_s"]))
        for r in records
        if r.figures.get("rto_s") is not None
    ]
    slope = None
    if len(points) >= 2 and len({x for x, _ in points}) >= 2:
        slope = statistics.linear_regression([x for x, _ in points], [y for _, y in points]).slope
    passed = [r.finished_at for r in records if r.passed]
    return Trend(
        drills=len(records),
        rto_s_per_gib=slope,
        rto_change_s=points[-1][1] - points[0][1] if len(points) >= 2 else None,
        last_passed_at=max(passed) if passed else None,
    )


def overdue_warning(
    records: Sequence[DrillRecord], every: timedelta | None, now: datetime
) -> str | None:
    """The warning `status` and `drill --evaluate` give when the last passing drill is too old."""
    late = trend(records).overdue(every, now)
    if late is None or every is None:
        return None
    if late == timedelta.max:
        return f"no passing drill on record; the exit plan must be drilled every {format_duration(every)}"
    return (
        f"the last passing drill is {format_duration(late + every)} old, "
        f"{format_duration(late)} past the promised {format_duration(every)}: run `exitplan drill`"
    )
