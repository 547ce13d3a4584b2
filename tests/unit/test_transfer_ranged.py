"""Large objects: parallel ranged GETs written in place, verified, resumable by part."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.clock import SystemClock
from orchestrator.errors import Cancelled
from orchestrator.events import EventBus
from orchestrator.export.exporters.base import ExportContext, ExportItem, Part, RangedSource
from orchestrator.export.exporters.s3 import S3Exporter
from orchestrator.export.transfer import Destination, TransferEngine, TransferSettings
from orchestrator.plan.priorities import Prioritizer
from orchestrator.run.cancel import CancelReason, CancelToken
from orchestrator.run.journal import Journal
from orchestrator.run.progress import RunProgress
from providers.aws import AwsAccount
from providers.storage import STAGING_DIR, LocalObjectStore
from tests.support.aws import moto_account

BUCKET = "ranged-test"
PART = 256 * 1024


@pytest.fixture
def account(monkeypatch: pytest.MonkeyPatch) -> Iterator[AwsAccount]:
    with moto_account(monkeypatch, ["us-east-1"]) as account:
        yield account


def seed(account: AwsAccount) -> dict[str, bytes]:
    s3 = account.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    bodies = {}
    for index in range(4):
        # 1 MiB + a little: four full parts and a short last one.
        body = hashlib.sha256(f"large-{index}".encode()).digest() * (32768 + 100 + index)
        bodies[f"video/{index}.mp4"] = body
        s3.put_object(Bucket=BUCKET, Key=f"video/{index}.mp4", Body=body)
    return bodies


class CountingExporter(S3Exporter):
    """The real S3 exporter; counts ranged reads and can interfere with them."""

    def __init__(self, account: AwsAccount, part_size: int = PART, **hooks: object) -> None:
        super().__init__(
            account,
            tier_of=Prioritizer([]),
            context=ExportContext(run_id="r", part_size=part_size),
        )
        self.reads = 0
        self.hooks = hooks

    def open_ranged(self, item: ExportItem) -> RangedSource | None:
        inner = super().open_ranged(item)
        return None if inner is None else _Observed(inner, self)


class _Observed(RangedSource):
    def __init__(self, inner: RangedSource, owner: CountingExporter) -> None:
        self.inner = inner
        self.owner = owner
        self.size = inner.size
        self.wants_md5 = inner.wants_md5

    def observe(self, chunk: bytes) -> None:
        self.inner.observe(chunk)

    def parts(self) -> Iterator[Part]:
        return self.inner.parts()

    def read_part(self, part: Part) -> bytes:
        data = self.inner.read_part(part)
        self.owner.reads += 1
        after = self.owner.hooks.get("cancel_after")
        if isinstance(after, int) and self.owner.reads >= after:
            token = self.owner.hooks["token"]
            assert isinstance(token, CancelToken)
            token.cancel(CancelReason.INTERRUPTED)
        if self.owner.hooks.get("flip_once") and self.owner.reads == 3:
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        return data

    def verify(self, *, size: int, md5_hex: str, sha256_hex: str) -> str | None:
        return self.inner.verify(size=size, md5_hex=md5_hex, sha256_hex=sha256_hex)


def engine_for(tmp: Path, cancel: CancelToken | None = None) -> tuple[TransferEngine, Journal]:
    journal = Journal(tmp / "journal.sqlite")
    run_id = journal.start_run("migrate", None, {})
    events = EventBus()
    progress = RunProgress(
        run_id=run_id, journal=journal, events=events, clock=SystemClock(), deadline=None
    )
    engine = TransferEngine(
        destinations=[Destination("vault", LocalObjectStore("vault", tmp / "vault"))],
        journal=journal,
        run_id=run_id,
        events=events,
        progress=progress,
        settings=TransferSettings(concurrency=4, max_backoff_s=0.01),
        cancel=cancel,
    )
    return engine, journal


def idem_keys(journal: Journal) -> list[str]:
    with sqlite3.connect(journal.path) as db:
        return [row[0] for row in db.execute("SELECT DISTINCT idem_key FROM parts")]


def assert_copied(tmp: Path, bodies: dict[str, bytes]) -> None:
    for key, body in bodies.items():
        assert (tmp / "vault" / "s3" / BUCKET / key).read_bytes() == body, key
    assert not list((tmp / "vault" / "s3" / STAGING_DIR).iterdir())


def test_large_objects_are_fetched_in_parts_and_verified(account, tmp_path):
    bodies = seed(account)
    engine, journal = engine_for(tmp_path)
    exporter = CountingExporter(account)
    engine.export(exporter)
    engine.close()
    assert exporter.reads == 4 * 5  # five parts each
    assert_copied(tmp_path, bodies)
    assert journal.item_counts()["verified"] == 4


def test_an_interrupted_large_object_resumes_from_its_completed_parts(account, tmp_path):
    bodies = seed(account)
    token = CancelToken()
    engine, journal = engine_for(tmp_path, cancel=token)
    first = CountingExporter(account, cancel_after=7, token=token)
    with pytest.raises(Cancelled):
        engine.export(first)
    engine.close()
    assert 7 <= first.reads < 20
    # Parts cut off mid-write by the cancel are not journaled: they are read again.
    # Parts are smaller than a checkpoint here: a part is journaled once, whole.
    written_parts = sum(len(journal.part_progress("vault", key)) for key in idem_keys(journal))
    assert 0 < written_parts < 20
    journal.close()

    engine, journal = engine_for(tmp_path)
    second = CountingExporter(account)
    engine.export(second)
    engine.close()
    # Parts that were written before the interruption are not fetched again.
    assert second.reads == 20 - written_parts
    assert_copied(tmp_path, bodies)


def test_a_damaged_part_is_caught_before_publishing_and_fetched_again(account, tmp_path):
    bodies = seed(account)
    engine, journal = engine_for(tmp_path)
    exporter = CountingExporter(account, flip_once=True)
    engine.export(exporter)
    engine.close()
    assert exporter.reads > 20  # one object was started over after its md5 failed
    assert_copied(tmp_path, bodies)
    assert journal.item_counts() == {
        "in-flight": 0,
        "verified": 4,
        "unchecked": 0,
        "failed": 0,
        "damaged": 0,
        "descoped": 0,
    }


def test_an_image_with_holes_stays_sparse(tmp_path):
    store = LocalObjectStore("vault", tmp_path)
    size = 64 * 1024 * 1024
    writer = store.open_part_writer("ebs/vol.img", size, "token1")
    writer.write_at(4096, b"x" * 4096)
    writer.write_at(size - 4096, b"y" * 4096)
    stored = writer.commit()
    path = tmp_path / "ebs" / "vol.img"
    assert stored.size == path.stat().st_size == size
    assert path.stat().st_blocks * 512 < 1024 * 1024  # only the written blocks take space


def test_a_part_cut_off_mid_way_carries_on_from_its_last_checkpoint(account, tmp_path, monkeypatch):
    """Parts bigger than a checkpoint: a resume asks only for the rest of each part."""
    import orchestrator.export.transfer as transfer

    monkeypatch.setattr(transfer, "CHECKPOINT_BYTES", 1024 * 1024)
    big_part = 3 * 1024 * 1024  # three 1 MiB chunks a part, a checkpoint after each
    s3 = account.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    bodies = {
        f"films/{i}.mkv": hashlib.sha256(f"film-{i}".encode()).digest() * (300_000 + i)
        for i in range(2)
    }
    for key, data in bodies.items():
        s3.put_object(Bucket=BUCKET, Key=key, Body=data)
    token = CancelToken()
    engine, journal = engine_for(tmp_path, cancel=token)
    seen = {"bytes": 0}

    class Interrupting(CountingExporter):
        def open_ranged(self, item):
            inner = S3Exporter.open_ranged(self, item)
            if inner is None:
                return None

            class Cut(_Observed):
                def stream_part(self, part, start=0):
                    for chunk in inner.stream_part(part, start):
                        seen["bytes"] += len(chunk)
                        if seen["bytes"] > 4 * 1024 * 1024:
                            token.cancel(CancelReason.INTERRUPTED)
                        yield chunk

            return Cut(inner, self)

    with pytest.raises(Cancelled):
        engine.export(Interrupting(account, part_size=big_part))
    engine.close()
    progress = [journal.part_progress("vault", key) for key in idem_keys(journal)]
    partial = [b for p in progress for b in p.values() if 0 < b < big_part]
    assert partial, "no part was left half-written; the test proves nothing"
    written = sum(b for p in progress for b in p.values())
    journal.close()

    engine, journal = engine_for(tmp_path)
    fetched = {"bytes": 0}

    class Counting(CountingExporter):
        def open_ranged(self, item):
            inner = S3Exporter.open_ranged(self, item)
            if inner is None:
                return None

            class Count(_Observed):
                def stream_part(self, part, start=0):
                    for chunk in inner.stream_part(part, start):
                        fetched["bytes"] += len(chunk)
                        yield chunk

            return Count(inner, self)

    engine.export(Counting(account, part_size=big_part))
    engine.close()
    total = sum(len(b) for b in bodies.values())
    assert fetched["bytes"] == total - written
    assert_copied(tmp_path, bodies)
