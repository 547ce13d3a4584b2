"""Objects uploaded in parts of any sizes are checked byte for byte, never on their length.

The source is a moto server; objects are uploaded part by part as other
tools do (parts of different sizes, a last part larger than the first), with
and without S3 checksums. Each is exported through the one-stream path
(smaller than the export's part size) and the ranged path (larger).
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import boto3
import botocore.config
import pytest

from orchestrator.errors import ChecksumMismatch, FatalError
from orchestrator.export.exporters.base import ExportContext
from orchestrator.export.exporters.s3 import (
    PartDigests,
    S3Exporter,
    check_layout,
    composite_checksum,
    layout_from_attributes,
    multipart_etag,
)
from orchestrator.export.manifest import MANIFEST_KEY, publish_manifest
from orchestrator.plan.priorities import Prioritizer
from providers.aws import AwsAccount
from tests.support.engine import ExportHarness
from tests.support.faulty_proxy import FaultSchedule, faulty_proxy

REPO = Path(__file__).resolve().parents[2]
MiB = 1024 * 1024
BUCKET = "uneven-parts"
LAYOUTS = {
    "6+5+5": (6 * MiB, 5 * MiB, 5 * MiB),
    "5+5.5+0.5": (5 * MiB, 5 * MiB + MiB // 2, MiB // 2),
    "5+9+1": (5 * MiB, 9 * MiB, MiB),
    "5+6+6": (5 * MiB, 6 * MiB, 6 * MiB),
}
#: Read as one stream (larger than every object) or as ranged parts.
PATHS = {"stream": 64 * MiB, "ranged": 4 * MiB}


def client(endpoint: str, checksums: bool = False) -> object:
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=botocore.config.Config(
            s3={"addressing_style": "path"},
            request_checksum_calculation="when_supported" if checksums else "when_required",
        ),
    )


def body_of(name: str, sizes: Sequence[int]) -> list[bytes]:
    parts = []
    for number, size in enumerate(sizes, 1):
        seed = hashlib.sha256(f"{name}/{number}".encode()).digest()
        parts.append((seed * (size // 32 + 1))[:size])
    return parts


def upload_in_parts(s3, key: str, parts: Sequence[bytes], algorithm: str | None = None) -> str:
    extra = {"ChecksumAlgorithm": algorithm} if algorithm else {}
    upload = s3.create_multipart_upload(Bucket=BUCKET, Key=key, **extra)
    done = []
    for number, data in enumerate(parts, 1):
        answer = s3.upload_part(
            Bucket=BUCKET,
            Key=key,
            UploadId=upload["UploadId"],
            PartNumber=number,
            Body=data,
            **extra,
        )
        part = {"ETag": answer["ETag"], "PartNumber": number}
        if algorithm:
            part[f"Checksum{algorithm}"] = answer[f"Checksum{algorithm}"]
        done.append(part)
    s3.complete_multipart_upload(
        Bucket=BUCKET, Key=key, UploadId=upload["UploadId"], MultipartUpload={"Parts": done}
    )
    return str(s3.head_object(Bucket=BUCKET, Key=key)["ETag"]).strip('"')


@pytest.fixture(scope="module")
def objects(moto_endpoint: str) -> dict[str, tuple[bytes, str]]:
    """key -> (body, ETag) of every object in the bucket."""
    s3 = client(moto_endpoint)
    s3.create_bucket(Bucket=BUCKET)
    seeded = {}
    for name, sizes in LAYOUTS.items():
        parts = body_of(name, sizes)
        seeded[f"plain/{name}.bin"] = (
            b"".join(parts),
            upload_in_parts(s3, f"plain/{name}.bin", parts),
        )
    for name in ("6+5+5", "5+9+1"):
        parts = body_of(f"crc-{name}", LAYOUTS[name])
        key = f"crc32/{name}.bin"
        seeded[key] = (b"".join(parts), upload_in_parts(s3, key, parts, "CRC32"))
    sealed = b"encrypted at rest with a KMS key, no checksum"
    s3.put_object(Bucket=BUCKET, Key="kms/sealed.bin", Body=sealed, ServerSideEncryption="aws:kms")
    seeded["kms/sealed.bin"] = (sealed, "")
    return seeded


def export(endpoint: str, tmp_path, part_size: int, **harness_options) -> ExportHarness:
    harness = ExportHarness(tmp_path)
    account = AwsAccount(regions=["us-east-1"], endpoint_url=endpoint)
    context = ExportContext(run_id="r", part_size=part_size)
    harness.export(S3Exporter(account, tier_of=Prioritizer([]), context=context), **harness_options)
    return harness


def rows(harness: ExportHarness) -> dict[str, dict]:
    store = harness.destinations[0].store
    publish_manifest(harness.journal, "vault", store)
    lines = b"".join(store.get(MANIFEST_KEY)).decode().splitlines()
    return {json.loads(line)["key"]: json.loads(line) for line in lines}


@pytest.mark.parametrize("path", PATHS)
def test_uneven_parts_are_verified_part_by_part(moto_endpoint, objects, tmp_path, path):
    harness = export(moto_endpoint, tmp_path, PATHS[path])
    manifest = rows(harness)
    for key, (data, etag) in objects.items():
        dest_key = f"s3/{BUCKET}/{key}"
        assert (tmp_path / "vault" / dest_key).read_bytes() == data, key
        row = manifest[dest_key]
        if key.startswith("plain/"):
            # Checked against the multipart ETag recomputed at the source's own parts.
            assert row["verified"] and row["source_checksum"] == f"etag:{etag}", row
        elif key.startswith("crc32/"):
            # S3's COMPOSITE CRC32 (moto gives it without the -3 S3 adds).
            assert row["verified"] and row["source_checksum"].startswith("crc32:"), row
            assert row["source_checksum"].endswith("-3"), row
    assert harness.statuses() == {"verified": len(objects) - 1, "unchecked": 1}


def test_an_object_that_cannot_be_checked_is_stored_unchecked_never_verified(
    moto_endpoint, objects, tmp_path
):
    harness = export(moto_endpoint, tmp_path, PATHS["stream"])
    row = rows(harness)[f"s3/{BUCKET}/kms/sealed.bin"]
    assert row["verified"] is False
    assert row["source_checksum"].startswith("unchecked: encrypted")
    assert harness.journal.item_counts()["unchecked"] == 1
    [(_, key, why)] = harness.journal.unchecked_items(harness.run_id)
    assert key == f"s3/{BUCKET}/kms/sealed.bin" and "not an md5" in why
    # Copying it again would not check it either: a second run leaves it be.
    harness.seen.clear()
    harness.export(
        S3Exporter(
            AwsAccount(regions=["us-east-1"], endpoint_url=moto_endpoint),
            tier_of=Prioritizer([]),
            context=ExportContext(run_id="r"),
        )
    )
    assert harness.statuses() == {"skipped": len(objects)}


@pytest.mark.parametrize("path", PATHS)
def test_a_byte_flipped_in_transit_is_never_published(moto_endpoint, objects, tmp_path, path):
    """Every GET has one byte flipped: no attempt can pass, so nothing is published."""
    schedule = FaultSchedule(rate=1.0, faults=("flip",))
    with faulty_proxy(moto_endpoint, schedule) as proxy:
        harness = export(proxy, tmp_path, PATHS[path])
    assert schedule.injected["flip"] > 0
    counts = harness.journal.item_counts()
    # The one object S3 holds no checksum for is stored unchecked; every
    # other one, each checked, is refused every time.
    assert counts["verified"] == 0 and counts["unchecked"] == 1
    assert counts["failed"] == len(objects) - 1
    for key in objects:
        if not key.startswith("kms/"):
            assert not (tmp_path / "vault" / "s3" / BUCKET / key).exists(), key


def test_flips_at_half_the_gets_end_byte_identical(moto_endpoint, objects, tmp_path):
    schedule = FaultSchedule(rate=0.5, seed=3, faults=("flip",))
    with faulty_proxy(moto_endpoint, schedule) as proxy:
        harness = export(proxy, tmp_path, PATHS["ranged"])
    assert schedule.injected["flip"] > 0
    for key, (data, _) in objects.items():
        path = tmp_path / "vault" / "s3" / BUCKET / key
        stored = harness.journal.is_stored("vault", f"s3/{BUCKET}/{key}", _idem(harness, key))
        if key.startswith("kms/"):
            continue  # no checksum: a flip there cannot be seen, which is why it is unchecked
        assert not stored or path.read_bytes() == data, key


def _idem(harness: ExportHarness, key: str) -> str:
    import sqlite3

    with sqlite3.connect(harness.journal.path) as db:
        harness.journal.flush()
        row = db.execute(
            "SELECT idem_key FROM items WHERE dest_key=?", (f"s3/{BUCKET}/{key}",)
        ).fetchone()
    return str(row[0])


# -- no loop without progress ---------------------------------------------------


def test_part_sizes_that_do_not_describe_the_object_are_a_source_error():
    with pytest.raises(FatalError, match="part 2 has 0 bytes"):
        check_layout("s3://b/k", [5, 0, 5], 10, 3)
    with pytest.raises(FatalError, match="more than the object"):
        check_layout("s3://b/k", [50, 5], 10, 2)
    with pytest.raises(FatalError, match="add up to 9 bytes"):
        check_layout("s3://b/k", [5, 4], 10, 2)
    with pytest.raises(FatalError, match="lists 2 parts, the ETag says 3"):
        check_layout("s3://b/k", [5, 5], 10, 3)
    assert check_layout("s3://b/k", [6, 4], 10, 2) == (6, 4)


def test_part_digests_consume_every_chunk_or_refuse_it():
    digests = PartDigests("s3://b/k", [3, 2], ["md5", "crc32"])
    digests.update(b"abcd")
    digests.update(b"e")
    with pytest.raises(ChecksumMismatch, match="more bytes than its 2 parts"):
        digests.update(b"f")
    got = digests.finish()
    assert got["md5"] == [hashlib.md5(b"abc").digest(), hashlib.md5(b"de").digest()]
    assert multipart_etag(got["md5"]).endswith("-2")
    assert composite_checksum("crc32", got["crc32"])


def test_per_part_checksums_from_get_object_attributes_are_used():
    """GetObjectAttributes pages (as AWS documents them) give sizes and per-part checksums."""
    pages = [
        {
            "ObjectParts": {
                "TotalPartsCount": 2,
                "IsTruncated": False,
                "Parts": [
                    {"PartNumber": 2, "Size": 4, "ChecksumCRC32": "BBBBBB=="},
                    {"PartNumber": 1, "Size": 6, "ChecksumCRC32": "AAAAAA=="},
                ],
            }
        }
    ]
    layout = layout_from_attributes("s3://b/k", pages, 10, 2)
    assert layout is not None and layout.sizes == (6, 4)
    assert layout.checksums == {"crc32": ("AAAAAA==", "BBBBBB==")}
    assert (
        layout_from_attributes("s3://b/k", [{"ObjectParts": {"TotalPartsCount": 2}}], 10, 2) is None
    )


def test_a_source_that_says_its_parts_have_no_bytes_fails_that_object_at_once(
    moto_endpoint, objects, tmp_path
):
    """Every HEAD of a part answered with Content-Length: 0 (a broken source): each
    multipart object fails as a source error, promptly, instead of looping forever.

    The export runs in a process of its own, so a loop without progress ends
    in a timeout here rather than in a test run that never finishes.
    """
    schedule = FaultSchedule(rate=0.0, zero_part_sizes=True)
    env = {
        **{k: v for k, v in os.environ.items() if k != "AWS_PROFILE"},
        "PYTHONPATH": str(REPO),
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }
    with faulty_proxy(moto_endpoint, schedule) as proxy:
        try:
            subprocess.run(
                [
                    *(sys.executable, "-m", "tests.support.fault_campaign"),
                    *("--export-round", proxy, "--work", str(tmp_path), "--max-attempts", "2"),
                ],
                env=env,
                cwd=REPO,
                capture_output=True,
                timeout=120,
                check=True,
            )
        except subprocess.TimeoutExpired:
            pytest.fail("the export made no progress for 120 s (a loop on a 0-byte part)")
    with sqlite3.connect(tmp_path / "journal.sqlite") as db:
        states = {
            key: (state, error)
            for key, state, error in db.execute(
                "SELECT dest_key, state, COALESCE(error, '') FROM items"
            )
        }
    for key in objects:
        state, error = states[f"s3/{BUCKET}/{key}"]
        if key.startswith("plain/"):
            assert state == "failed" and "source error" in error and "0 bytes" in error, error


def test_the_report_and_the_summary_label_unchecked_objects(
    moto_endpoint, objects, tmp_path, monkeypatch, capsys
):
    from orchestrator.cli import main

    monkeypatch.chdir(tmp_path)
    config = tmp_path / "exitplan.yaml"
    config.write_text(
        f"""\
source:
  aws: {{regions: [us-east-1], endpoint_url: "{moto_endpoint}"}}
destinations:
  - name: vault
    storage: {{driver: local, path: ./vault}}
"""
    )
    assert main(["export", "--config", str(config), "--only", "s3", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert f"unchecked vault:s3/{BUCKET}/kms/sealed.bin: unchecked: encrypted" in out
    [report_path] = (tmp_path / ".exitplan" / "runs").glob("*/report.json")
    report = json.loads(report_path.read_text())
    assert report["totals"]["unchecked_items"] == 1
    assert next(k for k in report["kinds"] if k["kind"] == "s3")["unchecked_items"] == 1
    assert [u["key"] for u in report["unchecked"]] == [f"s3/{BUCKET}/kms/sealed.bin"]


def test_every_destination_s_copy_is_checked_on_its_own(moto_endpoint, objects, tmp_path):
    """Two destinations that write in place: each re-read copy is checked from its
    first byte, so both pass at the first attempt (no object is read twice)."""

    class Counting(S3Exporter):
        opened: list[str] = []

        def open_ranged(self, item):
            ranged = super().open_ranged(item)
            if ranged is not None:
                self.opened.append(item.dest_key)
            return ranged

    harness = ExportHarness(tmp_path, names=("vault", "mirror"))
    account = AwsAccount(regions=["us-east-1"], endpoint_url=moto_endpoint)
    exporter = Counting(
        account,
        tier_of=Prioritizer([]),
        context=ExportContext(run_id="r", part_size=PATHS["ranged"]),
    )
    harness.export(exporter)
    large = [key for key, (data, _) in objects.items() if len(data) > PATHS["ranged"]]
    assert sorted(exporter.opened) == sorted(f"s3/{BUCKET}/{key}" for key in large)
    for name in ("vault", "mirror"):
        for key, (data, _) in objects.items():
            assert (tmp_path / name / "s3" / BUCKET / key).read_bytes() == data, (name, key)
