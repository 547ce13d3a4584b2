"""Endings say only what is true: no traceback for an expected failure, and after an
internal error, what the journal really holds (checked, never assumed)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import boto3
import botocore.config
import pytest

from orchestrator.cli import main
from orchestrator.clock import SystemClock
from tests.support.moto_server import free_port

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
BUCKET = "endings"


def exitplan(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def write_config(directory: Path, endpoint: str) -> Path:
    path = directory / "exitplan.yaml"
    path.write_text(
        f"""\
source:
  aws: {{regions: [us-east-1], endpoint_url: "{endpoint}"}}
destinations:
  - name: vault
    storage: {{driver: local, path: ./vault}}
"""
    )
    return path


@pytest.fixture
def unreachable(tmp_path: Path) -> Path:
    """A config whose source endpoint nothing listens on."""
    return write_config(tmp_path, f"http://127.0.0.1:{free_port()}")


def test_an_unreachable_source_ends_without_a_traceback(unreachable, tmp_path):
    result = exitplan(tmp_path, "migrate", "--config", str(unreachable), "--deadline", "+1h")
    assert result.returncode in (1, 2)  # failed, or refused before anything was written
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    said = result.stdout + result.stderr
    assert "Could not connect to the endpoint URL" in said or "cannot reach the source" in said
    # Where a run was started, the details are kept where a person can look them up.
    for log in (tmp_path / ".exitplan" / "runs").glob("*/exitplan.log"):
        assert "Traceback" in log.read_text()


def test_an_unreachable_source_is_an_error_not_an_internal_one(unreachable, tmp_path):
    result = exitplan(tmp_path, "inventory", "--config", str(unreachable))
    assert result.returncode in (1, 2)
    assert "exitplan: error: cannot reach the source" in result.stderr
    assert "internal error" not in result.stderr
    assert "journal" not in result.stderr  # inventory keeps none: nothing to claim
    assert "Traceback" not in result.stderr


class BreaksWhen(SystemClock):
    """The real clock, until ``broken()`` says so: then every reading fails (a bug)."""

    def __init__(self, broken) -> None:
        self.broken = broken

    def now(self) -> datetime:
        if self.broken():
            raise RuntimeError("the clock broke")
        return super().now()


@pytest.fixture
def reachable(tmp_path: Path, moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    s3 = boto3.client(
        "s3",
        endpoint_url=moto_endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=botocore.config.Config(s3={"addressing_style": "path"}),
    )
    if BUCKET not in [b["Name"] for b in s3.list_buckets()["Buckets"]]:
        s3.create_bucket(Bucket=BUCKET)
        for index in range(12):
            s3.put_object(
                Bucket=BUCKET, Key=f"k{index}", Body=hashlib.sha256(b"%d" % index).digest()
            )
    monkeypatch.chdir(tmp_path)
    return write_config(tmp_path, moto_endpoint)


def test_an_internal_error_before_anything_was_journaled_does_not_promise_a_resume(
    reachable, capsys
):
    readings = {"n": 0}

    def second_reading() -> bool:
        readings["n"] += 1
        return readings["n"] >= 2  # main's own first; the run's start is the second

    code = main(["export", "--config", str(reachable), "--quiet"], clock=BreaksWhen(second_reading))
    err = capsys.readouterr().err
    assert code == 1
    assert "exitplan: internal error: RuntimeError: the clock broke" in err
    assert "no run was recorded in the journal" in err
    assert "resume" not in err and "consistent" not in err


def test_an_internal_error_after_the_export_says_the_run_can_be_resumed_and_it_can(
    reachable, capsys
):
    manifest = reachable.parent / "vault" / "manifest" / "manifest.jsonl"
    code = main(
        ["export", "--config", str(reachable), "--quiet"], clock=BreaksWhen(manifest.exists)
    )
    err = capsys.readouterr().err
    assert code == 1
    assert "exitplan: internal error: RuntimeError: the clock broke" in err
    assert "items verified" in err and "`exitplan resume` carries it on" in err
    # The claim is true: resume finishes the run.
    assert main(["resume", "--config", str(reachable), "--quiet"]) == 0
