"""DynamoDB tables -> gzip JSON Lines plus a sidecar describing the table.

Per table, two items:

* ``dynamodb/<region>/<table>.jsonl.gz``: one item per line in DynamoDB's
  typed JSON (``{"id": {"S": "a"}, "blob": {"B": "<base64>"}}``), from a
  parallel segmented scan. Scan threads hand pages to the reading thread
  through a bounded queue and the lines are gzipped as they come, so memory
  stays at a few pages whatever the table's size.
* ``dynamodb/<region>/<table>.meta.json``: key schema, attribute definitions,
  indexes, billing mode, and the item count and sha256 of the data file
  *as it was actually written*. Those two figures exist only once the data
  stream has been read and verified, so the meta item is listed after the
  data item and its ``open`` waits (``threading.Event``, bounded) for the
  data item of the same table to be verified at every destination. Those
  figures are kept in the journal with the verified data item (its
  ``record``), so a resume after a kill between the two writes the meta
  without scanning again; and wherever the data is copied again, so is the
  meta (``depends_on``), so the two always agree. We chose
  this over "describe + a separate COUNT scan" because a second scan of a
  live table can count a different number of items than the first wrote,
  and could never give the data file's sha256; a meta that disagrees with
  its data file is worse than one that waits.

DynamoDB has no cheap change marker, so the idempotency key holds the table
ARN, its TableId (a re-created table is a new table) and ``run_id``: a new run
exports again, a resume of the same run skips a verified table. Without a
``run_id`` every exporter instance gets a fresh token, so nothing is ever
skipped by mistake.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import queue
import threading
import uuid
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import IO, Any, ClassVar

from orchestrator.errors import ChecksumMismatch, FatalError, RetryableError
from orchestrator.export.exporters.base import (
    ExportContext,
    Exporter,
    ExportItem,
    SourceStream,
    TierOf,
)
from providers.aws import AwsAccount, call_aws, should_retry

#: Format marker of the meta file; bump when its shape changes.
META_FORMAT = "exitplan.dynamodb.meta/1"

_CHUNK = 64 * 1024
#: Pages in flight between the scan threads and the reader: the memory bound.
_QUEUE_PAGES = 8
_DONE = object()


# ---------------------------------------------------------------------------
# Typed JSON: binary values as base64, everything else as the API gives it.
# ---------------------------------------------------------------------------


def encode_value(value: Mapping[str, Any]) -> dict[str, Any]:
    """One attribute value from the low-level client as JSON-safe typed JSON."""
    ((tag, inner),) = value.items()
    if tag == "B":
        return {"B": base64.b64encode(bytes(inner)).decode("ascii")}
    if tag == "BS":
        return {"BS": [base64.b64encode(bytes(b)).decode("ascii") for b in inner]}
    if tag == "M":
        return {"M": {k: encode_value(v) for k, v in inner.items()}}
    if tag == "L":
        return {"L": [encode_value(v) for v in inner]}
    return {tag: inner}


def decode_value(value: Mapping[str, Any]) -> dict[str, Any]:
    """The inverse of ``encode_value``: base64 back to bytes, for ``put``/``batch_write``."""
    ((tag, inner),) = value.items()
    if tag == "B":
        return {"B": base64.b64decode(inner)}
    if tag == "BS":
        return {"BS": [base64.b64decode(b) for b in inner]}
    if tag == "M":
        return {"M": {k: decode_value(v) for k, v in inner.items()}}
    if tag == "L":
        return {"L": [decode_value(v) for v in inner]}
    return {tag: inner}


def encode_item(item: Mapping[str, Any]) -> bytes:
    """One JSON Lines line (with its newline) for a scanned item; keys sorted for stable output."""
    doc = {k: encode_value(v) for k, v in item.items()}
    return (json.dumps(doc, sort_keys=True, separators=(",", ":")) + "\n").encode()


# ---------------------------------------------------------------------------
# Per-table state shared by the data and meta items of one exporter.
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _DataResult:
    item_count: int
    size: int
    sha256: str


class _TableState:
    def __init__(self, description: Mapping[str, Any]) -> None:
        self.description = description
        #: Set once the data item is settled: verified, skipped or failed.
        self.verified = threading.Event()
        #: The data file as verified at every destination (or recalled from
        #: the journal, when an earlier process verified it); None if not.
        self.result: _DataResult | None = None
        #: The last scan that passed its checks; becomes ``result`` once the
        #: engine says the item is verified (published everywhere).
        self.attempt: _DataResult | None = None


def table_meta(description: Mapping[str, Any], region: str) -> dict[str, Any]:
    """The schema part of the meta file, from ``describe_table``'s ``Table``."""

    def index(ix: Mapping[str, Any]) -> dict[str, Any]:
        out = {k: ix[k] for k in ("IndexName", "KeySchema", "Projection") if k in ix}
        throughput = ix.get("ProvisionedThroughput") or {}
        if throughput.get("ReadCapacityUnits"):
            out["ProvisionedThroughput"] = {
                "ReadCapacityUnits": throughput["ReadCapacityUnits"],
                "WriteCapacityUnits": throughput["WriteCapacityUnits"],
            }
        return out

    throughput = description.get("ProvisionedThroughput") or {}
    billing = (description.get("BillingModeSummary") or {}).get("BillingMode") or (
        "PROVISIONED" if throughput.get("ReadCapacityUnits") else "PAY_PER_REQUEST"
    )
    meta: dict[str, Any] = {
        "format": META_FORMAT,
        "region": region,
        "table_name": description["TableName"],
        "table_arn": description.get("TableArn", ""),
        "table_id": description.get("TableId", ""),
        "key_schema": description["KeySchema"],
        "attribute_definitions": description["AttributeDefinitions"],
        "billing_mode": billing,
        "global_secondary_indexes": [
            index(ix) for ix in description.get("GlobalSecondaryIndexes", [])
        ],
        "local_secondary_indexes": [
            index(ix) for ix in description.get("LocalSecondaryIndexes", [])
        ],
    }
    if billing == "PROVISIONED":
        meta["provisioned_throughput"] = {
            "ReadCapacityUnits": throughput.get("ReadCapacityUnits", 1),
            "WriteCapacityUnits": throughput.get("WriteCapacityUnits", 1),
        }
    return meta


class _ScanStream(SourceStream):
    """A parallel segmented scan, gzipped as it is read. Each iteration scans afresh."""

    def __init__(
        self,
        client: Any,
        table_name: str,
        state: _TableState,
        *,
        segments: int,
        chunk_size: int,
        page_size: int | None,
    ) -> None:
        self._client = client
        self._table = table_name
        self._segments = segments
        self._chunk_size = chunk_size
        self._page_size = page_size
        self._state = state
        self._attempt: _DataResult | None = None
        self._scan_started = datetime.now(UTC)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def _scan_segment(self, segment: int, pages: queue.Queue[Any]) -> None:
        start_key: dict[str, Any] | None = None
        try:
            while not self._stop.is_set():
                kwargs: dict[str, Any] = {
                    "TableName": self._table,
                    "Segment": segment,
                    "TotalSegments": self._segments,
                    "ConsistentRead": False,
                }
                if start_key:
                    kwargs["ExclusiveStartKey"] = start_key
                if self._page_size:
                    kwargs["Limit"] = self._page_size
                page = self._client.scan(**kwargs)
                self._put(pages, page.get("Items", []))
                start_key = page.get("LastEvaluatedKey")
                if not start_key:
                    break
            self._put(pages, _DONE)
        except BaseException as exc:  # handed to the reader, which raises it
            self._put(pages, exc)

    def _put(self, pages: queue.Queue[Any], entry: Any) -> None:
        # A bounded put that gives up once the reader has gone away, so an
        # abandoned stream never leaves scan threads blocked forever.
        while not self._stop.is_set():
            try:
                pages.put(entry, timeout=0.2)
                return
            except queue.Full:
                continue

    def __iter__(self) -> Iterator[bytes]:
        self._attempt = None
        self._stop.clear()
        # What the file holds is the table as of the scan's start (a drill's RPO).
        self._scan_started = datetime.now(UTC)
        pages: queue.Queue[Any] = queue.Queue(maxsize=_QUEUE_PAGES)
        self._threads = [
            threading.Thread(
                target=self._scan_segment,
                args=(segment, pages),
                name=f"dynamodb-scan-{self._table}-{segment}",
                daemon=True,
            )
            for segment in range(self._segments)
        ]
        for thread in self._threads:
            thread.start()
        # wbits=31: gzip framing; zlib writes mtime 0, so equal input gives equal bytes.
        compressor = zlib.compressobj(6, zlib.DEFLATED, 31)
        sha = hashlib.sha256()
        size = 0
        count = 0
        pending: list[bytes] = []
        pending_len = 0
        fed = 0  # uncompressed bytes since the last chunk was handed over
        running = self._segments
        try:
            while running:
                entry = pages.get()
                if entry is _DONE:
                    running -= 1
                    continue
                if isinstance(entry, BaseException):
                    if should_retry(entry):
                        raise RetryableError(
                            f"scan of DynamoDB table {self._table}: {entry}"
                        ) from entry
                    raise entry
                for item in entry:
                    line = encode_item(item)
                    fed += len(line)
                    out = compressor.compress(line)
                    count += 1
                    if out:
                        pending.append(out)
                        pending_len += len(out)
                if fed >= 16 * self._chunk_size and pending_len < self._chunk_size:
                    # zlib holds back output on very compressible data; a sync
                    # flush (dictionary kept, a few bytes of cost) makes the
                    # stream keep moving, so progress and memory stay bounded.
                    out = compressor.flush(zlib.Z_SYNC_FLUSH)
                    pending.append(out)
                    pending_len += len(out)
                if pending_len >= self._chunk_size or fed >= 16 * self._chunk_size:
                    fed = 0
                    chunk = b"".join(pending)
                    pending, pending_len = [], 0
                    sha.update(chunk)
                    size += len(chunk)
                    yield chunk
            pending.append(compressor.flush())
            chunk = b"".join(pending)
            sha.update(chunk)
            size += len(chunk)
            yield chunk
            self._attempt = _DataResult(item_count=count, size=size, sha256=sha.hexdigest())
        finally:
            self._stop.set()
            for thread in self._threads:
                thread.join()

    def verify(self, *, size: int, md5_hex: str, sha256_hex: str) -> str | None:
        attempt = self._attempt
        if attempt is None:
            raise ChecksumMismatch(f"DynamoDB table {self._table}: the scan did not finish")
        if size != attempt.size or sha256_hex != attempt.sha256:
            raise ChecksumMismatch(
                f"DynamoDB table {self._table}: read {size} bytes (sha256 {sha256_hex}), "
                f"the export wrote {attempt.size} bytes (sha256 {attempt.sha256})"
            )
        # Only a scan the engine then publishes everywhere feeds the meta file
        # (see DynamoDbExporter.item_settled), so it describes checked bytes.
        self._state.attempt = attempt
        return f"sha256:{attempt.sha256}"

    def record(self) -> Mapping[str, Any] | None:
        """Item count, size and sha256 of the data file: all its meta needs."""
        attempt = self._attempt
        if attempt is None:
            return None
        return {
            "item_count": attempt.item_count,
            "size": attempt.size,
            "sha256": attempt.sha256,
            "as_of": self._scan_started.isoformat(),
        }

    def close(self) -> None:
        self._stop.set()


class _MetaStream(SourceStream):
    def __init__(self, data: bytes) -> None:
        self._data = data

    def __iter__(self) -> Iterator[bytes]:
        yield self._data

    def verify(self, *, size: int, md5_hex: str, sha256_hex: str) -> str | None:
        digest = hashlib.sha256(self._data).hexdigest()
        if size != len(self._data) or sha256_hex != digest:
            raise ChecksumMismatch(f"meta file read back as {size} bytes, sha256 {sha256_hex}")
        return f"sha256:{digest}"


class DynamoDbExporter(Exporter):
    """Every table in every region of the account, as data + meta items."""

    kind: ClassVar[str] = "dynamodb"

    def __init__(
        self,
        account: AwsAccount,
        *,
        tier_of: TierOf,
        context: ExportContext | None = None,
        run_id: str = "",
        segments: int = 4,
        meta_wait_s: float = 6 * 3600,
        chunk_size: int = _CHUNK,
        page_size: int | None = None,
    ) -> None:
        super().__init__(account, tier_of=tier_of, context=context)
        if segments < 1:
            raise ValueError("segments must be at least 1")
        self.run_id = run_id or self.context.run_id or f"adhoc-{uuid.uuid4().hex}"
        self.segments = segments
        self.meta_wait_s = meta_wait_s
        #: Compressed bytes per yielded chunk (at least; one page may add more).
        self.chunk_size = chunk_size
        #: Items per scan call (``Limit``); None lets DynamoDB fill 1 MB pages.
        self.page_size = page_size
        self._lock = threading.Lock()
        self._tables: dict[tuple[str, str], _TableState] = {}

    def _aws(self, what: str, fn: Callable[[], Any]) -> Any:
        return call_aws(what, fn)

    def list_items(self) -> Iterator[ExportItem]:
        """Per table, the data item then its meta item (the meta waits for the data)."""
        for region in self.account.regions:
            client = self.account.client("dynamodb", region)
            paginator = client.get_paginator("list_tables")
            for page in self._aws(f"list DynamoDB tables in {region}", paginator.paginate):
                for name in page["TableNames"]:
                    description = self._describe(region, name)
                    with self._lock:
                        self._tables[(region, name)] = _TableState(description)
                    yield from self._items(region, description)

    def _describe(self, region: str, name: str) -> dict[str, Any]:
        client = self.account.client("dynamodb", region)
        table: dict[str, Any] = self._aws(
            f"describe DynamoDB table {name} in {region}",
            lambda: client.describe_table(TableName=name)["Table"],
        )
        return table

    def _items(self, region: str, description: Mapping[str, Any]) -> Iterator[ExportItem]:
        name = description["TableName"]
        arn = description.get("TableArn", f"{region}/{name}")
        table_id = description.get("TableId", "")
        data_key = f"dynamodb/{region}/{name}.jsonl.gz"
        for part, dest_key in (("data", data_key), ("meta", f"dynamodb/{region}/{name}.meta.json")):
            source = {
                "kind": self.kind,
                "region": region,
                "table": name,
                "table_arn": arn,
                "part": part,
            }
            item = self.new_item(
                idem_key=f"dynamodb:{arn}:{table_id}:{self.run_id}:{part}",
                dest_key=dest_key,
                size=None,
                source=source,
            )
            # The meta describes the data file as written: the journal keeps
            # the data's figures, and the meta is written again with the data.
            if part == "data":
                yield replace(item, keeps_record=True)
            else:
                yield replace(item, depends_on=data_key)

    def item_settled(self, item: ExportItem, status: str) -> None:
        """A settled data item releases its waiting meta: with its figures once
        verified everywhere (or recalled), without them when it failed."""
        if item.source.get("part") != "data":
            return
        state = self._state(item)
        if status == "verified":
            state.result = state.attempt
        state.verified.set()

    def recall(self, item: ExportItem, record: Mapping[str, Any]) -> None:
        """A data file verified by an earlier process of this run: its meta is
        written from the figures the journal kept, without scanning again."""
        if item.source.get("part") != "data":
            return
        try:
            result = _DataResult(
                item_count=int(record["item_count"]),
                size=int(record["size"]),
                sha256=str(record["sha256"]),
            )
        except (KeyError, TypeError, ValueError):
            return  # not a record of ours: the meta then says its data was not read
        self._state(item).result = result

    def _state(self, item: ExportItem) -> _TableState:
        region, name = str(item.source["region"]), str(item.source["table"])
        with self._lock:
            state = self._tables.get((region, name))
        if state is None:
            description = self._describe(region, name)
            with self._lock:
                state = self._tables.setdefault((region, name), _TableState(description))
        return state

    def open(self, item: ExportItem) -> SourceStream:
        """Open the data (a fresh scan per call) or meta item of a table.

        The meta item blocks until the same table's data stream has been
        verified by this exporter, at most ``meta_wait_s`` seconds, then
        raises ``RetryableError``. Retry-safe: yes.
        """
        state = self._state(item)
        region, name = str(item.source["region"]), str(item.source["table"])
        if item.source["part"] == "data":
            client = self.account.client("dynamodb", region)
            return _ScanStream(
                client,
                name,
                state,
                segments=self.segments,
                chunk_size=self.chunk_size,
                page_size=self.page_size,
            )
        if not state.verified.wait(self.meta_wait_s):
            raise RetryableError(
                f"meta of DynamoDB table {name} in {region} waits for its data file, which "
                f"was not verified within {self.meta_wait_s:.0f}s; export the data item first"
            )
        result = state.result
        if result is None:
            # The data item failed (its own error says why): nothing to describe.
            raise FatalError(
                f"meta of DynamoDB table {name} in {region} describes its data file, which "
                "was not exported (see that item's error); `exitplan resume` exports both"
            )
        meta = table_meta(state.description, region)
        meta["item_count"] = result.item_count
        meta["data"] = {
            "key": f"dynamodb/{region}/{name}.jsonl.gz",
            "size": result.size,
            "sha256": result.sha256,
            "encoding": "gzip; JSON Lines; DynamoDB typed JSON, binary as base64",
        }
        meta["scan"] = {"total_segments": self.segments, "consistent_read": False}
        data = (json.dumps(meta, sort_keys=True, indent=1) + "\n").encode()
        return _MetaStream(data)


# ---------------------------------------------------------------------------
# Restore: proves an export can be loaded back.
# ---------------------------------------------------------------------------


def _chunks(source: bytes | IO[bytes] | Iterable[bytes]) -> Iterator[bytes]:
    if isinstance(source, bytes | bytearray):
        yield bytes(source)
    elif isinstance(source, io.IOBase) or hasattr(source, "read"):
        reader: IO[bytes] = source  # type: ignore[assignment]
        while chunk := reader.read(_CHUNK):
            yield chunk
    else:
        yield from source


def _lines(source: bytes | IO[bytes] | Iterable[bytes], sha: Any) -> Iterator[bytes]:
    decompressor = zlib.decompressobj(31)
    tail = b""
    for chunk in _chunks(source):
        sha.update(chunk)
        data = tail + decompressor.decompress(chunk)
        *complete, tail = data.split(b"\n")
        yield from complete
    tail += decompressor.flush()
    if tail.strip():
        yield tail


def restore_table(
    client: Any,
    table_name: str,
    jsonl_gz: bytes | IO[bytes] | Iterable[bytes],
    meta: Mapping[str, Any],
) -> int:
    """Create ``table_name`` from ``meta`` and write every item of the export into it.

    ``jsonl_gz`` is the data file as bytes, a binary file object or an
    iterable of chunks; it is streamed, never held whole. Returns the number
    of items written. Raises ``ChecksumMismatch`` when the data's sha256 or
    item count differs from ``meta`` (checked at the end: the table then holds
    what was read), ``botocore`` ``ResourceInUseException`` when the table
    exists. Not retry-safe as a whole: delete the table before calling again.
    """
    kwargs: dict[str, Any] = {
        "TableName": table_name,
        "KeySchema": meta["key_schema"],
        "AttributeDefinitions": meta["attribute_definitions"],
        "BillingMode": meta["billing_mode"],
    }
    if meta["billing_mode"] == "PROVISIONED":
        kwargs["ProvisionedThroughput"] = meta["provisioned_throughput"]
    for field_name, arg in (
        ("global_secondary_indexes", "GlobalSecondaryIndexes"),
        ("local_secondary_indexes", "LocalSecondaryIndexes"),
    ):
        indexes = [dict(ix) for ix in meta.get(field_name, [])]
        if meta["billing_mode"] == "PROVISIONED" and arg == "GlobalSecondaryIndexes":
            for ix in indexes:
                ix.setdefault("ProvisionedThroughput", meta["provisioned_throughput"])
        if indexes:
            kwargs[arg] = indexes
    client.create_table(**kwargs)
    client.get_waiter("table_exists").wait(TableName=table_name)

    sha = hashlib.sha256()
    written = 0
    batch: list[dict[str, Any]] = []

    def flush() -> None:
        requests: dict[str, Any] = {table_name: batch}
        # Unprocessed items come back under throttling; the client's own
        # retry mode backs off between these calls.
        for _ in range(20):
            response = client.batch_write_item(RequestItems=requests)
            requests = response.get("UnprocessedItems") or {}
            if not requests:
                return
        raise RetryableError(f"DynamoDB kept items of {table_name} unprocessed after 20 tries")

    for line in _lines(jsonl_gz, sha):
        if not line.strip():
            continue
        doc = json.loads(line)
        batch.append({"PutRequest": {"Item": {k: decode_value(v) for k, v in doc.items()}}})
        written += 1
        if len(batch) == 25:  # BatchWriteItem's limit
            flush()
            batch = []
    if batch:
        flush()

    expected_sha = meta.get("data", {}).get("sha256")
    if expected_sha and sha.hexdigest() != expected_sha:
        raise ChecksumMismatch(
            f"data for {table_name} has sha256 {sha.hexdigest()}, meta says {expected_sha}"
        )
    if written != meta.get("item_count", written):
        raise ChecksumMismatch(
            f"restored {written} items into {table_name}, meta says {meta['item_count']}"
        )
    return written


def read_jsonl_gz(data: bytes) -> list[dict[str, Any]]:
    """Every line of a (small) data file as typed JSON; for tests and spot checks."""
    text = gzip.decompress(data).decode()
    return [json.loads(line) for line in text.splitlines() if line]
