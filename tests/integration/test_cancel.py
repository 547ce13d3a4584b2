"""Cancellation: new work and retries stop at once, uploads are aborted, the journal stays true."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from orchestrator.clock import FrozenClock
from orchestrator.errors import Cancelled
from orchestrator.events import EventBus
from orchestrator.export.exporters.base import ExportContext, ExportItem, SourceStream
from orchestrator.export.exporters.s3 import S3Exporter
from orchestrator.export.transfer import Destination, TransferEngine, TransferSettings
from orchestrator.plan.priorities import Prioritizer
from orchestrator.run.cancel import CancelReason, CancelToken
from orchestrator.run.journal import Journal
from orchestrator.run.progress import RunProgress
from providers.aws import AwsAccount
from providers.storage import S3CompatibleObjectStore
from tests.support.moto_server import moto_server

BUCKET = "cancel-source"
BIG = 12 * 1024 * 1024


@pytest.fixture(scope="module")
def destination_endpoint() -> Iterator[str]:
    with moto_server() as url:
        yield url


@pytest.fixture(scope="module")
def source(moto_endpoint: str, destination_endpoint: str) -> AwsAccount:
    # Seeded after both servers started: starting a server empties moto's state.
    account = AwsAccount(regions=["us-east-1"], endpoint_url=moto_endpoint)
    s3 = account.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    s3.put_object(Bucket=BUCKET, Key="big.bin", Body=hashlib.sha256(b"x").digest() * (BIG // 32))
    return account


class CancellingExporter(S3Exporter):
    """The real exporter; pulls the plug after the first few MiB have streamed."""

    def __init__(self, account: AwsAccount, token: CancelToken) -> None:
        super().__init__(account, tier_of=Prioritizer([]), context=ExportContext(run_id="c"))
        self.token = token

    def open(self, item: ExportItem) -> SourceStream:
        inner = super().open(item)
        token = self.token

        class Stream(SourceStream):
            def __iter__(self) -> Iterator[bytes]:
                for index, chunk in enumerate(inner):
                    if index == 6:
                        token.cancel(CancelReason.INTERRUPTED)
                    yield chunk

            def verify(self, *, size: int, md5_hex: str, sha256_hex: str) -> str | None:
                return inner.verify(size=size, md5_hex=md5_hex, sha256_hex=sha256_hex)

            def close(self) -> None:
                inner.close()

        return Stream()


def test_cancel_aborts_the_multipart_upload_and_leaves_the_item_in_flight(
    source, destination_endpoint, tmp_path: Path
):
    store = S3CompatibleObjectStore(
        "offsite",
        host="127.0.0.1",
        port=int(destination_endpoint.rsplit(":", 1)[1]),
        secure=False,
        container="cancel-dest",
        key="testing",
        secret="testing",
    )
    journal = Journal(tmp_path / "journal.sqlite")
    run_id = journal.start_run("migrate", None, {})
    token = CancelToken()
    events = EventBus()
    clock = FrozenClock(datetime(2021, 1, 10, tzinfo=UTC))
    engine = TransferEngine(
        destinations=[Destination("offsite", store)],
        journal=journal,
        run_id=run_id,
        events=events,
        progress=RunProgress(
            run_id=run_id, journal=journal, events=events, clock=clock, deadline=None
        ),
        settings=TransferSettings(concurrency=2),
        cancel=token,
    )
    with pytest.raises(Cancelled):
        engine.export(CancellingExporter(source, token))
    engine.close()
    dest = AwsAccount(regions=["us-east-1"], endpoint_url=destination_endpoint).client("s3")
    assert dest.list_multipart_uploads(Bucket="cancel-dest").get("Uploads", []) == []
    assert dest.list_objects_v2(Bucket="cancel-dest").get("KeyCount", 0) == 0
    assert journal.item_counts(run_id)["in-flight"] == 1
    assert journal.item_counts(run_id)["verified"] == 0
