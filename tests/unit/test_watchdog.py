"""The deadline stops work in flight, on an injected clock: no item runs past it."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from orchestrator.clock import FrozenClock
from orchestrator.errors import Cancelled
from orchestrator.export.exporters.base import Exporter, ExportItem, SourceStream
from orchestrator.plan.priorities import Prioritizer
from orchestrator.run.cancel import CancelReason, CancelToken
from orchestrator.run.deadline import Deadline
from orchestrator.run.watchdog import Watchdog
from tests.support.engine import ExportHarness

START = datetime(2021, 1, 10, 22, 0, tzinfo=UTC)
CHUNKS = 300
CHUNK = b"x" * 4096


class SlowStream(SourceStream):
    """One large item that takes five hours of the injected clock to read."""

    wants_md5 = False

    def __init__(self, clock: FrozenClock, log: list[int]) -> None:
        self.clock = clock
        self.log = log

    def __iter__(self) -> Iterator[bytes]:
        for index in range(CHUNKS):
            self.log.append(index)
            yield CHUNK
            self.clock.advance(timedelta(hours=5) / CHUNKS)

    def verify(self, *, size: int, md5_hex: str, sha256_hex: str) -> str | None:
        return f"sha256:{sha256_hex}"


class SlowExporter(Exporter):
    kind = "s3"

    def __init__(self, clock: FrozenClock) -> None:
        account: Any = None  # never read: the item's bytes come from SlowStream
        super().__init__(account, tier_of=Prioritizer([]))
        self.clock = clock
        self.read: list[int] = []

    def list_items(self) -> Iterator[ExportItem]:
        yield self.new_item(
            idem_key="slow:1",
            dest_key="s3/slow/huge.bin",
            source={"kind": "s3", "bucket": "slow", "key": "huge.bin"},
            size=CHUNKS * len(CHUNK),
        )

    def open(self, item: ExportItem) -> SourceStream:
        return SlowStream(self.clock, self.read)


def test_an_item_in_flight_is_stopped_at_the_deadline_not_when_it_ends(tmp_path: Path) -> None:
    clock = FrozenClock(START)
    harness = ExportHarness(tmp_path)
    exporter = SlowExporter(clock)
    deadline = Deadline(START + timedelta(minutes=59), timedelta(minutes=10))
    with (
        Watchdog(deadline, clock, harness.cancel),
        pytest.raises(Cancelled, match="the deadline passed"),
    ):
        harness.export(exporter, concurrency=1)
    assert harness.cancel.reason is CancelReason.DEADLINE
    # Stopped within a chunk of the deadline: 59 of 300 minutes read, not all five hours.
    assert len(exporter.read) == pytest.approx(CHUNKS * 59 / 300, abs=2)
    counts = harness.journal.item_counts(harness.run_id)
    assert counts["verified"] == 0 and counts["in-flight"] == 1  # resume carries on
    assert not (tmp_path / "vault" / "s3" / "slow" / "huge.bin").exists()


def test_the_watchdog_cancels_at_once_when_the_deadline_has_already_passed() -> None:
    clock = FrozenClock(START)
    cancel = CancelToken()
    with Watchdog(Deadline(START - timedelta(seconds=1)), clock, cancel):
        assert cancel.reason is CancelReason.DEADLINE


def test_the_watchdog_waits_until_the_deadline_on_the_real_clock_too() -> None:
    # Only a deadline already a second away: the thread must see it without help.
    from orchestrator.clock import SystemClock

    clock = SystemClock()
    cancel = CancelToken()
    with Watchdog(Deadline(clock.now() + timedelta(milliseconds=200)), clock, cancel):
        assert cancel.wait(10), "the watchdog never fired"
    assert cancel.reason is CancelReason.DEADLINE


def test_the_first_cancel_reason_is_kept() -> None:
    # The report and the exit code follow the deadline even if a Ctrl-C comes after it.
    cancel = CancelToken()
    cancel.cancel(CancelReason.DEADLINE)
    cancel.cancel(CancelReason.INTERRUPTED)
    assert cancel.reason is CancelReason.DEADLINE
    assert CancelReason.DEADLINE.exit_code == 3 and CancelReason.INTERRUPTED.exit_code == 130


def test_a_running_tool_such_as_pg_dump_is_killed_when_the_run_is_cancelled(tmp_path: Path) -> None:
    import time

    from orchestrator.postgres import run_tool

    cancel = CancelToken()
    cancel.cancel(CancelReason.DEADLINE)
    started = time.monotonic()
    marker = tmp_path / "still-running"
    with pytest.raises(Cancelled, match="stopped sh: the deadline passed"):
        run_tool(
            ["sh", "-c", f"sleep 30; touch {marker}"], env={"PATH": "/usr/bin:/bin"}, cancel=cancel
        )
    # Killed at the first look (a fifth of a second), not after its 30 seconds.
    assert time.monotonic() - started < 10
    assert not marker.exists()


def test_a_tool_slower_than_a_look_still_gets_all_of_its_input() -> None:
    # psql reading a seed script larger than a pipe, slower than one look for a cancel:
    # every byte must arrive and its stdin be closed (it once waited for input forever).
    from orchestrator.postgres import run_tool

    script = "x" * (4 * 1024 * 1024)
    done = run_tool(
        ["sh", "-c", "sleep 0.5; wc -c"],
        env={"PATH": "/usr/bin:/bin"},
        stdin_text=script,
        timeout_s=60,
        cancel=CancelToken(),
    )
    assert done.returncode == 0 and done.stdout.strip() == str(len(script))
