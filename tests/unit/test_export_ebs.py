"""EBS volumes export as raw images read through the EBS direct APIs, block by block.

Everything runs in the sandbox's moto (one ``mock_aws`` for the module): the
microblog account in us-east-1, plus volumes and snapshots this module makes
in eu-west-1 and ap-southeast-2, where the sandbox has nothing. Every
sandbox volume has a nightly snapshot made through the direct APIs; a volume
with none is snapshotted by the exporter (ap-southeast-2 here).
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from botocore.response import StreamingBody

import orchestrator.sandbox.account as sb
from orchestrator.errors import ChecksumMismatch, FatalError
from orchestrator.export.exporters.base import ExportItem, RangedSource, load_exporter
from orchestrator.export.exporters.ebs import GIB, EbsExporter
from orchestrator.export.transfer import Destination
from orchestrator.plan.priorities import Prioritizer
from orchestrator.sandbox.account import Sandbox
from providers.aws import AwsAccount
from providers.storage import LocalObjectStore
from tests.support.engine import ExportHarness as Harness

EXTRA_REGION = "eu-west-1"
#: Blocks of the eu-west-1 direct snapshot: enough for several small pages.
EXTRA_BLOCKS = (0, 1, 2, 7, 8, 100, 101, 102, 500, 501, 1000, 2047)


def block_bytes(index: int) -> bytes:
    return hashlib.sha256(f"extra-{index}".encode()).digest() * 16  # 512 bytes


def image_sha256(size: int, blocks: dict[int, bytes], block_size: int) -> str:
    """The sha256 of a raw image, computed from the blocks alone (holes are zeros)."""
    digest = hashlib.sha256()
    zeros = bytes(1024 * 1024)
    position = 0

    def fill(upto: int) -> None:
        nonlocal position
        while position < upto:
            n = min(len(zeros), upto - position)
            digest.update(zeros[:n] if n < len(zeros) else zeros)
            position += n

    for index in sorted(blocks):
        fill(index * block_size)
        digest.update(blocks[index])
        position += len(blocks[index])
    fill(size)
    return digest.hexdigest()


@dataclass(frozen=True)
class Extra:
    """What this module put in eu-west-1."""

    direct_volume: str
    direct_snapshot: str
    plain_volume: str
    plain_snapshot: str


@pytest.fixture(scope="module")
def extra(sandbox: Sandbox) -> Extra:
    account = AwsAccount(regions=[EXTRA_REGION])
    ec2 = account.client("ec2", EXTRA_REGION)
    ebs = account.client("ebs", EXTRA_REGION)
    direct_volume = ec2.create_volume(AvailabilityZone=f"{EXTRA_REGION}a", Size=1)["VolumeId"]
    snapshot = ebs.start_snapshot(VolumeSize=1, Tags=[{"Key": "volume-id", "Value": direct_volume}])
    for index in EXTRA_BLOCKS:
        data = block_bytes(index)
        ebs.put_snapshot_block(
            SnapshotId=snapshot["SnapshotId"],
            BlockIndex=index,
            BlockData=data,
            DataLength=len(data),
            Checksum=base64.b64encode(hashlib.sha256(data).digest()).decode(),
            ChecksumAlgorithm="SHA256",
        )
    ebs.complete_snapshot(SnapshotId=snapshot["SnapshotId"], ChangedBlocksCount=len(EXTRA_BLOCKS))
    # moto hangs a direct snapshot on a scratch volume of its own; AWS does not.
    (described,) = ec2.describe_snapshots(SnapshotIds=[snapshot["SnapshotId"]])["Snapshots"]
    ec2.delete_volume(VolumeId=described["VolumeId"])
    # A snapshot moto's direct APIs cannot read (made with ec2:CreateSnapshot).
    plain_volume = ec2.create_volume(AvailabilityZone=f"{EXTRA_REGION}a", Size=2)["VolumeId"]
    plain_snapshot = ec2.create_snapshot(VolumeId=plain_volume)["SnapshotId"]
    return Extra(direct_volume, snapshot["SnapshotId"], plain_volume, plain_snapshot)


class PagingEbs:
    """The real (moto) EBS client, with AWS's paging and an optional damaged block.

    moto 5 ignores MaxResults, NextToken and StartingBlockIndex and lists
    blocks in the order they were put; AWS pages and lists in block order.
    This wrapper pages moto's real answer the way AWS does and records each
    listing call. ``damage`` flips a byte of the data of the block it names,
    leaving EBS's checksum as it was: a block damaged on the wire.
    """

    def __init__(self, real: Any) -> None:
        self.real = real
        self.listing_calls: list[dict[str, Any]] = []
        self.damage: int | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def list_snapshot_blocks(self, **params: Any) -> dict[str, Any]:
        self.listing_calls.append(params)
        full = self.real.list_snapshot_blocks(SnapshotId=params["SnapshotId"])
        blocks = sorted(full["Blocks"], key=lambda b: b["BlockIndex"])
        start = int(params.get("NextToken") or params.get("StartingBlockIndex") or 0)
        remaining = [b for b in blocks if b["BlockIndex"] >= start]
        page = remaining[: params["MaxResults"]]
        response = {
            "Blocks": page,
            "BlockSize": full["BlockSize"],
            "VolumeSize": full["VolumeSize"],
        }
        if len(remaining) > len(page):
            response["NextToken"] = str(remaining[len(page)]["BlockIndex"])
        return response

    def get_snapshot_block(self, **params: Any) -> dict[str, Any]:
        response: dict[str, Any] = self.real.get_snapshot_block(**params)
        if params["BlockIndex"] == self.damage:
            data = bytearray(response["BlockData"].read())
            data[17] ^= 0x01
            response["BlockData"] = StreamingBody(io.BytesIO(bytes(data)), len(data))
        return response


class WrappedAccount(AwsAccount):
    """An account whose EBS client is a ``PagingEbs`` around the real one."""

    def __init__(self, regions: list[str]) -> None:
        super().__init__(regions=regions)
        self.ebs = PagingEbs(super().client("ebs", regions[0]))

    def client(self, service: str, region: str | None = None) -> Any:
        if service == "ebs":
            return self.ebs
        return super().client(service, region)


def items_by_volume(exporter: EbsExporter) -> dict[str, ExportItem]:
    return {str(item.source["volume_id"]): item for item in exporter.list_items()}


def assemble(
    source: RangedSource, path: Path, parts_order: Callable[[list[Any]], list[Any]]
) -> None:
    """Write every part at its offset into a sparse file, as an in-place store does."""
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    try:
        os.ftruncate(fd, source.size)
        for part in parts_order(list(source.parts())):
            os.pwrite(fd, source.read_part(part), part.offset)
    finally:
        os.close(fd)


def assert_image(
    chunks: Iterable[bytes], blocks: dict[int, bytes], block_size: int, size: int
) -> None:
    """The chunks are the image: each block's bytes at its offset, zeros everywhere else.

    Compares with memcmp (``==`` on bytes), far cheaper than hashing a GiB again.
    """
    starts = sorted(blocks)
    position = 0
    for chunk in chunks:
        end = position + len(chunk)
        inside = [i for i in starts if i * block_size < end and (i + 1) * block_size > position]
        if not inside:
            assert chunk.count(0) == len(chunk), f"non-zero bytes in the hole [{position}, {end})"
            position = end
            continue
        expected = bytearray(len(chunk))
        for index in inside:
            lo = max(index * block_size, position)
            hi = min((index + 1) * block_size, end)
            expected[lo - position : hi - position] = blocks[index][
                lo - index * block_size : hi - index * block_size
            ]
        assert chunk == expected, f"image differs in [{position}, {end})"
        position = end
    assert position == size


def read_file(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        while chunk := f.read(4 * 1024 * 1024):
            yield chunk


SANDBOX_BLOCKS = {i: sb.snapshot_block_data(i) for i in sb.SNAPSHOT_BLOCK_INDICES}
SANDBOX_IMAGE_SIZE = sb.SNAPSHOT_VOLUME_SIZE_GIB * GIB


@pytest.fixture(scope="module")
def sandbox_image_sha256() -> str:
    return image_sha256(SANDBOX_IMAGE_SIZE, SANDBOX_BLOCKS, sb.SNAPSHOT_BLOCK_SIZE)


# ---------------------------------------------------------------------------


def test_registry_finds_the_exporter() -> None:
    assert load_exporter("ebs") is EbsExporter


def test_lists_each_volume_from_its_snapshot_and_snapshots_the_rest(sandbox: Sandbox) -> None:
    exporter = EbsExporter(sandbox.account, tier_of=Prioritizer([]))
    items = items_by_volume(exporter)
    volumes = sandbox.summary.volume_ids
    assert set(items) == set(volumes.values())

    data = items[volumes["worker-1:data"]]
    # Found through its volume-id tag: moto's direct snapshot hangs off another volume.
    assert data.idem_key == f"ebs:{sandbox.summary.snapshot_id}"
    assert data.dest_key == f"ebs/{sb.SANDBOX_REGION}/{volumes['worker-1:data']}.img"
    assert data.size == sb.SNAPSHOT_VOLUME_SIZE_GIB * GIB
    assert data.source == {
        "kind": "ebs",
        "region": sb.SANDBOX_REGION,
        "volume_id": volumes["worker-1:data"],
        "snapshot_id": sandbox.summary.snapshot_id,
        "block_size": sb.SNAPSHOT_BLOCK_SIZE,  # as the listing reported it
        "volume_size_gib": sb.SNAPSHOT_VOLUME_SIZE_GIB,
        "instance": "worker-1",
    }
    assert data.tier == Prioritizer([])(data.source)

    # The root volumes are found through their own nightly snapshots.
    ec2 = sandbox.account.client("ec2")
    for name in ("web-1", "web-2", "worker-1"):
        item = items[volumes[f"{name}:root"]]
        assert item.source["instance"] == name
        (snapshot,) = ec2.describe_snapshots(SnapshotIds=[item.source["snapshot_id"]])["Snapshots"]
        tags = {t["Key"]: t["Value"] for t in snapshot["Tags"]}
        assert tags["volume-id"] == volumes[f"{name}:root"]
        assert "created-by" not in tags
        assert item.size == snapshot["VolumeSize"] * GIB
    assert items_by_volume(exporter) == items

    # A volume with no snapshot gets one, of itself, tagged as ours; listing
    # again (a resume) reuses it: same keys, no new snapshot.
    region = "ap-southeast-2"
    bare = sandbox.account.client("ec2", region).create_volume(
        AvailabilityZone=f"{region}a", Size=2
    )["VolumeId"]
    elsewhere = EbsExporter(AwsAccount(regions=[region]), tier_of=Prioritizer([]))
    first = items_by_volume(elsewhere)
    (snapshot,) = sandbox.account.client("ec2", region).describe_snapshots(
        SnapshotIds=[first[bare].source["snapshot_id"]]
    )["Snapshots"]
    assert snapshot["VolumeId"] == bare
    tags = {t["Key"]: t["Value"] for t in snapshot["Tags"]}
    assert tags == {"volume-id": bare, "created-by": "exitplan"}
    assert items_by_volume(elsewhere) == first


def test_parts_written_in_place_make_the_image(sandbox: Sandbox, tmp_path: Path) -> None:
    exporter = EbsExporter(sandbox.account, tier_of=Prioritizer([]))
    item = items_by_volume(exporter)[sandbox.summary.volume_ids["worker-1:data"]]
    source = exporter.open_ranged(item)
    parts = list(source.parts())
    assert [p.index for p in parts] == list(sb.SNAPSHOT_BLOCK_INDICES)
    assert all(p.offset == p.index * 512 and p.length == 512 for p in parts)

    image = tmp_path / "image.img"
    assemble(source, image, parts_order=lambda ps: list(reversed(ps)))  # any order will do
    assert image.stat().st_size == item.size
    assert image.stat().st_blocks * 512 < 1024 * 1024  # holes stay holes
    assert_image(read_file(image), SANDBOX_BLOCKS, 512, SANDBOX_IMAGE_SIZE)
    # EBS has no whole-image checksum: verify checks the size and vouches for the sha256.
    assert source.verify(size=SANDBOX_IMAGE_SIZE, md5_hex="m", sha256_hex="s") == "sha256:s"
    with pytest.raises(ChecksumMismatch, match="bytes"):
        source.verify(size=SANDBOX_IMAGE_SIZE - 512, md5_hex="m", sha256_hex="s")


def test_stream_and_in_place_exports_through_the_engine(
    sandbox: Sandbox, sandbox_image_sha256: str, tmp_path: Path
) -> None:
    class StreamOnlyStore(LocalObjectStore):
        """A directory that, like an S3-compatible store, cannot write in place."""

        capabilities = LocalObjectStore.capabilities - {"part_write"}

    harness = Harness(tmp_path, names=("stream", "inplace"))
    harness.destinations[0] = Destination("stream", StreamOnlyStore("stream", tmp_path / "stream"))
    volumes = sandbox.summary.volume_ids
    for destination in harness.destinations:
        harness.destinations = [destination]
        engine = harness.engine(concurrency=4)
        engine.export(EbsExporter(sandbox.account, tier_of=Prioritizer([])))
        engine.close()
        image = tmp_path / destination.name / "ebs" / sb.SANDBOX_REGION
        assert_image(
            read_file(image / f"{volumes['worker-1:data']}.img"),
            SANDBOX_BLOCKS,
            512,
            SANDBOX_IMAGE_SIZE,
        )
        saved = next(
            row
            for row in harness.journal.verified_items(destination.name, kind="ebs")
            if row.source["volume_id"] == volumes["worker-1:data"]
        )
        assert saved.sha256 == sandbox_image_sha256
        assert saved.source_checksum == f"sha256:{sandbox_image_sha256}"
        assert saved.source["snapshot_id"] == sandbox.summary.snapshot_id
        for name in ("web-1", "web-2", "worker-1"):
            assert_image(
                read_file(image / f"{volumes[f'{name}:root']}.img"),
                {i: sb.snapshot_block_data(i) for i in (0, 1, 2)},
                512,
                SANDBOX_IMAGE_SIZE,
            )

    statuses = {(e.key, e.status) for e in harness.seen}
    data_key = f"ebs/{sb.SANDBOX_REGION}/{volumes['worker-1:data']}.img"
    assert (data_key, "verified") in statuses
    assert not [e for e in harness.seen if e.status == "failed"]
    assert harness.journal.item_counts()["verified"] == 2 * 4


def test_a_snapshot_the_direct_apis_cannot_read_is_a_clear_fatal_error(
    sandbox: Sandbox, extra: Extra
) -> None:
    exporter = EbsExporter(AwsAccount(regions=[EXTRA_REGION]), tier_of=Prioritizer([]))
    item = items_by_volume(exporter)[extra.plain_volume]
    assert item.idem_key == f"ebs:{extra.plain_snapshot}"
    assert item.source["block_size"] is None  # the direct API could not say
    for opener in (exporter.open_ranged, exporter.open):
        with pytest.raises(FatalError, match=extra.plain_snapshot) as raised:
            opener(item)
        assert "ListSnapshotBlocks failed" in str(raised.value)


def test_listing_follows_pages_and_refetches_dropped_tokens(sandbox: Sandbox, extra: Extra) -> None:
    account = WrappedAccount([EXTRA_REGION])
    exporter = EbsExporter(account, tier_of=Prioritizer([]), page_size=2)
    item = items_by_volume(exporter)[extra.direct_volume]
    assert item.idem_key == f"ebs:{extra.direct_snapshot}"
    account.ebs.listing_calls.clear()

    source = exporter.open_ranged(item)
    parts = list(source.parts())
    assert [p.index for p in parts] == list(EXTRA_BLOCKS)
    pages = [c for c in account.ebs.listing_calls if "StartingBlockIndex" not in c]
    assert len(pages) == len(EXTRA_BLOCKS) // 2
    assert all(c["MaxResults"] == 2 for c in pages)
    assert [c.get("NextToken") is not None for c in pages] == [False] + [True] * (len(pages) - 1)

    # The token cache holds 4 pages: block 0's token was dropped and is fetched again.
    assert source.read_part(parts[0]) == block_bytes(0)
    assert {"SnapshotId": extra.direct_snapshot, "MaxResults": 2, "StartingBlockIndex": 0} in (
        account.ebs.listing_calls
    )
    for part in parts[1:]:
        assert source.read_part(part) == block_bytes(part.index)

    # The ordered stream: more blocks than its prefetch window, across pages.
    stream = exporter.open(item)
    try:
        assert_image(stream, {i: block_bytes(i) for i in EXTRA_BLOCKS}, 512, GIB)
    finally:
        stream.close()


def test_a_damaged_block_is_a_checksum_mismatch_and_never_published(
    sandbox: Sandbox, extra: Extra, tmp_path: Path
) -> None:
    account = WrappedAccount([EXTRA_REGION])
    account.ebs.damage = 100
    exporter = EbsExporter(account, tier_of=Prioritizer([]), block_attempts=1)
    item = items_by_volume(exporter)[extra.direct_volume]
    source = exporter.open_ranged(item)
    parts = {p.index: p for p in source.parts()}
    assert source.read_part(parts[7]) == block_bytes(7)
    with pytest.raises(ChecksumMismatch, match=f"{extra.direct_snapshot} block 100"):
        source.read_part(parts[100])
    stream = exporter.open(item)
    with pytest.raises(ChecksumMismatch, match="block 100"):
        for _ in stream:
            pass
    stream.close()

    # Through the engine: retried, then failed; no image is published.
    harness = Harness(tmp_path)
    engine = harness.engine(concurrency=2)
    engine.export(exporter)
    engine.close()
    failed = {e.key: e.error for e in harness.seen if e.status == "failed"}
    assert "block 100" in (failed[item.dest_key] or "")
    assert not (tmp_path / "vault" / item.dest_key).exists()
