"""`exitplan drill` on the sandbox: the whole exit into scratch targets, measured, cleaned up.

One drill with the sandbox's defaults (it must pass and leave nothing
behind: no process, no scratch object, no scratch service, no DNS name), and
one with an objective no exit can meet (it must exit 3 and say which).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]


def exitplan(cwd: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def processes_under(root: Path) -> list[str]:
    """Processes whose command line or working directory lies under ``root``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if str(root) in cmdline or cwd.startswith(str(root)):
            found.append(f"{entry.name}: {cmdline[:120]}")
    return found


@pytest.fixture(scope="module")
def drilled(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, subprocess.CompletedProcess[str]]:
    cwd = tmp_path_factory.mktemp("drill")
    return cwd, exitplan(cwd, "drill", "--notice", "30h")


def test_a_drill_on_the_sandbox_passes_and_reports_rto_and_rpo(drilled):
    cwd, result = drilled
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    [run] = (cwd / ".exitplan" / "runs").iterdir()
    report = json.loads((run / "report.json").read_text())
    assert report["command"] == "drill" and report["scenario"] == "stressed-exit"
    assert report["verdict"].startswith("passed")
    drill = report["drill"]
    assert 0 < drill["rto_s"] < 30 * 3600 and drill["notice_window_met"] is True
    assert {row["kind"] for row in drill["rpo"]} >= {"s3"}
    assert all(row["rpo_s"] is not None and row["rpo_s"] >= 0 for row in drill["rpo"])
    assert report["service"]["answering"] is True
    # The evidence, for people and for CI.
    assert (run / "report.html").read_text().startswith("<!DOCTYPE html>")
    suites = ET.parse(run / "junit.xml").getroot()
    assert {s.get("name") for s in suites} >= {"export", "replay", "objectives"}


def test_a_drill_leaves_nothing_behind(drilled):
    cwd, result = drilled
    assert result.returncode == 0
    [run] = (cwd / ".exitplan" / "runs").iterdir()
    report = json.loads((run / "report.json").read_text())
    assert report["cleanup"] and all(c["status"] == "removed" for c in report["cleanup"])
    assert report["to_roll_back"] == []
    # No scratch object at the destination, no scratch service on the host, no process.
    assert not [p for p in (cwd / "exitplan-sandbox").rglob("*") if p.is_file()]
    assert not list(cwd.glob("exitplan-target*"))
    assert processes_under(cwd) == []
    # Nothing of it at the DNS target: the drill worked on a zone of its own.
    zones = cwd / ".exitplan" / "dns" / "zones.json"
    if zones.exists():
        held = json.loads(zones.read_text())["zones"]
        assert all(not records.get("records") for records in held.values()), held


def test_a_drill_is_kept_in_the_history(drilled):
    cwd, _ = drilled
    history = exitplan(cwd, "drill", "history", "--output", "json")
    assert history.returncode == 0, history.stderr
    data = json.loads(history.stdout)
    assert len(data["drills"]) == 1 and data["drills"][0]["passed"] is True
    assert data["drills"][0]["rto_s"] > 0


def test_an_objective_that_cannot_be_met_exits_3_and_says_which(tmp_path):
    (tmp_path / "exitplan.yaml").write_text(
        "source: {sandbox: true}\n"
        "destinations:\n"
        "  - {name: sandbox, storage: {driver: local, path: ./exitplan-sandbox}}\n"
        "candidates:\n"
        "  - {name: this-machine, kind: local}\n"
        "drill: {rto: 1s, every: 90d}\n",
        encoding="utf-8",
    )
    result = exitplan(tmp_path, "drill", "--config", "exitplan.yaml", "--only", "route53")
    assert result.returncode == 3, result.stdout[-3000:] + result.stderr[-3000:]
    [run] = (tmp_path / ".exitplan" / "runs").iterdir()
    report = json.loads((run / "report.json").read_text())
    assert report["status"] == "objective-missed"
    assert report["verdict"].startswith("failed: missed") and "rto" in report["verdict"]
    assert "missed" in result.stdout or "objective" in result.stdout
