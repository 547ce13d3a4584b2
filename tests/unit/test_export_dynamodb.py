"""DynamoDB tables export as streamed gzip JSON Lines that restore to the same items."""

from __future__ import annotations

import gzip
import hashlib
import json
import threading
import zlib
from collections.abc import Generator, Iterator
from decimal import Decimal
from typing import Any

import pytest

from orchestrator.errors import ChecksumMismatch, RetryableError
from orchestrator.export.exporters.base import ExportItem, load_exporter
from orchestrator.export.exporters.dynamodb import (
    META_FORMAT,
    DynamoDbExporter,
    read_jsonl_gz,
    restore_table,
)
from providers.aws import AwsAccount
from tests.support.aws import moto_account
from tests.unit.test_export_route53 import FixedTier

REGIONS = ["us-east-1", "eu-west-1"]
ITEMS = 1200


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[AwsAccount]:
    with moto_account(monkeypatch, REGIONS) as account:
        yield account


def typed_item(i: int) -> dict[str, Any]:
    """A low-level item with every attribute type, some only on some items."""
    item: dict[str, Any] = {
        "pk": {"S": f"user#{i % 97}"},
        "sk": {"N": str(i)},
        "name": {"S": f'name {i} \u00e9\u4e2d "quoted"\n'},
        "score": {"N": str(Decimal(i) / 7)[:12]},
        "active": {"BOOL": i % 2 == 0},
        "blob": {"B": bytes([i % 256, 0, 255]) * (1 + i % 5)},
    }
    if i % 3 == 0:
        item["tags"] = {"SS": [f"t{i}", "common"]}
        item["nums"] = {"NS": [str(i), "1.5"]}
        item["blobs"] = {"BS": [b"\x00\x01", bytes([i % 256])] if i % 256 else [b"\x00\x01"]}
    if i % 5 == 0:
        item["nested"] = {
            "M": {
                "l": {"L": [{"S": "x"}, {"N": "1"}, {"B": b"\xfe"}, {"NULL": True}]},
                "m": {"M": {"deep": {"BOOL": False}}},
            }
        }
        item["nothing"] = {"NULL": True}
    return item


def make_table(client: Any, name: str = "orders", count: int = ITEMS) -> None:
    client.create_table(
        TableName=name,
        KeySchema=[
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ],
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "N"},
            {"AttributeName": "name", "AttributeType": "S"},
        ],
        GlobalSecondaryIndexes=[
            {
                "IndexName": "by-name",
                "KeySchema": [{"AttributeName": "name", "KeyType": "HASH"}],
                "Projection": {"ProjectionType": "KEYS_ONLY"},
            }
        ],
        LocalSecondaryIndexes=[
            {
                "IndexName": "by-name-local",
                "KeySchema": [
                    {"AttributeName": "pk", "KeyType": "HASH"},
                    {"AttributeName": "name", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            }
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    for start in range(0, count, 25):
        batch = [
            {"PutRequest": {"Item": typed_item(i)}} for i in range(start, min(start + 25, count))
        ]
        client.batch_write_item(RequestItems={name: batch})


def all_items(client: Any, table: str) -> list[dict[str, Any]]:
    pages = client.get_paginator("scan").paginate(TableName=table)
    return [item for page in pages for item in page["Items"]]


def canonical(item: dict[str, Any]) -> str:
    """An item as a comparable string; sets compared as sets (DynamoDB keeps no order)."""

    def norm(value: dict[str, Any]) -> Any:
        ((tag, inner),) = value.items()
        if tag in ("SS", "NS"):
            return [tag, sorted(inner)]
        if tag == "BS":
            return [tag, sorted(bytes(b).hex() for b in inner)]
        if tag == "B":
            return [tag, bytes(inner).hex()]
        if tag == "M":
            return [tag, {k: norm(v) for k, v in inner.items()}]
        if tag == "L":
            return [tag, [norm(v) for v in inner]]
        return [tag, inner]

    return json.dumps({k: norm(v) for k, v in item.items()}, sort_keys=True)


def read_item(exporter: DynamoDbExporter, item: ExportItem) -> bytes:
    stream = exporter.open(item)
    data = b"".join(stream)
    stream.verify(
        size=len(data),
        md5_hex=hashlib.md5(data).hexdigest(),
        sha256_hex=hashlib.sha256(data).hexdigest(),
    )
    # As the engine does once the item is published at every destination.
    exporter.item_settled(item, "verified")
    return data


def test_table_exports_and_restores_to_the_same_items(aws: AwsAccount) -> None:
    source = aws.client("dynamodb", "eu-west-1")
    make_table(source)
    exporter = load_exporter("dynamodb")(aws, tier_of=FixedTier("important"))
    assert isinstance(exporter, DynamoDbExporter)

    items = list(exporter.list_items())
    assert [i.dest_key for i in items] == [
        "dynamodb/eu-west-1/orders.jsonl.gz",
        "dynamodb/eu-west-1/orders.meta.json",
    ]
    assert all(i.tier == "important" and i.kind == "dynamodb" for i in items)
    data_item, meta_item = items
    data = read_item(exporter, data_item)
    meta = json.loads(read_item(exporter, meta_item))

    assert data[:2] == b"\x1f\x8b"  # gzip
    lines = read_jsonl_gz(data)
    assert len(lines) == ITEMS == meta["item_count"]
    assert any("B" in v for line in lines for v in line.values())  # binary as base64 text
    assert meta["format"] == META_FORMAT
    assert meta["data"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert meta["data"]["size"] == len(data)
    assert meta["billing_mode"] == "PAY_PER_REQUEST"
    assert [ix["IndexName"] for ix in meta["global_secondary_indexes"]] == ["by-name"]
    assert [ix["IndexName"] for ix in meta["local_secondary_indexes"]] == ["by-name-local"]
    assert {k["AttributeName"] for k in meta["key_schema"]} == {"pk", "sk"}

    # Restore into another table, streaming the file in small chunks.
    target = aws.client("dynamodb", "us-east-1")
    chunks = (data[i : i + 1000] for i in range(0, len(data), 1000))
    assert restore_table(target, "orders-restored", chunks, meta) == ITEMS
    restored = {canonical(i) for i in all_items(target, "orders-restored")}
    original = {canonical(i) for i in all_items(source, "orders")}
    assert len(original) == ITEMS
    assert restored == original
    described = target.describe_table(TableName="orders-restored")["Table"]
    assert described["GlobalSecondaryIndexes"][0]["IndexName"] == "by-name"


def test_restore_refuses_data_that_does_not_match_meta(aws: AwsAccount) -> None:
    client = aws.client("dynamodb", "us-east-1")
    make_table(client, count=30)
    exporter = DynamoDbExporter(aws, tier_of=FixedTier("x"), run_id="run-1")
    data_item, meta_item = [i for i in exporter.list_items() if i.source["table"] == "orders"]
    data = read_item(exporter, data_item)
    meta = json.loads(read_item(exporter, meta_item))
    other = gzip.compress(gzip.decompress(data).split(b"\n", 1)[1])  # one item fewer
    with pytest.raises(ChecksumMismatch, match="sha256"):
        restore_table(client, "copy", other, meta)


def test_data_is_streamed_in_chunks_not_materialised(aws: AwsAccount) -> None:
    client = aws.client("dynamodb", "us-east-1")
    make_table(client, count=ITEMS)
    scan_calls: list[int] = []
    client.meta.events.register("before-call.dynamodb.Scan", lambda **kw: scan_calls.append(1))
    # One segment of 25-item pages: 48 pages, so a reader that buffered the
    # whole table would have made every scan call before handing over a byte.
    exporter = DynamoDbExporter(
        aws, tier_of=FixedTier("x"), segments=1, page_size=25, chunk_size=4096
    )
    data_item = next(iter(exporter.list_items()))
    iterator = iter(exporter.open(data_item))
    first = next(iterator)
    calls_at_first_chunk = len(scan_calls)
    # The first chunk is a gzip prefix that already holds whole lines.
    assert zlib.decompressobj(31).decompress(first).count(b"\n") >= 1
    rest = list(iterator)
    total_pages = len(scan_calls)
    assert total_pages >= ITEMS // 25
    # Bounded: the first chunk comes after at most 16 chunk sizes of input
    # (~11 pages here) plus the queue (8 pages) and the pages in hand.
    assert calls_at_first_chunk <= 24 < total_pages
    assert len(rest) >= 2
    assert max(len(c) for c in [first, *rest]) < 64 * 1024
    assert len(read_jsonl_gz(first + b"".join(rest))) == ITEMS


def test_abandoned_stream_stops_its_scan_threads(aws: AwsAccount) -> None:
    make_table(aws.client("dynamodb", "us-east-1"), count=ITEMS)
    exporter = DynamoDbExporter(aws, tier_of=FixedTier("x"), segments=4)
    data_item = next(iter(exporter.list_items()))
    before = {t.name for t in threading.enumerate()}
    stream = exporter.open(data_item)
    iterator = iter(stream)
    next(iterator)
    assert isinstance(iterator, Generator)
    iterator.close()  # the engine gave up on this item (e.g. a destination failed)
    stream.close()
    leftover = {t.name for t in threading.enumerate()} - before
    assert not [n for n in leftover if n.startswith("dynamodb-scan-")]
    with pytest.raises(ChecksumMismatch, match="did not finish"):
        stream.verify(size=1, md5_hex="", sha256_hex="")


def test_meta_waits_for_verified_data(aws: AwsAccount) -> None:
    make_table(aws.client("dynamodb", "us-east-1"), count=10)
    exporter = DynamoDbExporter(aws, tier_of=FixedTier("x"), meta_wait_s=0)
    data_item, meta_item = list(exporter.list_items())
    with pytest.raises(RetryableError, match="waits for its data file"):
        exporter.open(meta_item)

    # Opened concurrently, as the engine may: the meta blocks until the data is verified.
    exporter = DynamoDbExporter(aws, tier_of=FixedTier("x"), meta_wait_s=60)
    data_item, meta_item = list(exporter.list_items())
    result: dict[str, Any] = {}
    reader = threading.Thread(target=lambda: result.update(meta=read_item(exporter, meta_item)))
    reader.start()
    data = read_item(exporter, data_item)
    reader.join(timeout=60)
    meta = json.loads(result["meta"])
    assert meta["item_count"] == 10
    assert meta["data"]["sha256"] == hashlib.sha256(data).hexdigest()


def test_idem_keys_differ_per_run_and_repeat_within_a_run(aws: AwsAccount) -> None:
    make_table(aws.client("dynamodb", "us-east-1"), count=1)

    def keys(**kwargs: Any) -> list[str]:
        exporter = DynamoDbExporter(aws, tier_of=FixedTier("x"), **kwargs)
        return [i.idem_key for i in exporter.list_items()]

    assert keys(run_id="run-1") == keys(run_id="run-1")  # a resume skips verified tables
    assert keys(run_id="run-1") != keys(run_id="run-2")  # a new run exports again
    assert keys() != keys()  # no run id: never skipped by mistake
    data_key, meta_key = keys(run_id="run-1")
    assert data_key != meta_key
    assert "arn:aws:dynamodb:us-east-1:" in data_key and data_key.endswith(":run-1:data")
