"""`exitplan export` on a Dask cluster of two worker processes, against a moto server
seeded with the sandbox's account: the journal stays the only truth, written by
the coordinator alone, whatever dies.

- the sandbox-shaped export (``--workers 2``: exitplan's own LocalCluster)
  completes, every object byte-identical;
- one worker SIGKILLed mid-run: nothing is lost and nothing is published
  twice (the destination bucket is versioned: a second write of a key would
  be a second version);
- the coordinator SIGKILLed, then ``exitplan resume``: no verified item is
  copied again.

The two kills run on a cluster exitplan did not start (Dask's defaults: a
lost worker's tasks are run again by the scheduler) against a smaller bucket
in a moto process of its own, so each takes seconds, not minutes.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.age import generate_identity
from orchestrator.export.exporters.s3 import destination_key
from orchestrator.sandbox.account import SANDBOX_REGION, seed_microblog, seed_moto_random
from providers.aws import AwsAccount
from tests.support.dask_cluster import Cluster, dask_cluster
from tests.support.moto_process import moto_server_process

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
#: Kinds the sandbox-shaped export takes (rds needs PostgreSQL; its own tests cover it).
KINDS = "s3,dynamodb,route53,ec2,ebs,secrets"
DEST_BUCKET = "dask-offsite"


@pytest.fixture(scope="module")
def source(moto_endpoint: str) -> str:
    seed_moto_random(endpoint_url=moto_endpoint)
    seed_microblog(AwsAccount(regions=(SANDBOX_REGION,), endpoint_url=moto_endpoint))
    return moto_endpoint


SMALL_BUCKET = "kill-workload"
SMALL_COUNT = 400


@pytest.fixture(scope="module")
def small_source(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """400 objects of 2 to 20 KiB in a moto server of its own."""
    with moto_server_process(tmp_path_factory.mktemp("small") / "moto.log") as url:
        s3 = AwsAccount(regions=["us-east-1"], endpoint_url=url).client("s3")
        s3.create_bucket(Bucket=SMALL_BUCKET)
        for index in range(SMALL_COUNT):
            size = 2048 + (index * 7919) % (18 * 1024)
            seed = hashlib.sha256(str(index).encode()).digest()
            body = (seed * (size // 32 + 1))[:size]
            s3.put_object(Bucket=SMALL_BUCKET, Key=f"photos/{index:04d}.jpg", Body=body)
        yield url


@pytest.fixture(scope="module")
def offsite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A versioned bucket at a moto server of its own (its state apart from the source's)."""
    with moto_server_process(tmp_path_factory.mktemp("offsite") / "moto.log") as url:
        s3 = AwsAccount(regions=["us-east-1"], endpoint_url=url).client("s3")
        s3.create_bucket(Bucket=DEST_BUCKET)
        s3.put_bucket_versioning(Bucket=DEST_BUCKET, VersioningConfiguration={"Status": "Enabled"})
        yield url


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """A cluster exitplan did not start: Dask's default, a lost worker's tasks rerun."""
    # Credentials reach workers from their environment (never in task arguments).
    os.environ.setdefault("DEST_KEY_ID", "testing")
    os.environ.setdefault("DEST_SECRET", "testing")
    with dask_cluster(workers=2, threads=4) as running:
        yield running


def source_objects(endpoint: str) -> dict[str, str]:
    """Destination key -> sha256 of every object version in the source account."""
    s3 = AwsAccount(regions=["us-east-1"], endpoint_url=endpoint).client("s3")
    found = {}
    for bucket in (b["Name"] for b in s3.list_buckets()["Buckets"]):
        for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
            for version in page.get("Versions", []):
                vid = version.get("VersionId")
                vid = None if vid in (None, "null") else vid
                body = s3.get_object(
                    Bucket=bucket, Key=version["Key"], **({"VersionId": vid} if vid else {})
                )["Body"].read()
                key = destination_key(bucket, version["Key"], vid, bool(version["IsLatest"]))
                found[key] = hashlib.sha256(body).hexdigest()
    return found


def config(
    work: Path, endpoint: str, *, scheduler: str | None = None, offsite: str | None = None
) -> Path:
    work.mkdir(parents=True, exist_ok=True)
    recipient = generate_identity(work / "identity.age")
    transfer = f"transfer: {{executor: dask, scheduler: {scheduler}}}\n" if scheduler else ""
    if offsite:
        port = offsite.rsplit(":", 1)[1]
        destination = (
            "  - name: offsite\n"
            "    storage: {driver: s3, host: 127.0.0.1, port: "
            f"{port}, secure: false, container: {DEST_BUCKET},\n"
            '              key: "${DEST_KEY_ID}", secret: "${DEST_SECRET}"}\n'
        )
    else:
        destination = (
            "  - name: vault\n"
            "    storage: {driver: local, path: ./vault}\n"
            f'    encrypt: {{recipients: ["{recipient}"]}}\n'
        )
    path = work / "exitplan.yaml"
    path.write_text(
        f'source:\n  aws: {{regions: [{SANDBOX_REGION}], endpoint_url: "{endpoint}"}}\n'
        f"destinations:\n{destination}{transfer}"
    )
    return path


def exitplan(work: Path, *args: str) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "DEST_KEY_ID": "testing",
        "DEST_SECRET": "testing",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", *args, "--output", "json", "--quiet"],
        cwd=work,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen[str], timeout: float = 300) -> tuple[int, dict[str, Any]]:
    out, err = process.communicate(timeout=timeout)
    try:
        return process.returncode, json.loads(out)
    except ValueError:
        raise AssertionError(f"exit {process.returncode}, no report: {err[-3000:]}") from None


def verified(journal: Path) -> set[tuple[str, str]]:
    """(destination, key) of every item the journal calls verified, read as `status` does."""
    try:
        with sqlite3.connect(f"file:{journal}?mode=ro", uri=True) as db:
            return set(db.execute("SELECT destination, dest_key FROM items WHERE state='verified'"))
    except sqlite3.OperationalError:  # not written yet
        return set()


def wait_until(predicate: Any, process: subprocess.Popen[str], what: str) -> None:
    deadline = time.monotonic() + 240
    while not predicate():
        assert process.poll() is None, f"exitplan ended before {what}: {process.stderr.read()}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)  # polling the journal another process writes


def test_the_sandbox_shaped_export_on_two_local_workers_is_byte_identical(source, tmp_path):
    work = tmp_path / "run"
    path = config(work, source)
    code, report = finish(
        exitplan(work, "export", "--config", str(path), "--workers", "2", "--only", KINDS)
    )
    assert code == 0, report.get("steps")
    assert report["status"] == "done" and not report.get("failed")
    expected = source_objects(source)
    vault = work / "vault"
    for key, sha256 in expected.items():
        assert hashlib.sha256((vault / key).read_bytes()).hexdigest() == sha256, key
    # Every other kind is there too, each file as the manifest says.
    rows = [json.loads(line) for line in (vault / "manifest" / "manifest.jsonl").open()]
    assert {row["kind"] for row in rows} == set(KINDS.split(","))
    assert len(rows) > len(expected)
    for row in rows:
        data = (vault / row["key"]).read_bytes()
        assert len(data) == row["size"] and hashlib.sha256(data).hexdigest() == row["sha256"]
    settings = json.loads(
        sqlite3.connect(work / ".exitplan" / "journal.sqlite")
        .execute("SELECT invocation FROM runs")
        .fetchone()[0]
    )
    assert settings["workers"] == 2  # resume restores it


def test_a_worker_killed_mid_run_loses_nothing_and_publishes_nothing_twice(
    small_source, offsite, cluster, tmp_path
):
    work = tmp_path / "run"
    path = config(work, small_source, scheduler=cluster.address, offsite=offsite)
    journal = work / ".exitplan" / "journal.sqlite"
    process = exitplan(work, "export", "--config", str(path), "--only", "s3")
    wait_until(lambda: len(verified(journal)) >= 80, process, "80 objects verified")
    killed = cluster.kill_a_worker()
    code, report = finish(process)
    assert code == 0, (killed, report.get("steps"), report.get("failed"))
    expected = source_objects(small_source)
    assert len(expected) == SMALL_COUNT
    assert {key for _, key in verified(journal)} >= set(expected)
    dest = AwsAccount(regions=["us-east-1"], endpoint_url=offsite).client("s3")
    versions: dict[str, int] = {}
    for page in dest.get_paginator("list_object_versions").paginate(Bucket=DEST_BUCKET):
        for version in page.get("Versions", []):
            versions[version["Key"]] = versions.get(version["Key"], 0) + 1
        assert not page.get("DeleteMarkers")
    twice = {key: n for key, n in versions.items() if n > 1}
    assert not twice, f"published more than once: {sorted(twice)[:10]}"
    for key, sha256 in expected.items():
        body = dest.get_object(Bucket=DEST_BUCKET, Key=key)["Body"].read()
        assert hashlib.sha256(body).hexdigest() == sha256, key


def test_the_coordinator_killed_and_resumed_copies_no_verified_item_again(
    small_source, cluster, tmp_path
):
    work = tmp_path / "run"
    path = config(work, small_source, scheduler=cluster.address)
    journal = work / ".exitplan" / "journal.sqlite"
    process = exitplan(work, "export", "--config", str(path), "--only", "s3")
    wait_until(lambda: len(verified(journal)) >= 100, process, "100 objects verified")
    process.send_signal(signal.SIGKILL)
    process.wait()
    vault = work / "vault"
    before = {key: (vault / key).stat() for _, key in verified(journal)}
    expected = source_objects(small_source)
    assert 100 <= len(before) < len(expected)

    code, report = finish(exitplan(work, "resume", "--config", str(path)))
    assert code == 0, report.get("steps")
    for key, stat in before.items():
        after = (vault / key).stat()
        assert (after.st_ino, after.st_mtime_ns) == (stat.st_ino, stat.st_mtime_ns), (
            f"{key} was verified before the kill and written again"
        )
    for key, sha256 in expected.items():
        assert hashlib.sha256((vault / key).read_bytes()).hexdigest() == sha256, key
