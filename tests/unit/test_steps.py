"""The runner: journaled steps, typed outputs reused on resume, dry run in one place."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import pytest

from orchestrator.clock import FrozenClock
from orchestrator.config import default_sandbox_config
from orchestrator.events import EventBus, StepFinished
from orchestrator.run.cancel import CancelToken
from orchestrator.run.journal import SCHEMA_VERSION, Journal, JournalError
from orchestrator.run.steps import Parallel, RunContext, Runner, Step, StepFailed

NOW = datetime(2021, 1, 10, 12, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Found:
    hosts: tuple[str, ...]
    when: datetime


class Count:
    def __init__(self) -> None:
        self.calls: dict[str, int] = {}

    def __call__(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1


class Discover(Step[Found]):
    id: ClassVar[str] = "discover"
    title: ClassVar[str] = "find hosts"
    output_type: ClassVar[type[Any]] = Found

    def __init__(self, count: Count, hosts: tuple[str, ...] = ("a", "b")) -> None:
        self.count = count
        self.hosts = hosts

    def inputs(self, run: RunContext) -> dict[str, Any]:
        return {"hosts": self.hosts}

    def execute(self, run: RunContext) -> Found:
        self.count("discover")
        return Found(self.hosts, run.clock.now())


class Use(Step[Found]):
    id: ClassVar[str] = "use"
    title: ClassVar[str] = "use the hosts"
    output_type: ClassVar[type[Any]] = Found
    after: ClassVar[tuple[str, ...]] = ("discover",)

    def __init__(self, count: Count, fail: bool = False) -> None:
        self.count = count
        self.fail = fail

    def execute(self, run: RunContext) -> Found:
        self.count("use")
        found = run.output("discover", Found)
        if self.fail:
            raise StepFailed("the hosts refused")
        return Found(tuple(reversed(found.hosts)), found.when)


def context(tmp_path: Path, journal: Journal, run_id: str, events: EventBus) -> RunContext:
    return RunContext(
        config=default_sandbox_config(tmp_path),
        run_id=run_id,
        journal=journal,
        events=events,
        clock=FrozenClock(NOW),
        cancel=CancelToken(),
        deadline=None,
        directory=tmp_path,
    )


def test_a_resumed_run_reuses_done_steps_with_their_typed_outputs(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.sqlite")
    run_id = journal.start_run("migrate", None, {})
    count = Count()
    first = Runner(
        context(tmp_path, journal, run_id, EventBus()), [Discover(count), Use(count, fail=True)]
    )
    results = first.execute()
    assert (results["discover"].status, results["use"].status) == ("done", "failed")

    seen: list[StepFinished] = []
    events = EventBus()
    events.subscribe(lambda e: seen.append(e) if isinstance(e, StepFinished) else None)
    run = context(tmp_path, journal, run_id, events)
    second = Runner(run, [Discover(count), Use(count)])
    results = second.execute()
    assert count.calls == {"discover": 1, "use": 2}  # discovered once, used again
    assert [(e.step, e.status) for e in seen] == [("discover", "reused"), ("use", "done")]
    # The output came back typed, datetime and tuple included.
    assert run.outputs["discover"] == Found(("a", "b"), NOW)
    assert run.outputs["use"] == Found(("b", "a"), NOW)


def test_changed_inputs_run_the_step_and_those_after_it_again(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.sqlite")
    run_id = journal.start_run("migrate", None, {})
    count = Count()
    Runner(context(tmp_path, journal, run_id, EventBus()), [Discover(count), Use(count)]).execute()
    Runner(
        context(tmp_path, journal, run_id, EventBus()), [Discover(count, ("c",)), Use(count)]
    ).execute()
    assert count.calls == {"discover": 2, "use": 2}


def test_a_step_whose_input_failed_is_skipped_with_the_reason(tmp_path: Path) -> None:
    class Broken(Discover):
        def execute(self, run: RunContext) -> Found:
            raise StepFailed("no hosts")

    journal = Journal(tmp_path / "journal.sqlite")
    run_id = journal.start_run("migrate", None, {})
    count = Count()
    runner = Runner(context(tmp_path, journal, run_id, EventBus()), [Broken(count), Use(count)])
    results = runner.execute()
    assert results["use"].status == "skipped" and "discover failed" in results["use"].detail
    assert "use" not in count.calls
    assert [s.status for s in journal.steps(run_id)] == ["failed", "skipped"]


def test_lanes_run_side_by_side_and_a_failure_in_one_does_not_stop_the_other(
    tmp_path: Path,
) -> None:
    class Other(Discover):
        id: ClassVar[str] = "other"

        def execute(self, run: RunContext) -> Found:
            raise RuntimeError("a bug")

    journal = Journal(tmp_path / "journal.sqlite")
    run_id = journal.start_run("migrate", None, {})
    count = Count()
    results = Runner(
        context(tmp_path, journal, run_id, EventBus()),
        [Parallel([Discover(count), Use(count)], [Other(count)])],
    ).execute()
    assert results["use"].status == "done"
    assert results["other"].status == "failed"
    assert results["other"].detail == "internal error: RuntimeError: a bug"


def test_dry_run_previews_every_step_and_writes_nothing(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.sqlite")
    run_id = journal.start_run("migrate", None, {})
    count = Count()
    runner = Runner(context(tmp_path, journal, run_id, EventBus()), [Discover(count), Use(count)])
    assert [(p.step, p.what) for p in runner.preview()] == [
        ("discover", "find hosts"),
        ("use", "use the hosts"),
    ]
    assert count.calls == {} and journal.steps(run_id) == []


def test_a_journal_of_the_first_layout_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    with sqlite3.connect(path) as db:
        db.executescript(
            """
            CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
            INSERT INTO meta VALUES ('schema_version', '3');
            CREATE TABLE runs (id TEXT PRIMARY KEY, command TEXT NOT NULL, status TEXT NOT NULL,
                started_at TEXT NOT NULL, finished_at TEXT, deadline TEXT, invocation TEXT NOT NULL);
            CREATE TABLE steps (run_id TEXT NOT NULL, name TEXT NOT NULL, status TEXT NOT NULL,
                started_at TEXT NOT NULL, finished_at TEXT, detail TEXT NOT NULL DEFAULT '',
                PRIMARY KEY (run_id, name));
            INSERT INTO runs VALUES ('r1', 'migrate', 'failed', '2021-01-10T12:00:00+00:00', NULL,
                NULL, '{}');
            INSERT INTO steps VALUES ('r1', 'inventory', 'done', '2021-01-10T12:00:00+00:00',
                NULL, 'x');
            """
        )
    journal = Journal(path)
    [step] = journal.steps("r1")
    assert (step.step, step.status, step.output) == ("inventory", "done", None)
    journal.record_undo("r1", "place", "server", {"node": "n1"}, "a server")
    assert [e.kind for e in journal.undo_entries("r1")] == ["server"]
    journal.close()


def test_a_journal_from_a_newer_exitplan_is_refused_not_misread(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    Journal(path).close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION + 1),))
    with pytest.raises(JournalError, match="newer exitplan"):
        Journal(path)


def test_a_journal_held_by_another_process_is_called_busy_not_corrupt(tmp_path: Path) -> None:
    # Replacing it with the copy from before the run would throw that run's work away.
    path = tmp_path / "journal.sqlite"
    journal = Journal(path)
    journal.start_run("migrate", None, {})
    journal.close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(JournalError, match="in use by another process") as refused:
            Journal(path)
    finally:
        holder.close()
    assert ".bak" not in str(refused.value)
    assert Journal(path).get_run() is not None


def test_a_corrupt_journal_names_the_last_good_copy(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    journal = Journal(path)
    journal.start_run("migrate", None, {})
    journal.keep_backup()
    journal.close()
    path.write_bytes(b"\x00not a database\x00" * 512)
    with pytest.raises(JournalError, match=r"journal\.sqlite\.bak") as refused:
        Journal(path)
    assert "exitplan resume" in str(refused.value)
    # The copy kept before the run is a readable journal.
    assert Journal(path.with_name("journal.sqlite.bak")).get_run() is not None
