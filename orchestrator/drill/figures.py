"""What a drill measures, how it is judged, and how drills trend.

RTO is measured as AWS's Application Recovery Controller measures "actual
recovery time": from the start of the drill until the service's health check
is green on the new host. RPO is measured per kind as the start of the drill
minus the newest data proven restored (the dump's snapshot time, the newest
S3 object copied, the table's scan time), never a configured value: it says
how old the data would be if the exit had happened at the start.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from orchestrator.run.journal import DrillRecord


@dataclass(frozen=True)
class DrillObjectives:
    """What the firm has promised: ``drill: {rto: 4h, rpo: 1h, every: 90d}`` in the config."""

    rto: timedelta | None = None
    rpo: timedelta | None = None
    every: timedelta | None = None


@dataclass(frozen=True)
class ObjectiveResult:
    name: str  # rto | rpo:<kind> | notice | cleanup
    target: str
    measured: str
    met: bool


@dataclass(frozen=True)
class CleanupOutcome:
    """One thing the drill made and what removing it came to (it can fail)."""

    what: str
    status: str  # removed | failed
    detail: str = ""


@dataclass(frozen=True)
class DrillFigures:
    scenario: str
    started_at: datetime
    #: Seconds from the start to the health check green; None when it never was.
    rto_s: float | None
    #: Kind -> seconds between the start and the newest data proven restored.
    rpo_s: dict[str, float]
    notice_s: float
    items_verified: int
    bytes_verified: int
    items_failed: int
    items_descoped: int
    #: Table -> rows counted after the restore (equal to the source's, or the step failed).
    restored_rows: dict[str, int] = field(default_factory=dict)
    cleanup: tuple[CleanupOutcome, ...] = ()
    objectives: tuple[ObjectiveResult, ...] = ()

    @property
    def passed(self) -> bool:
        return all(result.met for result in self.objectives)

    @property
    def cleanup_ok(self) -> bool:
        return all(outcome.status == "removed" for outcome in self.cleanup)


def _text(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    return str(timedelta(seconds=round(seconds)))


def judge(
    *,
    rto_s: float | None,
    rpo_s: Mapping[str, float],
    notice_s: float,
    objectives: DrillObjectives,
    cleanup: Sequence[CleanupOutcome],
) -> tuple[ObjectiveResult, ...]:
    """Each objective against its figure; a missing figure never meets an objective."""
    results = [
        ObjectiveResult(
            "notice",
            f"service up within the notice, {_text(notice_s)}",
            _text(rto_s),
            rto_s is not None and rto_s <= notice_s,
        )
    ]
    if objectives.rto is not None:
        target = objectives.rto.total_seconds()
        results.append(
            ObjectiveResult(
                "rto", _text(target), _text(rto_s), rto_s is not None and rto_s <= target
            )
        )
    if objectives.rpo is not None:
        target = objectives.rpo.total_seconds()
        if not rpo_s:
            results.append(ObjectiveResult("rpo", _text(target), "nothing restored", False))
        for kind, seconds in sorted(rpo_s.items()):
            results.append(
                ObjectiveResult(f"rpo:{kind}", _text(target), _text(seconds), seconds <= target)
            )
    failed = [c for c in cleanup if c.status != "removed"]
    results.append(
        ObjectiveResult(
            "cleanup",
            "nothing left behind",
            "clean" if not failed else f"{len(failed)} left behind",
            not failed,
        )
    )
    return tuple(results)


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
        return f"no passing drill on record; the exit plan must be drilled every {_text(every.total_seconds())}"
    return (
        f"the last passing drill is {_text((late + every).total_seconds())} old, "
        f"{_text(late.total_seconds())} past the promised {_text(every.total_seconds())}: run `exitplan drill`"
    )
