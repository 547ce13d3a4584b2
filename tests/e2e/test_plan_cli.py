"""`exitplan plan --deadline T` on the built-in sandbox, as a user runs it: a new process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]


def exitplan(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_plan_shows_per_kind_predictions_the_finish_and_the_margin(tmp_path):
    result = exitplan(tmp_path, "plan", "--deadline", "+2h", "--output", "json")
    assert result.returncode == 0, result.stderr[-3000:]
    plan = json.loads(result.stdout)["plan"]
    kinds = {(r["tier"], r["kind"]) for r in plan["rows"]}
    assert ("critical", "rds") in kinds and ("important", "s3") in kinds
    assert ("best-effort", "ebs") in kinds
    media = next(r for r in plan["rows"] if r["kind"] == "s3" and r["tier"] == "important")
    assert media["items"] == 2050 and media["bytes"] > 70 * 1024 * 1024
    assert media["predicted_p50_s"] <= media["predicted_p90_s"]
    # EBS by the blocks its snapshots hold: a few KiB, not the 4 GiB of volumes.
    ebs = next(r for r in plan["rows"] if r["kind"] == "ebs")
    assert ebs["bytes"] < 1024 * 1024 and ebs["size_known"]
    assert plan["verdict"] == "fits" and plan["margin_p90_s"] > 0
    assert plan["finish_p50"] <= plan["finish_p90"] < plan["cutoff"]
    assert plan["egress_usd"] == 0.0 and "checked" in plan["egress_basis"]
    assert {s["stage"] for s in plan["stages"]} == {"export", "place", "replay", "dns"}
    # Nothing was written: no workspace, no destination.
    assert not (tmp_path / ".exitplan").exists()
    assert not (tmp_path / "exitplan-sandbox").exists()


def test_plan_exits_3_when_even_the_critical_tier_cannot_fit(tmp_path):
    result = exitplan(
        tmp_path, "plan", "--deadline", "+2m", "--safety-margin", "110s", "--bwlimit", "1KiB"
    )
    assert result.returncode == 3, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert "INFEASIBLE: the critical tier" in out and "it needs" in out
    assert "option: physical media" in out and "option: lift --bwlimit" in out
    assert "critical     rds" in out and "margin P90" in out
