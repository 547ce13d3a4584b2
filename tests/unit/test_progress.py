"""Will we make it? The projection against the deadline, on an injected clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from orchestrator.clock import FrozenClock
from orchestrator.events import EventBus, Projection
from orchestrator.run.deadline import Deadline
from orchestrator.run.journal import Journal
from orchestrator.run.progress import RunProgress, forecast

NOW = datetime(2021, 1, 10, 12, 0, tzinfo=UTC)
DEADLINE_AT = datetime(2021, 1, 10, 23, 59, tzinfo=UTC)
DEADLINE = Deadline(DEADLINE_AT)


def test_no_throughput_measured_means_no_projection():
    outlook = forecast(remaining_bytes=10, copied_bytes=0, elapsed_s=5, now=NOW, deadline=DEADLINE)
    assert outlook.projected_finish is None and outlook.will_make_it is None


def test_projection_uses_measured_throughput_and_the_safety_margin():
    # 1 MB/s measured, 10 GB left: about 2.8 hours, well before the deadline.
    outlook = forecast(
        remaining_bytes=10_000_000_000,
        copied_bytes=60_000_000,
        elapsed_s=60,
        now=NOW,
        deadline=Deadline(DEADLINE_AT, timedelta(hours=2)),
    )
    assert outlook.bytes_per_second == 1_000_000
    assert outlook.projected_finish == NOW + timedelta(seconds=10_000)
    assert outlook.will_make_it is True
    # 50 GB left would end after the deadline less its margin.
    late = forecast(
        remaining_bytes=50_000_000_000,
        copied_bytes=60_000_000,
        elapsed_s=60,
        now=NOW,
        deadline=Deadline(DEADLINE_AT, timedelta(hours=2)),
    )
    assert late.will_make_it is False


def test_progress_announces_the_outlook_and_persists_it(tmp_path):
    clock = FrozenClock(NOW)
    journal = Journal(tmp_path / "journal.sqlite", clock=clock)
    run_id = journal.start_run("migrate", DEADLINE_AT, {})
    seen: list[Projection] = []
    events = EventBus()
    events.subscribe(lambda e: seen.append(e) if isinstance(e, Projection) else None)
    progress = RunProgress(
        run_id=run_id, journal=journal, events=events, clock=clock, deadline=DEADLINE
    )
    for _ in range(10):
        progress.listed("s3", 1_000_000)
    clock.advance(timedelta(seconds=10))
    progress.copied("s3", 2_000_000)
    progress.done("s3", 1_000_000)
    progress.done("s3", 1_000_000)
    progress.tick(force=True)
    last = seen[-1]
    assert last.remaining_bytes == 8_000_000
    assert last.bytes_per_second == 200_000
    assert last.projected_finish == NOW + timedelta(seconds=10 + 40)
    assert last.will_make_it is True
    [row] = journal.progress(run_id)
    assert (row.done_items, row.listed_items) == (2, 10)


def test_with_a_scheduler_the_projection_is_its_p50_p90_margin_and_verdict(tmp_path):
    from orchestrator.plan import live
    from orchestrator.plan.scheduler import Outlook

    clock = FrozenClock(NOW)
    journal = Journal(tmp_path / "journal.sqlite", clock=clock)
    run_id = journal.start_run("migrate", DEADLINE_AT, {})
    seen: list[Projection] = []
    events = EventBus()
    events.subscribe(lambda e: seen.append(e) if isinstance(e, Projection) else None)
    deadline = Deadline(DEADLINE_AT, timedelta(hours=1))
    progress = RunProgress(
        run_id=run_id, journal=journal, events=events, clock=clock, deadline=deadline
    )

    class Scheduler:
        def outlook(self) -> Outlook:
            return Outlook(
                at=NOW,
                deadline=DEADLINE_AT,
                cutoff=deadline.cutoff,
                finish_p50=NOW + timedelta(hours=9),
                finish_p90=NOW + timedelta(hours=11),
                verdict="descoping",
                remaining_bytes=5,
                egress_p50=100.0,
                egress_p90=50.0,
                in_flight=1,
                pending=2,
                descoped_items=7,
                descoped_bytes=700,
            )

    scheduler = Scheduler()
    live.register_scheduler(run_id, scheduler)
    try:
        progress.tick(force=True)
    finally:
        live.forget(run_id)
    last = seen[-1]
    assert last.projected_finish == NOW + timedelta(hours=9)
    assert last.p90_finish == NOW + timedelta(hours=11) and last.cutoff == deadline.cutoff
    assert last.verdict == "descoping" and last.descoped_items == 7
    # 11 h at P90 is past the cutoff (10 h 59 m): not on track, whatever P50 says.
    assert last.will_make_it is False

    from orchestrator.cli import _projection_text

    text = _projection_text(last)
    assert "P50 21:00:00" in text and "P90 23:00:00" in text and "descoping" in text
    assert "7 descoped" in text and "margin -" in text


def test_without_a_scheduler_each_kind_is_projected_at_its_own_rate():
    # s3 moves 1 MB/s, ebs 100 MB/s: 10 MB of s3 and 1 GB of ebs take 10 s + 10 s,
    # where one average over both would say otherwise.
    outlook = forecast(
        remaining_bytes=1_010_000_000,
        copied_bytes=0,
        elapsed_s=0,
        now=NOW,
        deadline=DEADLINE,
        kind_rates={"s3": (10_000_000, 1_000_000.0), "ebs": (1_000_000_000, 100_000_000.0)},
    )
    assert outlook.projected_finish == NOW + timedelta(seconds=20)
