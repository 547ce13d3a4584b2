"""SIGKILL half-way through many small and a few large objects, then resume.

Nothing verified is copied again, and a large object caught half-way carries
on from the parts it had finished.
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
from pathlib import Path

import pytest

from providers.aws import AwsAccount

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
BUCKET = "resume-workload"
PART = 5 * 1024 * 1024
LARGE = 4 * PART + 12345  # five parts
SMALL_COUNT = 300


def body(key: str, size: int) -> bytes:
    seed = hashlib.sha256(key.encode()).digest()
    return (seed * (size // len(seed) + 1))[:size]


@pytest.fixture(scope="module")
def workload(moto_endpoint: str) -> dict[str, bytes]:
    s3 = AwsAccount(regions=["us-east-1"], endpoint_url=moto_endpoint).client("s3")
    s3.create_bucket(Bucket=BUCKET)
    objects = {f"0-video/{i}.mp4": body(f"v{i}", LARGE) for i in range(3)}
    objects.update(
        {
            f"photos/{i:04d}.jpg": body(f"p{i}", 4096 + (i * 7919) % 61440)
            for i in range(SMALL_COUNT)
        }
    )
    for key, data in objects.items():
        s3.put_object(Bucket=BUCKET, Key=key, Body=data)
    return objects


def query(journal: Path, sql: str) -> int:
    try:
        with sqlite3.connect(f"file:{journal}?mode=ro", uri=True) as db:
            return int(db.execute(sql).fetchone()[0] or 0)
    except sqlite3.OperationalError:  # not there yet
        return 0


def test_sigkill_then_resume_copies_nothing_verified_again(workload, moto_endpoint, tmp_path):
    config = tmp_path / "exitplan.yaml"
    config.write_text(
        f"""\
source:
  aws: {{regions: [us-east-1], endpoint_url: "{moto_endpoint}"}}
destinations:
  - {{name: vault, storage: {{driver: local, path: ./vault}}}}
transfer: {{concurrency: 8, part_size: 5MiB}}
"""
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "orchestrator.cli", "export", "--config", str(config)]
    total = sum(len(b) for b in workload.values())
    proc = subprocess.Popen(
        [*command, "--only", "s3", "--bwlimit", "8MiB", "--quiet"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    journal = tmp_path / ".exitplan" / "journal.sqlite"
    give_up = time.monotonic() + 240
    try:
        while query(journal, "SELECT SUM(copied_bytes) FROM progress") < total // 2:
            assert proc.poll() is None, f"exited early: {proc.stderr.read()[-2000:]}"
            assert time.monotonic() < give_up, "the export never got half-way"
            time.sleep(0.1)  # polling a condition, not waiting for time to pass
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    verified_bytes = query(journal, "SELECT SUM(size) FROM items WHERE state='verified'")
    verified_items = query(journal, "SELECT COUNT(*) FROM items WHERE state='verified'")
    parts_done = query(journal, "SELECT SUM(done_bytes) FROM parts")
    assert 0 < verified_bytes < total
    assert parts_done > 0, "no large object was caught half-way; the test proves nothing"

    resumed = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "resume", "--config", str(config),
         "--output", "json", "--quiet"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    s3 = next(k for k in json.loads(resumed.stdout)["kinds"] if k["kind"] == "s3")
    assert s3["complete"]
    # Everything verified before the kill is skipped: none of it moves again.
    assert s3["already_verified_items"] >= verified_items
    # What moves is what was not verified, less what was written of the large
    # objects; again at most what was on the wire since each part's last
    # checkpoint (4 MiB per worker) and the small objects in flight.
    left = total - verified_bytes - parts_done
    assert s3["copied_this_run_bytes"] <= left + 8 * 4 * 1024 * 1024
    for key, data in workload.items():
        assert (tmp_path / "vault" / "s3" / BUCKET / key).read_bytes() == data, key
