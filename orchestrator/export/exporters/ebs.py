"""EBS volumes -> raw disk images, read from snapshots through the EBS direct APIs.

Layout at a destination: ``ebs/<region>/<volume-id>.img``, a raw image as big
as the snapshot's volume (``VolumeSize`` GiB). Blocks the snapshot does not
hold are zeros; a destination that writes in place keeps them as holes.

Each volume is read from its newest *completed* snapshot: one whose
``VolumeId`` is the volume, or one tagged ``volume-id=<volume>`` (snapshots
written with ``ebs:StartSnapshot`` hang off a volume of their own). A volume
with no snapshot gets one (``ec2:CreateSnapshot``, tagged the same way), and
``open`` waits a bounded time for it to complete. A snapshot never changes,
so the idempotency key is the snapshot id.

The image is read block by block (``ListSnapshotBlocks``, paginated, then
``GetSnapshotBlock``); each block's SHA256 checksum from EBS is checked
against its bytes. EBS offers no checksum of the whole image, so those
per-block checks are the source's word on it. The block size comes from
the listing (AWS: 512 KiB, moto: 512 bytes) and is never assumed.

Needed permissions: ec2:DescribeVolumes, ec2:DescribeSnapshots,
ec2:DescribeInstances, ec2:CreateSnapshot, ec2:CreateTags (on the snapshot),
ebs:ListSnapshotBlocks, ebs:GetSnapshotBlock.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import math
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, ClassVar

import botocore.exceptions
from tenacity import Retrying, retry_if_exception, stop_after_attempt
from tenacity.wait import wait_random_exponential

from orchestrator.errors import ChecksumMismatch, FatalError, RetryableError
from orchestrator.export.exporters.base import (
    ExportContext,
    Exporter,
    ExportItem,
    Part,
    RangedSource,
    SourceStream,
    TierOf,
)
from providers.aws import AwsAccount, call_aws, should_retry

log = logging.getLogger(__name__)

GIB = 1024**3
#: Tag linking a snapshot to the volume it is a copy of (set by us and by the sandbox).
VOLUME_TAG = "volume-id"
#: Tag marking snapshots exitplan created, so a person can find (and delete) them.
CREATED_BY_TAG = "created-by"
CREATED_BY_VALUE = "exitplan"

#: ListSnapshotBlocks' largest page (AWS allows 100..10000).
_MAX_PAGE = 10000
#: Volume states that hold data worth reading.
_READABLE_STATES = frozenset({"available", "in-use"})
#: Describe calls take at most this many ids in one filter.
_FILTER_BATCH = 100
#: A block token this close to its expiry is fetched afresh before use.
_TOKEN_MARGIN = timedelta(minutes=5)
#: The zero buffer the stream yields for holes (the same object every time).
_ZERO_CHUNK = 1024 * 1024
_ZEROS = bytes(_ZERO_CHUNK)
_EPOCH = datetime.fromtimestamp(0, UTC)


def image_key(region: str, volume_id: str) -> str:
    """Where the image of ``volume_id`` goes at every destination."""
    return f"ebs/{region}/{volume_id}.img"


def _reason(exc: BaseException) -> str:
    if isinstance(exc, botocore.exceptions.ClientError):
        error = exc.response.get("Error", {})
        return f"{error.get('Code', 'ClientError')}: {error.get('Message', '')}".rstrip(": ")
    return f"{type(exc).__name__}: {exc}"


def _direct_api(what: str, snapshot_id: str, fn: Callable[[], Any]) -> Any:
    """Call an EBS direct API; classify failures for the engine.

    Throttling, 5xx and broken connections become ``RetryableError``. Any
    other failure (the snapshot is not completed, not readable by the
    direct APIs, gone, or access is denied) becomes ``FatalError`` naming the
    snapshot and why: asking again will not help.
    """
    try:
        return fn()
    except (RetryableError, FatalError):
        raise
    except Exception as exc:
        if should_retry(exc):
            raise RetryableError(f"{what} of EBS snapshot {snapshot_id}: {_reason(exc)}") from exc
        raise FatalError(
            f"EBS snapshot {snapshot_id} cannot be read through the EBS direct APIs "
            f"({what} failed: {_reason(exc)}); the snapshot must be completed, owned by "
            "this account and readable with ebs:ListSnapshotBlocks and ebs:GetSnapshotBlock"
        ) from exc


class _BlockListing:
    """The blocks of one snapshot: paginated listing, and block tokens on demand.

    Tokens seen while listing are kept in a bounded cache (a volume can hold
    millions of blocks); a token that was dropped, or is about to expire, is
    fetched again with ``StartingBlockIndex``. Thread-safe.
    """

    def __init__(
        self,
        client: Any,
        snapshot_id: str,
        *,
        page_size: int,
        cache_limit: int,
        now: Callable[[], datetime],
    ) -> None:
        self.client = client
        self.snapshot_id = snapshot_id
        self.page_size = page_size
        self.cache_limit = max(cache_limit, page_size)
        self._now = now
        self._lock = threading.Lock()
        self._tokens: OrderedDict[int, tuple[str, datetime | None]] = OrderedDict()
        # The first page is read now, so an unreadable snapshot fails at open.
        self._first_page: Mapping[str, Any] | None = self._page()
        self.block_size = int(self._first_page["BlockSize"])
        self.volume_size_gib = int(self._first_page["VolumeSize"])
        if self.block_size <= 0:
            raise FatalError(f"EBS snapshot {snapshot_id}: listed block size {self.block_size}")

    def _page(self, **params: Any) -> Mapping[str, Any]:
        page: Mapping[str, Any] = _direct_api(
            "ListSnapshotBlocks",
            self.snapshot_id,
            lambda: self.client.list_snapshot_blocks(
                SnapshotId=self.snapshot_id, MaxResults=self.page_size, **params
            ),
        )
        expiry = page.get("ExpiryTime")
        with self._lock:
            for block in page.get("Blocks", []):
                index = int(block["BlockIndex"])
                self._tokens[index] = (block["BlockToken"], expiry)
                self._tokens.move_to_end(index)
            while len(self._tokens) > self.cache_limit:
                self._tokens.popitem(last=False)
        return page

    def blocks(self) -> Iterator[int]:
        """Indices of the blocks that hold data, in listing order. Retry-safe: yes."""
        page, self._first_page = self._first_page, None
        if page is None:
            page = self._page()
        while True:
            if int(page.get("BlockSize", self.block_size)) != self.block_size:
                raise FatalError(
                    f"EBS snapshot {self.snapshot_id}: block size changed between pages "
                    f"({self.block_size} then {page['BlockSize']})"
                )
            for block in page.get("Blocks", []):
                yield int(block["BlockIndex"])
            next_token = page.get("NextToken")
            if not next_token:
                return
            page = self._page(NextToken=next_token)

    def token(self, index: int) -> str:
        """A usable block token for ``index``; raises FatalError if the block is not listed."""
        with self._lock:
            cached = self._tokens.get(index)
        if cached is None or self._expiring(cached[1]):
            self._page(StartingBlockIndex=index)
            with self._lock:
                cached = self._tokens.get(index)
            if cached is None:
                raise FatalError(
                    f"EBS snapshot {self.snapshot_id}: block {index} was listed before "
                    "but is not listed now"
                )
        return cached[0]

    def forget(self, index: int) -> None:
        """Drop the token of a block that was read (keeps the cache small)."""
        with self._lock:
            self._tokens.pop(index, None)

    def _expiring(self, expiry: datetime | None) -> bool:
        return expiry is not None and expiry - _TOKEN_MARGIN <= self._now()


class EbsSnapshotSource(RangedSource):
    """The raw image of one snapshot, one part per block that holds data.

    Built by ``EbsExporter.open_ranged``; the first listing page is read on
    construction, so an unreadable snapshot raises ``FatalError`` there.
    """

    def __init__(self, item: ExportItem, listing: _BlockListing) -> None:
        self.item = item
        self.listing = listing
        self.block_size = listing.block_size
        self.size = listing.volume_size_gib * GIB
        expected = item.size
        if expected is not None and expected != self.size:
            raise FatalError(
                f"EBS snapshot {listing.snapshot_id}: the direct API says the volume has "
                f"{listing.volume_size_gib} GiB, the snapshot was listed with {expected} bytes"
            )

    @property
    def snapshot_id(self) -> str:
        return self.listing.snapshot_id

    def parts(self) -> Iterator[Part]:
        """One part per listed block; holes are not listed. Retry-safe: yes.

        Raises ``FatalError`` for a block that lies outside the volume.
        """
        for index in self.listing.blocks():
            offset = index * self.block_size
            if index < 0 or offset + self.block_size > self.size:
                raise FatalError(
                    f"EBS snapshot {self.snapshot_id}: block {index} lies outside the "
                    f"{self.size}-byte volume"
                )
            yield Part(index=index, offset=offset, length=self.block_size)

    def read_part(self, part: Part) -> bytes:
        """The bytes of one block, checked against its SHA256 checksum from EBS.

        Raises ``ChecksumMismatch`` (retryable) when the bytes, their length
        or the checksum do not agree, ``RetryableError`` on throttling or a
        broken connection, ``FatalError`` when the block cannot be read at
        all. Retry-safe: yes.
        """
        token = self.listing.token(part.index)
        name = f"EBS snapshot {self.snapshot_id} block {part.index}"

        def fetch() -> tuple[Mapping[str, Any], bytes]:
            response = self.listing.client.get_snapshot_block(
                SnapshotId=self.snapshot_id, BlockIndex=part.index, BlockToken=token
            )
            body = response["BlockData"]
            try:
                return response, body.read()
            finally:
                body.close()

        response, data = _direct_api("GetSnapshotBlock", self.snapshot_id, fetch)
        algorithm = response.get("ChecksumAlgorithm")
        if algorithm != "SHA256":
            raise FatalError(f"{name}: checksum algorithm {algorithm!r}, expected SHA256")
        checksum = response.get("Checksum")
        if not checksum:
            raise ChecksumMismatch(f"{name}: EBS sent no checksum with the block")
        actual = base64.b64encode(hashlib.sha256(data).digest()).decode()
        if actual != checksum:
            raise ChecksumMismatch(f"{name}: sha256 {actual} does not match EBS's {checksum}")
        stated = response.get("DataLength")
        if len(data) != part.length or (stated is not None and int(stated) != len(data)):
            raise ChecksumMismatch(
                f"{name}: got {len(data)} bytes, EBS says {stated}, the block size is {part.length}"
            )
        self.listing.forget(part.index)
        return data

    def verify(self, *, size: int, md5_hex: str, sha256_hex: str) -> str | None:
        """Checks the image has the volume's size; returns ``sha256:<hex>`` of it.

        EBS has no checksum of the whole image: every block was checked on
        its own, so the sha256 computed here is what the manifest records.
        """
        if size != self.size:
            raise ChecksumMismatch(
                f"EBS snapshot {self.snapshot_id}: image has {size} bytes, the volume {self.size}"
            )
        return f"sha256:{sha256_hex}"


class EbsImageStream(SourceStream):
    """The same image as one ordered byte stream, for stores that cannot write in place.

    Blocks are fetched ahead, at most ``prefetch`` at a time, and yielded in
    order; the gaps between them are yielded from one shared zero buffer.
    Each block read is retried a few times on its own, so a throttled block
    does not restart the whole image.
    """

    def __init__(self, source: EbsSnapshotSource, *, prefetch: int, block_attempts: int) -> None:
        self.source = source
        self.prefetch = max(1, prefetch)
        self.block_attempts = max(1, block_attempts)
        self._pool = ThreadPoolExecutor(self.prefetch, thread_name_prefix="exitplan-ebs-block")
        self._window: deque[tuple[Part, Future[bytes]]] = deque()
        #: End of the last byte handed out.
        self._written = 0

    def _read(self, part: Part) -> bytes:
        retrying = Retrying(
            stop=stop_after_attempt(self.block_attempts),
            wait=wait_random_exponential(multiplier=0.1, max=2.0),
            retry=retry_if_exception(lambda exc: isinstance(exc, RetryableError)),
            reraise=True,
        )
        data: bytes = retrying(self.source.read_part, part)
        return data

    def __iter__(self) -> Iterator[bytes]:
        position = 0
        self._written = 0
        try:
            for part in self.source.parts():
                if part.offset < position:
                    # Ordered output needs ascending blocks (AWS lists them so).
                    raise FatalError(
                        f"EBS snapshot {self.source.snapshot_id}: block {part.index} listed "
                        "out of order; the image cannot be streamed"
                    )
                position = part.offset + part.length
                self._window.append((part, self._pool.submit(self._read, part)))
                if len(self._window) >= self.prefetch:
                    yield from self._emit()
            while self._window:
                yield from self._emit()
            yield from _zeros(self.source.size - self._written)
        finally:
            self._cancel_window()

    def _emit(self) -> Iterator[bytes]:
        part, future = self._window.popleft()
        yield from _zeros(part.offset - self._written)
        data = future.result()
        self._written = part.offset + len(data)
        yield data

    def _cancel_window(self) -> None:
        for _, future in self._window:
            future.cancel()
        self._window.clear()

    def verify(self, *, size: int, md5_hex: str, sha256_hex: str) -> str | None:
        """Same as ``EbsSnapshotSource.verify``."""
        return self.source.verify(size=size, md5_hex=md5_hex, sha256_hex=sha256_hex)

    def close(self) -> None:
        self._cancel_window()
        self._pool.shutdown(wait=True, cancel_futures=True)


def _zeros(count: int) -> Iterator[bytes]:
    while count > 0:
        n = min(count, _ZERO_CHUNK)
        # The full buffer is yielded as is (no copy); only a tail is sliced.
        yield _ZEROS if n == _ZERO_CHUNK else _ZEROS[:n]
        count -= n


def _batches(values: Sequence[str], size: int = _FILTER_BATCH) -> Iterator[list[str]]:
    for start in range(0, len(values), size):
        yield list(values[start : start + size])


def _tags(resource: Mapping[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in resource.get("Tags", []) or []}


class EbsExporter(Exporter):
    """Every EBS volume in every region of the account, as a raw image per volume."""

    kind: ClassVar[str] = "ebs"

    def __init__(
        self,
        account: AwsAccount,
        *,
        tier_of: TierOf,
        context: ExportContext | None = None,
        page_size: int = _MAX_PAGE,
        prefetch: int = 8,
        block_attempts: int = 3,
        snapshot_wait_s: float = 1800.0,
        snapshot_poll_s: float = 15.0,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        super().__init__(account, tier_of=tier_of, context=context)
        #: MaxResults of ListSnapshotBlocks (AWS accepts 100..10000).
        self.page_size = page_size
        #: Blocks fetched ahead by the ordered stream.
        self.prefetch = prefetch
        self.block_attempts = block_attempts
        #: Longest wait in one ``open`` for a snapshot still being taken.
        self.snapshot_wait_s = snapshot_wait_s
        self.snapshot_poll_s = snapshot_poll_s
        self._now = now
        self._lock = threading.Lock()
        #: (region, volume id) -> why it has no snapshot to read (creation failed).
        self._unsnapshotted: dict[tuple[str, str], str] = {}

    def _aws(self, what: str, fn: Callable[[], Any]) -> Any:
        return call_aws(what, fn)

    # -- listing -------------------------------------------------------------

    def list_items(self) -> Iterator[ExportItem]:
        """One item per readable volume, per region, most important first.

        Creates a snapshot (tagged ``volume-id`` and ``created-by=exitplan``)
        for a volume with neither a completed nor a pending one; a volume whose
        snapshot cannot be created is still listed, and fails on ``open``
        with the reason. Raises on a failure to list volumes or snapshots.
        """
        for region in self.account.regions:
            yield from self._region_items(region)

    def _region_items(self, region: str) -> Iterator[ExportItem]:
        ec2 = self.account.client("ec2", region)
        volumes: list[dict[str, Any]] = []
        pages = ec2.get_paginator("describe_volumes").paginate()
        for page in self._aws(f"list EBS volumes in {region}", lambda: list(pages)):
            for volume in page.get("Volumes", []):
                if volume.get("State") in _READABLE_STATES:
                    volumes.append(volume)
                else:
                    log.warning(
                        "EBS volume %s in %s is %s: not exported",
                        volume["VolumeId"],
                        region,
                        volume.get("State"),
                    )
        if not volumes:
            return
        volume_ids = [v["VolumeId"] for v in volumes]
        snapshots = self._snapshots_by_volume(ec2, region, volume_ids)
        names = self._instance_names(ec2, region, volumes)
        items = []
        for volume in volumes:
            volume_id = volume["VolumeId"]
            snapshot = self._choose_snapshot(snapshots.get(volume_id, []))
            if snapshot is None:
                snapshot = self._create_snapshot(ec2, region, volume_id)
            attached = [a["InstanceId"] for a in volume.get("Attachments", []) or []]
            instance = next((names[i] for i in attached if i in names), None)
            items.append(self._item(region, volume, snapshot, instance))
        items.sort(key=lambda item: (self.tier_of.rank(item.source), item.dest_key))
        yield from items

    def _snapshots_by_volume(
        self, ec2: Any, region: str, volume_ids: Sequence[str]
    ) -> dict[str, list[dict[str, Any]]]:
        """Snapshots owned by this account, by the volume they copy (VolumeId or tag)."""
        found: dict[str, dict[str, Any]] = {}
        by_volume: dict[str, list[dict[str, Any]]] = {}
        wanted = set(volume_ids)
        for batch in _batches(volume_ids):
            for name in ("volume-id", f"tag:{VOLUME_TAG}"):
                pages = ec2.get_paginator("describe_snapshots").paginate(
                    OwnerIds=["self"], Filters=[{"Name": name, "Values": batch}]
                )
                for page in self._aws(f"list EBS snapshots in {region}", partial(list, pages)):
                    for snapshot in page.get("Snapshots", []):
                        found[snapshot["SnapshotId"]] = snapshot
        for snapshot in found.values():
            linked = {snapshot.get("VolumeId"), _tags(snapshot).get(VOLUME_TAG)}
            for volume_id in linked & wanted:
                by_volume.setdefault(str(volume_id), []).append(snapshot)
        return by_volume

    @staticmethod
    def _choose_snapshot(snapshots: Iterable[Mapping[str, Any]]) -> Mapping[str, Any] | None:
        """The newest completed snapshot, else the newest pending one (ours, being taken)."""
        for state in ("completed", "pending"):
            candidates = [s for s in snapshots if s.get("State") == state]
            if candidates:
                return max(
                    candidates, key=lambda s: (s.get("StartTime") or _EPOCH, s["SnapshotId"])
                )
        return None

    def _create_snapshot(self, ec2: Any, region: str, volume_id: str) -> Mapping[str, Any] | None:
        try:
            snapshot: Mapping[str, Any] = self._aws(
                f"snapshot EBS volume {volume_id} in {region}",
                lambda: ec2.create_snapshot(
                    VolumeId=volume_id,
                    Description=f"exitplan export of {volume_id}",
                    TagSpecifications=[
                        {
                            "ResourceType": "snapshot",
                            "Tags": [
                                {"Key": VOLUME_TAG, "Value": volume_id},
                                {"Key": CREATED_BY_TAG, "Value": CREATED_BY_VALUE},
                            ],
                        }
                    ],
                ),
            )
        except Exception as exc:
            # Listed anyway, so the volume shows up as failed, with the reason.
            with self._lock:
                self._unsnapshotted[(region, volume_id)] = _reason(exc)
            return None
        if self.context.record_undo is not None:
            self.context.record_undo(
                SNAPSHOT_UNDO,
                {"region": region, "snapshot_id": snapshot["SnapshotId"], "volume_id": volume_id},
                f"EBS snapshot {snapshot['SnapshotId']} of {volume_id} in {region}",
            )
        log.info("created snapshot %s of %s in %s", snapshot["SnapshotId"], volume_id, region)
        return snapshot

    def _instance_names(
        self, ec2: Any, region: str, volumes: Iterable[Mapping[str, Any]]
    ) -> dict[str, str]:
        instance_ids = sorted(
            {a["InstanceId"] for v in volumes for a in v.get("Attachments", []) or []}
        )
        names: dict[str, str] = {}
        for batch in _batches(instance_ids):
            pages = ec2.get_paginator("describe_instances").paginate(
                Filters=[{"Name": "instance-id", "Values": batch}]
            )
            for page in self._aws(f"describe EC2 instances in {region}", partial(list, pages)):
                for reservation in page.get("Reservations", []):
                    for instance in reservation.get("Instances", []):
                        name = _tags(instance).get("Name")
                        if name:
                            names[instance["InstanceId"]] = name
        return names

    def _item(
        self,
        region: str,
        volume: Mapping[str, Any],
        snapshot: Mapping[str, Any] | None,
        instance: str | None,
    ) -> ExportItem:
        volume_id = volume["VolumeId"]
        snapshot_id = snapshot["SnapshotId"] if snapshot else None
        # The image is of the snapshot, so its size is the snapshot's (a
        # volume grown since has more GiB than the snapshot holds).
        size_gib = int((snapshot or {}).get("VolumeSize") or volume["Size"])
        source = {
            "kind": self.kind,
            "region": region,
            "volume_id": volume_id,
            "snapshot_id": snapshot_id,
            "block_size": self._probe_block_size(region, snapshot),
            "volume_size_gib": size_gib,
            "instance": instance,
        }
        return self.new_item(
            # A snapshot never changes; a volume without one is retried every run.
            idem_key=f"ebs:{snapshot_id}" if snapshot_id else f"ebs:{region}/{volume_id}:none",
            dest_key=image_key(region, volume_id),
            size=size_gib * GIB,
            source=source,
        )

    def _probe_block_size(self, region: str, snapshot: Mapping[str, Any] | None) -> int | None:
        """The block size the direct API reports, for the manifest; None if it cannot say yet."""
        if snapshot is None or snapshot.get("State") != "completed":
            return None
        client = self.account.client("ebs", region)
        try:
            page = _direct_api(
                "ListSnapshotBlocks",
                snapshot["SnapshotId"],
                lambda: client.list_snapshot_blocks(
                    SnapshotId=snapshot["SnapshotId"], MaxResults=100
                ),
            )
        except (FatalError, RetryableError) as exc:
            # ``open`` meets the same error and fails the item with it.
            log.info("%s", exc)
            return None
        return int(page["BlockSize"])

    # -- reading -------------------------------------------------------------

    def open_ranged(self, item: ExportItem) -> EbsSnapshotSource:
        """The image as one part per block. Waits (bounded) for a pending snapshot.

        Raises ``FatalError`` when the volume has no snapshot, the snapshot
        failed, or the direct APIs cannot read it; ``RetryableError`` when the
        snapshot is still pending after ``snapshot_wait_s`` or on throttling.
        Retry-safe: yes.
        """
        region = str(item.source["region"])
        volume_id = str(item.source["volume_id"])
        snapshot_id = item.source.get("snapshot_id")
        if not snapshot_id:
            with self._lock:
                why = self._unsnapshotted.get((region, volume_id), "no snapshot was found")
            raise FatalError(
                f"EBS volume {volume_id} in {region} has no snapshot to read and none could "
                f"be created ({why}); snapshot it by hand and export again"
            )
        self._wait_completed(region, str(snapshot_id))
        listing = _BlockListing(
            self.account.client("ebs", region),
            str(snapshot_id),
            page_size=self.page_size,
            cache_limit=4 * self.page_size,
            now=self._now,
        )
        return EbsSnapshotSource(item, listing)

    def open(self, item: ExportItem) -> SourceStream:
        """The image as one ordered stream (holes as zeros); errors as ``open_ranged``."""
        return EbsImageStream(
            self.open_ranged(item), prefetch=self.prefetch, block_attempts=self.block_attempts
        )

    def _wait_completed(self, region: str, snapshot_id: str) -> None:
        ec2 = self.account.client("ec2", region)
        (snapshot,) = self._aws(
            f"describe EBS snapshot {snapshot_id}",
            lambda: ec2.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"],
        )
        state = snapshot.get("State")
        if state == "completed":
            return
        if state != "pending":
            raise FatalError(
                f"EBS snapshot {snapshot_id} is {state!r}: {snapshot.get('StateMessage', '')}; "
                "delete it and export again to take a new one"
            )
        attempts = max(1, math.ceil(self.snapshot_wait_s / self.snapshot_poll_s))
        try:
            ec2.get_waiter("snapshot_completed").wait(
                SnapshotIds=[snapshot_id],
                WaiterConfig={"Delay": self.snapshot_poll_s, "MaxAttempts": attempts},
            )
        except botocore.exceptions.WaiterError as exc:
            raise RetryableError(
                f"EBS snapshot {snapshot_id} is not completed after {self.snapshot_wait_s:.0f}s "
                f"({_reason(exc)}); it is still being taken, try again later"
            ) from exc


#: The undo log's kind for a snapshot the export created.
SNAPSHOT_UNDO = "ebs-snapshot"


def undo_snapshot(resource: Mapping[str, Any], context: Any) -> str:
    """Undo handler for ``ebs-snapshot``: delete the snapshot this export created. Idempotent."""
    region, snapshot_id = str(resource["region"]), str(resource["snapshot_id"])
    ec2 = context.source().client("ec2", region)
    try:
        ec2.delete_snapshot(SnapshotId=snapshot_id)
    except botocore.exceptions.ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "InvalidSnapshot.NotFound":
            return f"EBS snapshot {snapshot_id} in {region} was already gone"
        raise FatalError(
            f"EBS snapshot {snapshot_id} in {region}: {_reason(exc)}; delete it by hand "
            "(it is tagged created-by=exitplan) or grant ec2:DeleteSnapshot and run rollback again"
        ) from None
    return f"deleted EBS snapshot {snapshot_id} in {region}"
