"""A full destination is an error with its reason in plain words, never a verified object.

The destination is a real small file system (a tmpfs, as root) or, where
mounting is not allowed, a file-size limit on this process (see
tests/support/little_room.py). Nothing here is simulated: the OS refuses
the writes.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.export.exporters.base import ExportContext
from orchestrator.export.exporters.s3 import S3Exporter
from orchestrator.export.manifest import verify_destination
from orchestrator.export.transfer import Destination
from orchestrator.plan.priorities import Prioritizer
from providers.aws import AwsAccount
from providers.interfaces.object_store import StoredObject, StoreWriteError
from providers.storage import STAGING_DIR, LocalObjectStore
from tests.support.aws import moto_account
from tests.support.engine import ExportHarness
from tests.support.little_room import MiB, little_room

BUCKET = "full-disk"


def body(name: str, size: int) -> bytes:
    seed = hashlib.sha256(name.encode()).digest()
    return (seed * (size // len(seed) + 1))[:size]


def staged(vault: Path) -> list[Path]:
    return [p for p in vault.glob(f"*/{STAGING_DIR}/*") if p.is_file()]


def test_a_store_that_fills_up_raises_in_plain_words_and_publishes_nothing(tmp_path):
    with little_room(tmp_path / "vault", free=2 * MiB, in_process=True) as room:
        store = LocalObjectStore("vault", room.path)
        small = body("small", 300_000)
        stored = store.put_stream("s3/small.bin", [small])
        assert (stored.size, stored.sha256) == (len(small), hashlib.sha256(small).hexdigest())

        big = body("big", 3 * MiB)
        with pytest.raises(StoreWriteError) as raised:
            store.put_stream("s3/big.bin", (big[i : i + MiB] for i in range(0, len(big), MiB)))
        message = str(raised.value)
        assert message.startswith(f"destination vault: {room.message}")
        assert "free space" in message or "raise the limit" in message
        assert "run `exitplan resume`" in message
        if room.kind == "tmpfs":
            assert f"tmpfs at {room.path}" in message
        assert store.stat("s3/big.bin") is None
        assert staged(room.path) == []

        writer = (
            store.open_part_writer("ebs/vol.img", 3 * MiB, "token1")
            if room.kind == "tmpfs"
            else None
        )
        if writer is not None:  # sparse: only the written bytes need room
            with pytest.raises(StoreWriteError, match=room.message):
                for offset in range(0, 3 * MiB, MiB):
                    writer.write_at(offset, big[offset : offset + MiB])
            writer.abort()
        assert staged(room.path) == []

        room.make_room()
        stored = store.put_stream("s3/big.bin", [big])
        assert stored.size == len(big) and (room.path / "s3" / "big.bin").read_bytes() == big


@pytest.fixture
def account(monkeypatch: pytest.MonkeyPatch) -> Iterator[AwsAccount]:
    with moto_account(monkeypatch, ["us-east-1"]) as account:
        yield account


def test_an_export_to_a_full_disk_fails_those_items_and_the_next_run_copies_them(account, tmp_path):
    s3 = account.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    bodies = {f"photos/{i:02d}.jpg": body(f"p{i}", 200_000 + i * 1000) for i in range(24)}
    bodies.update({f"video/{i}.mp4": body(f"v{i}", 3 * MiB + i) for i in range(2)})
    for key, data in bodies.items():
        s3.put_object(Bucket=BUCKET, Key=key, Body=data)
    context = ExportContext(run_id="r", part_size=MiB)  # the videos go in ranged parts

    with little_room(tmp_path / "vault", free=3 * MiB, in_process=True) as room:
        harness = ExportHarness(tmp_path)  # its "vault" is the room
        harness.export(S3Exporter(account, tier_of=Prioritizer([]), context=context))
        counts = harness.journal.item_counts()
        assert counts["failed"] > 0 and counts["in-flight"] == 0
        assert counts["verified"] + counts["failed"] == len(bodies)
        failures = [e for e in harness.seen if e.status == "failed"]
        assert all(e.error.startswith(f"destination vault: {room.message}") for e in failures)
        # Whatever the journal calls verified is there, whole; nothing half-written is left.
        store = harness.destinations[0].store
        assert verify_destination(harness.journal, "vault", store).ok
        assert staged(room.path) == []

        room.make_room()
        harness.seen.clear()
        harness.export(S3Exporter(account, tier_of=Prioritizer([]), context=context))
        assert harness.statuses() == {"skipped": counts["verified"], "verified": counts["failed"]}
        for key, data in bodies.items():
            assert (room.path / "s3" / BUCKET / key).read_bytes() == data, key
        assert staged(room.path) == []


def test_exported_files_are_0640_under_the_umask(tmp_path):
    store = LocalObjectStore("vault", tmp_path / "vault")
    previous = os.umask(0o022)
    try:
        store.put_stream("s3/a.bin", [b"a"])
        writer = store.open_part_writer("ebs/b.img", 4, "token2")
        writer.write_at(0, b"abcd")
        writer.commit()
        os.umask(0o077)
        store.put_stream("s3/c.bin", [b"c"])
    finally:
        os.umask(previous)
    mode = lambda key: (tmp_path / "vault" / key).stat().st_mode & 0o777  # noqa: E731
    assert mode("s3/a.bin") == 0o640
    assert mode("ebs/b.img") == 0o640
    assert mode("s3/c.bin") == 0o600


class LibcloudUploadStore(LocalObjectStore):
    """A store that writes through libcloud's LOCAL ``upload_object_via_stream`` without
    locking, as exitplan once did: on a full disk the driver swallows the write error
    and abandons the stream, and the stream's generator is closed (GeneratorExit)."""

    def put_stream(self, key, chunks):
        group, rest = self._split(key)
        container = self._container(group, create=True)
        seen = {"error": None, "size": 0, "finished": False}

        def measured():
            try:
                for chunk in chunks:
                    seen["size"] += len(chunk)
                    yield chunk
            except BaseException as exc:
                seen["error"] = exc
                raise
            seen["finished"] = True

        staging = f"{STAGING_DIR}/{os.urandom(8).hex()}"
        self._driver.upload_object_via_stream(measured(), container, staging)
        if seen["error"] is not None:
            raise seen["error"]  # the GeneratorExit, escaping as it did
        final = self.base_path / group / rest
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self.base_path / group / staging, final)
        return StoredObject(key=key, size=seen["size"])


def test_a_store_that_lets_generator_exit_escape_fails_the_item_not_the_run(account, tmp_path):
    s3 = account.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    big = body("big", 6 * MiB)
    s3.put_object(Bucket=BUCKET, Key="big.bin", Body=big)
    s3.put_object(Bucket=BUCKET, Key="small.bin", Body=b"small")
    with little_room(tmp_path / "vault", free=2 * MiB, in_process=True) as room:
        harness = ExportHarness(tmp_path)
        harness.destinations = [Destination("vault", LibcloudUploadStore("vault", room.path))]
        harness.export(S3Exporter(account, tier_of=Prioritizer([]), context=ExportContext()))
        events = {e.key: e for e in harness.seen}
        failed = events[f"s3/{BUCKET}/big.bin"]
        assert failed.status == "failed"
        assert "the store stopped reading the stream" in failed.error
        assert "run `exitplan resume`" in failed.error
        assert events[f"s3/{BUCKET}/small.bin"].status == "verified"
