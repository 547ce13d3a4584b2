"""A run killed between a data item and the item describing it can always be resumed.

DynamoDB writes a table's data file, then its meta file (item count and the
data's sha256); RDS writes dump.tar, then dump.sha256.json. The second needs
what reading the first found. Killed between the two, the data item is
verified and a resume skips it: the journal keeps what the second needs, so
the resume writes it without reading the data again, and the two agree.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from orchestrator.clock import SystemClock
from orchestrator.events import EventBus, ItemFinished
from orchestrator.export.exporters.base import ExportContext, ExportItem
from orchestrator.export.exporters.dynamodb import DynamoDbExporter, read_jsonl_gz, restore_table
from orchestrator.export.exporters.rds import RdsExporter
from orchestrator.export.transfer import Destination, TransferEngine, TransferSettings
from orchestrator.plan.priorities import Prioritizer
from orchestrator.postgres import LocalCluster
from orchestrator.run.journal import Journal
from orchestrator.run.progress import RunProgress
from providers.aws import AwsAccount
from providers.storage import LocalObjectStore
from tests.integration.test_export_rds import (  # noqa: F401 - fixtures
    INSTANCE,
    REGION,
    aws,
    base_env,
    make_instance,
    source,
)
from tests.support.aws import moto_account
from tests.support.engine import ExportHarness
from tests.support.postgres import (  # noqa: F401 - fixtures
    module_postgres_cluster,
    pg_tools,
    require_postgres,
)

REPO = Path(__file__).resolve().parents[2]
TABLE = "sessions"
DATA_KEY = f"dynamodb/us-east-1/{TABLE}.jsonl.gz"
META_KEY = f"dynamodb/us-east-1/{TABLE}.meta.json"


def make_table(client: Any, count: int = 120) -> None:
    client.create_table(
        TableName=TABLE,
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    for index in range(count):
        client.put_item(
            TableName=TABLE,
            Item={"id": {"S": f"session-{index:04d}"}, "user": {"N": str(index % 17)}},
        )


class DataOnly(DynamoDbExporter):
    """The first process: killed after the data item is verified, before its meta is read."""

    def list_items(self) -> Iterator[ExportItem]:
        for item in super().list_items():
            if item.source.get("part") == "data":
                yield item


def assert_meta_describes_the_data(vault: Path, count: int) -> dict[str, Any]:
    data = (vault / DATA_KEY).read_bytes()
    meta = json.loads((vault / META_KEY).read_text())
    assert meta["data"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert meta["data"]["size"] == len(data)
    assert meta["item_count"] == count == len(read_jsonl_gz(data))
    return meta


@pytest.fixture
def account(monkeypatch: pytest.MonkeyPatch) -> Iterator[AwsAccount]:
    with moto_account(monkeypatch, ["us-east-1"]) as account:
        yield account


def test_dynamodb_meta_is_written_on_resume_from_what_the_journal_kept(account, tmp_path):
    make_table(account.client("dynamodb"))
    first = ExportHarness(tmp_path)
    first.export(DataOnly(account, tier_of=Prioritizer([]), context=ExportContext(run_id="run-1")))
    assert first.statuses() == {"verified": 1}
    data_before = (tmp_path / "vault" / DATA_KEY).stat()
    first.journal.close()

    # A fresh process: a new journal connection, a new exporter of the same run.
    resumed = ExportHarness(tmp_path)
    exporter = DynamoDbExporter(
        account, tier_of=Prioritizer([]), context=ExportContext(run_id="run-1")
    )
    resumed.export(exporter)
    assert resumed.statuses() == {"skipped": 1, "verified": 1}
    # The data file was not read or written again; the meta describes it.
    assert (tmp_path / "vault" / DATA_KEY).stat().st_mtime_ns == data_before.st_mtime_ns
    meta = assert_meta_describes_the_data(tmp_path / "vault", 120)
    target = account.client("dynamodb", "us-east-1")
    chunks = iter([(tmp_path / "vault" / DATA_KEY).read_bytes()])
    assert restore_table(target, "sessions-restored", chunks, {**meta}) == 120


def test_dynamodb_data_copied_again_takes_its_meta_with_it(account, tmp_path):
    """A data file found damaged and copied again gets a new meta: never an old one."""
    make_table(account.client("dynamodb"), count=40)
    run = ExportHarness(tmp_path)
    run.export(
        DynamoDbExporter(account, tier_of=Prioritizer([]), context=ExportContext(run_id="r"))
    )
    assert run.statuses() == {"verified": 2}
    account.client("dynamodb").put_item(
        TableName=TABLE, Item={"id": {"S": "late-arrival"}, "user": {"N": "1"}}
    )
    assert run.journal.mark_damaged("vault", DATA_KEY, "verify: changed")
    run.seen.clear()
    run.export(
        DynamoDbExporter(account, tier_of=Prioritizer([]), context=ExportContext(run_id="r"))
    )
    assert run.statuses() == {"verified": 2}
    assert_meta_describes_the_data(tmp_path / "vault", 41)


@pytest.fixture(scope="module")
def table_endpoint(moto_endpoint: str) -> str:
    client = boto3.client(
        "dynamodb",
        endpoint_url=moto_endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    make_table(client, count=300)
    return moto_endpoint


def export_process(endpoint: str, work: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {
        **{k: v for k, v in os.environ.items() if k != "AWS_PROFILE"},
        "PYTHONPATH": str(REPO),
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }
    return subprocess.run(
        [
            *(sys.executable, "-m", "tests.support.kill_points", "--endpoint", endpoint),
            *("--work", str(work), "--kind", "dynamodb", *extra),
        ],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_sigkill_between_a_table_and_its_meta_then_resume_finishes(table_endpoint, tmp_path):
    killed = export_process(table_endpoint, tmp_path, "--kill-after-verified", DATA_KEY)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert (tmp_path / "vault" / DATA_KEY).is_file()
    assert not (tmp_path / "vault" / META_KEY).exists()

    resumed = export_process(table_endpoint, tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert_meta_describes_the_data(tmp_path / "vault", 300)
    assert not list((tmp_path / "vault").glob("*/.exitplan-partial/*"))


# -- RDS: dump.tar, then dump.sha256.json ----------------------------------------


class DumpOnly(RdsExporter):
    """The first process: killed after dump.tar is verified, before its checksums."""

    def list_items(self) -> Iterator[ExportItem]:
        for item in super().list_items():
            if item.source.get("part") != "checksums":
                yield item


def export_rds(tmp: Path, account: AwsAccount, exporter_cls: type[RdsExporter]) -> dict[str, str]:
    """One process of a run (its journal and run id carry over): item name -> status."""
    journal = Journal(tmp / "journal.sqlite")
    run_file = tmp / "run_id"
    if run_file.exists():
        run_id = run_file.read_text()
        journal.reopen_run(run_id)
    else:
        run_id = journal.start_run("export", None, {})
        run_file.write_text(run_id)
    events = EventBus()
    seen: dict[str, str] = {}
    events.subscribe(
        lambda e: (
            seen.__setitem__(e.key.rsplit("/", 1)[1], e.status)
            if isinstance(e, ItemFinished)
            else None
        )
    )
    engine = TransferEngine(
        destinations=[Destination("vault", LocalObjectStore("vault", tmp / "vault"))],
        journal=journal,
        run_id=run_id,
        events=events,
        progress=RunProgress(
            run_id=run_id, journal=journal, events=events, clock=SystemClock(), deadline=None
        ),
        settings=TransferSettings(concurrency=4, max_attempts=2, max_backoff_s=0.01),
    )
    (tmp / "scratch").mkdir(exist_ok=True)
    context = ExportContext(run_id=run_id, scratch_dir=tmp / "scratch", env=base_env())
    try:
        engine.export(exporter_cls(account, tier_of=Prioritizer([]), context=context, jobs=2))
    finally:
        engine.close()
        journal.close()
    return seen


def test_rds_checksums_are_written_on_resume_from_what_the_journal_kept(
    aws,  # noqa: F811
    source: LocalCluster,  # noqa: F811
    tmp_path,
):
    make_instance(aws, source)
    first = export_rds(tmp_path, aws, DumpOnly)
    assert first == {"instance.json": "verified", "dump.tar": "verified"}
    exported = tmp_path / "vault" / "rds" / REGION / INSTANCE
    tar = exported / "dump.tar"
    tar_before = tar.stat().st_mtime_ns

    resumed = export_rds(tmp_path, aws, RdsExporter)  # a fresh process of the same run
    assert resumed == {
        "instance.json": "skipped",
        "dump.tar": "skipped",
        "dump.sha256.json": "verified",
    }
    assert tar.stat().st_mtime_ns == tar_before  # not dumped again
    checksums = json.loads((exported / "dump.sha256.json").read_text())
    assert checksums["tar"]["sha256"] == hashlib.sha256(tar.read_bytes()).hexdigest()
    assert checksums["tar"]["size"] == tar.stat().st_size
    assert checksums["instance_id"] == INSTANCE and checksums["region"] == REGION
    assert checksums["restore_check"]["performed"] is True
    assert set(checksums["files"]) and all(
        len(f["sha256"]) == 64 for f in checksums["files"].values()
    )
