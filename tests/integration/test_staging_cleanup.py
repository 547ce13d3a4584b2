"""Nothing staged is left behind: a killed run's staging is swept by the next one,
and a finished run leaves no staging file (resumable parts only while their item
is still in flight)."""

from __future__ import annotations

import fcntl
import hashlib
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.errors import ChecksumMismatch, FatalError
from orchestrator.export.exporters.base import ExportContext, ExportItem, Part, RangedSource
from orchestrator.export.exporters.s3 import S3Exporter
from orchestrator.plan.priorities import Prioritizer
from providers.aws import AwsAccount
from providers.storage import PARTS_SUFFIX, STAGING_DIR, LocalObjectStore
from tests.support.aws import moto_account
from tests.support.engine import ExportHarness

BUCKET = "staging-test"


def staging_files(vault: Path) -> list[str]:
    return sorted(p.name for p in vault.glob(f"*/{STAGING_DIR}/*") if p.is_file())


def test_a_killed_writers_staging_is_swept_when_the_next_run_opens_the_store(tmp_path):
    vault = tmp_path / "vault"
    LocalObjectStore("vault", vault).put_stream("s3/kept.bin", [b"published"])
    staging = vault / "s3" / STAGING_DIR
    # What a kill -9 mid-put leaves: a whole-object staging copy, seconds old.
    (staging / "0123456789abcdef0123456789abcdef").write_bytes(b"half an object")
    # A resumable part file of an item still in flight: its item resumes it.
    (staging / f"{'a' * 40}{PARTS_SUFFIX}").write_bytes(b"\0" * 64)
    # A put in progress in another process right now: never taken from under it.
    busy = staging / "fedcba9876543210fedcba9876543210"
    busy.write_bytes(b"being written")
    fd = os.open(busy, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_SH)
    try:
        store = LocalObjectStore("vault", vault)  # the resume, or the next run
        assert staging_files(vault) == sorted([busy.name, f"{'a' * 40}{PARTS_SUFFIX}"])
    finally:
        os.close(fd)
    assert store.stat("s3/kept.bin") is not None
    LocalObjectStore("vault", vault)
    assert staging_files(vault) == [f"{'a' * 40}{PARTS_SUFFIX}"]


@pytest.fixture
def account(monkeypatch: pytest.MonkeyPatch) -> Iterator[AwsAccount]:
    with moto_account(monkeypatch, ["us-east-1"]) as account:
        yield account


class _Wrapped(RangedSource):
    """The real ranged source, with one behaviour changed by a subclass."""

    def __init__(self, inner: RangedSource, item: ExportItem) -> None:
        self.inner = inner
        self.item = item
        self.size = inner.size
        self.wants_md5 = inner.wants_md5

    def parts(self) -> Iterator[Part]:
        return self.inner.parts()

    def read_part(self, part: Part) -> bytes:
        return self.inner.read_part(part)

    def stream_part(self, part: Part, start: int = 0) -> Iterator[bytes]:
        return self.inner.stream_part(part, start)

    def observe(self, chunk: bytes) -> None:
        self.inner.observe(chunk)

    def verify(self, *, size: int, md5_hex: str, sha256_hex: str) -> str | None:
        return self.inner.verify(size=size, md5_hex=md5_hex, sha256_hex=sha256_hex)


class _Damaged(_Wrapped):
    def verify(self, *, size: int, md5_hex: str, sha256_hex: str) -> str | None:
        raise ChecksumMismatch(f"{self.item.dest_key}: md5 does not match the ETag")


class _GoneAfterOnePart(_Wrapped):
    def stream_part(self, part: Part, start: int = 0) -> Iterator[bytes]:
        if part.index > 0:
            raise FatalError(f"{self.item.dest_key}: access denied to part {part.index}")
        return self.inner.stream_part(part, start)


class AlwaysDamaged(S3Exporter):
    """Large objects whose assembled bytes never match: every attempt fails its check."""

    def open_ranged(self, item: ExportItem) -> RangedSource | None:
        inner = super().open_ranged(item)
        return None if inner is None else _Damaged(inner, item)


class FailsMidway(S3Exporter):
    """Large objects whose source refuses them for good after the first part."""

    def open_ranged(self, item: ExportItem) -> RangedSource | None:
        inner = super().open_ranged(item)
        return None if inner is None else _GoneAfterOnePart(inner, item)


@pytest.mark.parametrize("exporter_cls", [AlwaysDamaged, FailsMidway])
def test_a_large_item_given_up_on_leaves_no_staged_parts(account, tmp_path, exporter_cls):
    s3 = account.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    data = hashlib.sha256(b"big").digest() * (3 * 1024 * 1024 // 32)
    s3.put_object(Bucket=BUCKET, Key="big.bin", Body=data)
    s3.put_object(Bucket=BUCKET, Key="small.bin", Body=b"small")
    harness = ExportHarness(tmp_path)
    context = ExportContext(run_id="r", part_size=1024 * 1024)
    harness.export(exporter_cls(account, tier_of=Prioritizer([]), context=context))
    assert harness.statuses() == {"verified": 1, "failed": 1}
    assert staging_files(tmp_path / "vault") == []
    [(_, key, _)] = harness.journal.failed_items(harness.run_id)
    assert key == f"s3/{BUCKET}/big.bin"
    with sqlite3.connect(harness.journal.path) as db:
        assert db.execute("SELECT COUNT(*) FROM parts").fetchone()[0] == 0
