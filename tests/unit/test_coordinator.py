"""The transfer coordinator: the only writer of the journal, what it tells the work
source, and what it does with descoped items, failing listings and retries."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from orchestrator.errors import FatalError
from orchestrator.export.exporters.base import BytesStream, Exporter, ExportItem, SourceStream
from orchestrator.export.work import (
    Descoped,
    KindByKind,
    Listing,
    ListingEnd,
    Outcome,
    Shard,
    ShardOf,
    Wait,
)
from orchestrator.plan.priorities import Prioritizer
from orchestrator.run.journal import Journal
from providers.aws import AwsAccount
from tests.support.engine import ExportHarness


def body(name: str) -> bytes:
    return (name.encode() * 200)[: 500 + len(name) * 37]


class Documents(Exporter):
    """Items rendered in memory; ``fail_after`` makes the listing raise part-way."""

    kind = "docs"

    def __init__(
        self, names: Sequence[str], *, kind: str = "docs", fail_after: int | None = None
    ) -> None:
        super().__init__(
            AwsAccount(regions=["us-east-1"], endpoint_url="http://127.0.0.1:9"),
            tier_of=Prioritizer([]),
        )
        self.kind = kind  # type: ignore[misc]
        self.names = list(names)
        self.fail_after = fail_after
        self.settled: list[tuple[str, str]] = []
        self.opens: dict[str, int] = {}

    def list_items(self) -> Iterator[ExportItem]:
        for index, name in enumerate(self.names):
            if self.fail_after is not None and index == self.fail_after:
                raise FatalError(f"listing {self.kind} failed: the API said no")
            yield ExportItem(
                kind=self.kind,
                idem_key=f"{self.kind}:{name}",
                dest_key=f"{self.kind}/{name}",
                size=len(body(name)),
            )

    def open(self, item: ExportItem) -> SourceStream:
        self.opens[item.dest_key] = self.opens.get(item.dest_key, 0) + 1
        return BytesStream(body(item.dest_key.split("/", 1)[1]), item.dest_key)

    def item_settled(self, item: ExportItem, status: str) -> None:
        self.settled.append((item.dest_key, status))


class Planned:
    """A work source like the planner's: it descopes some items and learns from outcomes."""

    def __init__(self, exporter: Documents, descope: set[str]) -> None:
        self.exporter_ = exporter
        self.descope = descope
        self.listing = Listing(exporter)
        self.descoped: list[Descoped] = []
        self.outcomes: list[Outcome] = []
        self.waited = False
        self.ends: list[ListingEnd] = []

    def exporter(self, kind: str) -> Exporter:
        return self.exporter_

    def next_item(self, now: datetime) -> ExportItem | Wait | None:
        if not self.waited:
            self.waited = True
            return Wait.WAIT  # nothing may start yet: the coordinator asks again later
        while True:
            item = self.listing.next()
            if item is None:
                if self.listing.end is not None and self.listing.end not in self.ends:
                    self.ends.append(self.listing.end)
                return None
            if item.dest_key in self.descope:
                self.descoped.append(Descoped(item, "cannot finish before the cutoff"))
                continue
            return item

    def take_descoped(self) -> Sequence[Descoped]:
        found, self.descoped = self.descoped, []
        return found

    def settled(self, outcome: Outcome) -> None:
        self.outcomes.append(outcome)

    def take_listing_ends(self) -> Sequence[ListingEnd]:
        found, self.ends = self.ends, []
        return found


class RecordingJournal(Journal):
    """The real journal, noting which thread made each write."""

    def __init__(self, path: Path) -> None:
        self.writers: set[str] = set()
        super().__init__(path)

    def _write(self, sql: str, params: tuple[Any, ...], *, durable: bool = False) -> None:
        self.writers.add(threading.current_thread().name)
        super()._write(sql, params, durable=durable)


def test_only_the_coordinator_writes_the_journal(tmp_path):
    harness = ExportHarness(tmp_path)
    harness.journal = RecordingJournal(tmp_path / "recorded.sqlite")
    harness.run_id = harness.journal.start_run("export", None, {})
    harness.progress.journal = harness.journal
    names = [f"doc-{i:02d}" for i in range(40)]
    engine = harness.engine(concurrency=8)
    engine.journal = harness.journal
    engine.run_id = harness.run_id
    try:
        engine.export(Documents(names))
    finally:
        engine.close()
    assert harness.journal.item_counts(harness.run_id)["verified"] == 40
    assert harness.journal.writers == {threading.current_thread().name}


def test_descoped_items_are_journaled_with_their_reason_and_every_end_is_told(tmp_path):
    harness = ExportHarness(tmp_path)
    exporter = Documents(["a", "b", "c", "d"])
    source = Planned(exporter, descope={"docs/b", "docs/d"})
    engine = harness.engine()
    try:
        result = engine.run(source)
    finally:
        engine.close()
    assert result.kinds == ["docs"] and not result.listing_failures
    counts = harness.journal.item_counts(harness.run_id)
    assert counts["verified"] == 2 and counts["descoped"] == 2
    descoped = [e for e in harness.seen if e.status == "descoped"]
    assert {e.key for e in descoped} == {"docs/b", "docs/d"}
    assert all(e.error == "cannot finish before the cutoff" for e in descoped)
    assert ("docs/b", "descoped") in exporter.settled
    assert not (tmp_path / "vault" / "docs" / "b").exists()
    # The source hears how every started item ended, with what it cost.
    assert {(o.item.dest_key, o.status) for o in source.outcomes} == {
        ("docs/a", "verified"),
        ("docs/c", "verified"),
    }
    for outcome in source.outcomes:
        assert outcome.bytes_read == len(body(outcome.item.dest_key.split("/")[1]))
        assert outcome.seconds > 0 and outcome.requests >= 1


def test_a_descoped_item_already_saved_stays_saved(tmp_path):
    harness = ExportHarness(tmp_path)
    harness.export(Documents(["a", "b"]))
    harness.seen.clear()
    engine = harness.engine()
    try:
        engine.run(Planned(Documents(["a", "b"]), descope={"docs/b"}))
    finally:
        engine.close()
    assert harness.statuses() == {"skipped": 2}
    assert harness.journal.item_counts()["verified"] == 2


def test_a_kind_whose_listing_fails_is_reported_and_the_others_go_on(tmp_path):
    harness = ExportHarness(tmp_path)
    broken = Documents(["x1", "x2", "x3"], kind="broken", fail_after=2)
    fine = Documents(["y1", "y2"], kind="fine")
    engine = harness.engine()
    try:
        result = engine.run(KindByKind([broken, fine]))
    finally:
        engine.close()
    assert set(result.listing_failures) == {"broken"}
    assert "the API said no" in str(result.listing_failures["broken"])
    # What it listed before failing is copied; the next kind is copied whole.
    assert harness.statuses() == {"verified": 4}
    assert (tmp_path / "vault" / "fine" / "y2").read_bytes() == body("y2")


class Flaky(Documents):
    """Opening the first item fails twice with an error only the provider knows."""

    def __init__(self, names: Sequence[str]) -> None:
        super().__init__(names)
        self.failures = 2

    def open(self, item: ExportItem) -> SourceStream:
        if item.dest_key == "docs/a" and self.failures:
            self.failures -= 1
            self.opens[item.dest_key] = self.opens.get(item.dest_key, 0) + 1
            raise ProviderHiccup("the provider hiccupped")
        return super().open(item)


class ProviderHiccup(Exception):
    """An error type the engine does not know; only the provider's rule does."""


@pytest.mark.parametrize(("rule", "expected"), [(None, "failed"), ("provider", "verified")])
def test_the_retry_rule_is_the_source_providers(tmp_path, rule, expected):
    harness = ExportHarness(tmp_path)
    engine = harness.engine()
    if rule == "provider":
        engine = type(engine)(
            destinations=harness.destinations,
            journal=harness.journal,
            run_id=harness.run_id,
            events=harness.events,
            progress=harness.progress,
            settings=engine.settings,
            retry_rule=lambda exc: isinstance(exc, ProviderHiccup),
        )
    exporter = Flaky(["a", "b"])
    try:
        engine.export(exporter)
    finally:
        engine.close()
    statuses = {e.key: e.status for e in harness.seen}
    assert statuses == {"docs/a": expected, "docs/b": "verified"}
    assert exporter.opens["docs/a"] == (1 if expected == "failed" else 3)


def test_shards_split_every_listing_the_same_way_with_dependents_beside_their_item():
    items = [
        ExportItem(kind="k", idem_key=f"k:{i}", dest_key=f"k/{i}.data", size=1) for i in range(200)
    ]
    metas = [
        ExportItem(
            kind="k", idem_key=f"k:{i}:m", dest_key=f"k/{i}.meta", size=1, depends_on=f"k/{i}.data"
        )
        for i in range(200)
    ]
    shards = [Shard(k, 3) for k in (1, 2, 3)]
    for data, meta in zip(items, metas, strict=True):
        holders = [s for s in shards if s.holds(data)]
        assert len(holders) == 1 and holders[0].holds(meta)
    sizes = [sum(s.holds(i) for i in items) for s in shards]
    assert sum(sizes) == 200 and min(sizes) > 40
    assert Shard.parse("2/3") == Shard(2, 3) and str(Shard(2, 3)) == "2/3"
    exporter = Documents([f"n{i}" for i in range(30)])
    names = {i.dest_key for i in ShardOf(exporter, Shard(1, 2)).list_items()}
    names |= {i.dest_key for i in ShardOf(exporter, Shard(2, 2)).list_items()}
    assert len(names) == 30
