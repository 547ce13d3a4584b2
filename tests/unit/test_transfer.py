"""The copy engine against moto in-process and libcloud's LOCAL driver."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator

import pytest
from moto import mock_aws

from orchestrator.clock import SystemClock
from orchestrator.errors import Cancelled, ChecksumMismatch
from orchestrator.events import ItemFinished
from orchestrator.export.exporters.base import Exporter, ExportItem, SourceStream
from orchestrator.export.exporters.s3 import S3Exporter, destination_key
from orchestrator.export.manifest import MANIFEST_KEY, publish_manifest, verify_destination
from orchestrator.export.transfer import TransferEngine, TransferSettings
from orchestrator.plan.priorities import Prioritizer
from orchestrator.run.cancel import CancelReason
from providers.aws import AwsAccount
from providers.storage import STAGING_DIR
from tests.support.engine import ExportHarness

BUCKET = "transfer-test"


@pytest.fixture
def account(fake_aws_credentials: None) -> Iterator[AwsAccount]:
    with mock_aws():
        yield AwsAccount(regions=["us-east-1"])


def seed(account: AwsAccount, count: int = 120) -> dict[str, bytes]:
    s3 = account.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    bodies = {}
    for index in range(count):
        key = f"media/{index % 7}/object-{index}.bin"
        body = hashlib.sha256(str(index).encode()).digest() * (index * 13 + 1)
        s3.put_object(Bucket=BUCKET, Key=key, Body=body)
        bodies[key] = body
    return bodies


def test_copies_every_object_byte_identical_to_every_destination(account, tmp_path):
    bodies = seed(account)
    harness = ExportHarness(tmp_path, names=("vault", "mirror"))
    engine = harness.engine()
    engine.export(S3Exporter(account, tier_of=Prioritizer([])))
    engine.close()
    for name in ("vault", "mirror"):
        for key, body in bodies.items():
            assert (tmp_path / name / "s3" / BUCKET / key).read_bytes() == body
        assert not list((tmp_path / name / "s3").glob(f"{STAGING_DIR}/*"))
    assert harness.journal.item_counts()["verified"] == 2 * len(bodies)


def test_a_second_export_skips_verified_objects(account, tmp_path):
    bodies = seed(account)
    harness = ExportHarness(tmp_path)
    harness.engine().export(S3Exporter(account, tier_of=Prioritizer([])))
    harness.seen.clear()
    harness.engine().export(S3Exporter(account, tier_of=Prioritizer([])))
    assert harness.statuses() == {"skipped": len(bodies)}


def test_a_changed_object_is_copied_again_and_the_manifest_lists_only_the_new_one(
    account, tmp_path
):
    bodies = seed(account, count=5)
    harness = ExportHarness(tmp_path)
    harness.engine().export(S3Exporter(account, tier_of=Prioritizer([])))
    key = next(iter(bodies))
    account.client("s3").put_object(Bucket=BUCKET, Key=key, Body=b"new contents")
    harness.seen.clear()
    harness.engine().export(S3Exporter(account, tier_of=Prioritizer([])))
    assert harness.statuses() == {"skipped": 4, "verified": 1}
    assert (tmp_path / "vault" / "s3" / BUCKET / key).read_bytes() == b"new contents"
    store = harness.destinations[0].store
    publish_manifest(harness.journal, "vault", store)
    rows = b"".join(store.get(MANIFEST_KEY)).decode().splitlines()
    assert len(rows) == 5
    assert verify_destination(harness.journal, "vault", store).ok


class _DamagedExporter(Exporter):
    """Serves bytes whose checksum does not match what it promised: a flipped byte."""

    kind = "damaged"

    def list_items(self) -> Iterator[ExportItem]:
        yield ExportItem(kind="damaged", idem_key="damaged:1", dest_key="damaged/one.bin", size=4)

    def open(self, item: ExportItem) -> SourceStream:
        return _DamagedStream()


class _DamagedStream(SourceStream):
    def __iter__(self) -> Iterator[bytes]:
        yield b"abcd"

    def verify(self, *, size: int, md5_hex: str, sha256_hex: str) -> str | None:
        raise ChecksumMismatch("md5 does not match the ETag")


def test_a_damaged_body_is_never_published_and_the_item_is_failed(account, tmp_path):
    harness = ExportHarness(tmp_path)
    harness.engine().export(_DamagedExporter(account, tier_of=Prioritizer([])))
    assert not (tmp_path / "vault" / "damaged" / "one.bin").exists()
    assert not list((tmp_path / "vault" / "damaged" / STAGING_DIR).iterdir())
    assert harness.journal.item_counts()["failed"] == 1
    [event] = harness.seen
    assert event.status == "failed" and "ETag" in event.error


def test_cancel_stops_the_export_and_resume_finishes_it(account, tmp_path):
    bodies = seed(account)
    harness = ExportHarness(tmp_path)

    def stop_after_ten(event: object) -> None:
        if isinstance(event, ItemFinished) and len(harness.seen) >= 10:
            harness.cancel.cancel(CancelReason.INTERRUPTED)

    harness.events.subscribe(stop_after_ten)
    with pytest.raises(Cancelled):
        harness.engine(concurrency=2).export(S3Exporter(account, tier_of=Prioritizer([])))
    verified_at_cancel = harness.journal.item_counts()["verified"]
    assert 10 <= verified_at_cancel < len(bodies)
    # Every item the journal calls verified really is there, whole.
    assert verify_destination(harness.journal, "vault", harness.destinations[0].store).ok

    resumed = ExportHarness(tmp_path)
    resumed.engine().export(S3Exporter(account, tier_of=Prioritizer([])))
    assert resumed.statuses() == {
        "skipped": verified_at_cancel,
        "verified": len(bodies) - verified_at_cancel,
    }


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("a/b.txt", "s3/bkt/a/b.txt"),
        ("a//b", "s3/bkt/a/%/b"),
        ("../etc/passwd", "s3/bkt/%2E%2E/etc/passwd"),
        ("100%/x", "s3/bkt/100%25/x"),
        ("dir/", "s3/bkt/dir/%"),
        (".exitplan-partial/x", "s3/bkt/%2Eexitplan-partial/x"),
    ],
)
def test_s3_keys_map_to_safe_destination_keys(key, expected):
    assert destination_key("bkt", key, None, is_latest=True) == expected


def test_noncurrent_versions_keep_their_version_id():
    assert destination_key("bkt", "a/b", "v1", is_latest=False) == "s3-versions/bkt/a/b@v1"


def test_bwlimit_is_respected_roughly(account, tmp_path):
    """Not a timing test of speed, only that the cap holds the reader back."""
    s3 = account.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    s3.put_object(Bucket=BUCKET, Key="big.bin", Body=os.urandom(3 * 1024 * 1024))
    harness = ExportHarness(tmp_path)
    engine = TransferEngine(
        destinations=harness.destinations,
        journal=harness.journal,
        run_id=harness.run_id,
        events=harness.events,
        progress=harness.progress,
        settings=TransferSettings(concurrency=2, bwlimit=1024 * 1024),
        cancel=harness.cancel,
    )
    clock = SystemClock()
    started = clock.monotonic()
    engine.export(S3Exporter(account, tier_of=Prioritizer([])))
    # 3 MiB at 1 MiB/s with a 1 MiB initial allowance takes at least ~2 s.
    assert clock.monotonic() - started >= 1.5


def test_multipart_objects_are_checked_against_their_etag(account, tmp_path):
    """A multipart ETag is recomputed from the bytes (part md5s), not trusted blindly."""
    s3 = account.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    upload = s3.create_multipart_upload(Bucket=BUCKET, Key="big.bin")
    body = b""
    parts = []
    for number, size in ((1, 5 * 1024 * 1024), (2, 5 * 1024 * 1024), (3, 4321)):
        data = hashlib.sha256(str(number).encode()).digest() * (size // 32) + b"x" * (size % 32)
        etag = s3.upload_part(
            Bucket=BUCKET, Key="big.bin", UploadId=upload["UploadId"], PartNumber=number, Body=data
        )["ETag"]
        parts.append({"ETag": etag, "PartNumber": number})
        body += data
    s3.complete_multipart_upload(
        Bucket=BUCKET, Key="big.bin", UploadId=upload["UploadId"], MultipartUpload={"Parts": parts}
    )
    harness = ExportHarness(tmp_path)
    harness.engine().export(S3Exporter(account, tier_of=Prioritizer([])))
    assert (tmp_path / "vault" / "s3" / BUCKET / "big.bin").read_bytes() == body
    [row] = list(harness.journal.verified_items("vault"))
    etag = s3.head_object(Bucket=BUCKET, Key="big.bin")["ETag"].strip('"')
    assert etag.endswith("-3")
    assert row.source_checksum == f"etag:{etag}"


def test_a_flipped_byte_in_a_multipart_object_is_caught():
    from orchestrator.export.exporters.s3 import PartDigests, multipart_etag

    parts = [b"a" * 100, b"b" * 100, b"c" * 10]
    etag = hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts)).hexdigest() + "-3"
    good = PartDigests("x", [100, 100, 10], ["md5"])
    for chunk in (b"".join(parts)[i : i + 7] for i in range(0, 210, 7)):
        good.update(chunk)
    assert multipart_etag(good.finish()["md5"]) == etag
    bad = PartDigests("x", [100, 100, 10], ["md5"])
    bad.update(b"a" * 100 + b"B" + b"b" * 99 + b"c" * 10)
    assert multipart_etag(bad.finish()["md5"]) != etag
