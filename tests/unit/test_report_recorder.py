"""The recorder keeps projections, throughput and warnings from events, bounded, on a clock."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from orchestrator.clock import FrozenClock
from orchestrator.events import EventBus, ItemFinished, Projection, RunWarning
from orchestrator.report.recorder import ReportRecorder

START = datetime(2025, 3, 14, 9, 0, tzinfo=UTC)


@pytest.fixture
def clock():
    return FrozenClock(START)


def projection(finish: datetime) -> Projection:
    return Projection(
        remaining_bytes=100,
        bytes_per_second=1.0,
        projected_finish=finish,
        deadline=None,
        will_make_it=None,
    )


def test_projections_are_sampled_at_most_once_per_interval(clock):
    recorder = ReportRecorder(clock, interval_s=5)
    bus = EventBus()
    bus.subscribe(recorder)
    for second in range(20):
        bus.emit(projection(START + timedelta(minutes=10 + second)))
        clock.advance(timedelta(seconds=1))
    kept = recorder.projections()
    assert [p.at - START for p in kept] == [timedelta(seconds=s) for s in (0, 5, 10, 15)]
    assert kept[1].p50_finish == START + timedelta(minutes=15)
    assert kept[1].p90_finish is None and kept[1].remaining_bytes == 100


def test_throughput_per_kind_is_bytes_verified_per_interval(clock):
    recorder = ReportRecorder(clock, interval_s=10)
    for _ in range(10):  # 10 s of s3 at 1,000 bytes/s; rds only in the first second
        recorder(ItemFinished(kind="s3", key="k", size=1000, status="verified"))
        clock.advance(timedelta(seconds=1))
    recorder(ItemFinished(kind="s3", key="k", size=1, status="failed"))  # not saved: not counted
    recorder(ItemFinished(kind="rds", key="k", size=0, status="verified"))
    clock.advance(timedelta(seconds=5))
    recorder(ItemFinished(kind="s3", key="k", size=500, status="verified"))
    recorder.close()
    samples = [(s.at - START, s.kind, s.bytes_per_s) for s in recorder.throughput()]
    assert samples == [
        (timedelta(seconds=10), "s3", 1000.0),
        (timedelta(seconds=10), "rds", 0.0),
        (timedelta(seconds=15), "s3", 100.0),
        (timedelta(seconds=15), "rds", 0.0),
    ]


def test_warnings_are_kept_in_order(clock):
    recorder = ReportRecorder(clock)
    recorder(RunWarning(message="first"))
    recorder(RunWarning(message="second"))
    assert recorder.warnings() == ("first", "second")


def test_a_long_run_keeps_an_even_spread_within_the_bound(clock):
    recorder = ReportRecorder(clock, interval_s=1, max_samples=100)
    for _ in range(30 * 3600 // 10):  # 30 hours, a projection every 10 s
        recorder(projection(START))
        clock.advance(timedelta(seconds=10))
    kept = recorder.projections()
    assert len(kept) <= 100
    assert kept[0].at == START
    assert kept[-1].at > START + timedelta(hours=29)  # not only the first hours
    gaps = {(b.at - a.at) for a, b in itertools.pairwise(kept)}
    assert max(gaps) <= 4 * min(gaps)
