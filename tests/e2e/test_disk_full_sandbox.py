"""The sandbox exported to a destination that fills up, then space freed and resumed.

As the campaign ran it: `exitplan migrate` on the built-in sandbox with
./exitplan-sandbox on a small tmpfs (as root; elsewhere a file-size limit).
The run ends with exit 1 and a report that says what filled up, nothing
damaged is called verified, and after space is freed `exitplan resume`
leaves every object byte-identical to the source.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.test_sandbox_migrate import assert_sandbox_copied_byte_identical
from tests.support.little_room import MiB, little_room

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]


def exitplan(cwd: Path, *args: str, preexec=None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        preexec_fn=preexec,
    )


def test_a_full_destination_fails_the_run_plainly_and_resume_completes_it(tmp_path):
    vault = tmp_path / "exitplan-sandbox"
    with little_room(vault, free=20 * MiB, total=192 * MiB, in_process=False) as room:
        first = exitplan(tmp_path, "migrate", "--deadline", "+2h", preexec=room.preexec)
        assert first.returncode == 1, first.stderr[-3000:]
        assert "Traceback" not in first.stderr, first.stderr[-3000:]
        # The summary and the report say what filled up, and what to do.
        assert f"destination sandbox: {room.message}" in first.stdout
        if room.kind == "tmpfs":
            assert f"tmpfs at {vault}" in first.stdout
        assert "carry on with: exitplan resume" in first.stdout
        [report_path] = (tmp_path / ".exitplan" / "runs").glob("*/report.json")
        report = json.loads(report_path.read_text())
        assert report["status"] == "failed"
        # Each failure is the full disk, or an item that describes one the disk refused
        # (a table's meta, a dump's checksums), saying so.
        full = [
            f
            for f in report["failed"]
            if f["error"].startswith(f"destination sandbox: {room.message}")
        ]
        waiting = [
            f
            for f in report["failed"]
            if "which was not exported (see that item's error)" in f["error"]
        ]
        assert full and len(full) + len(waiting) == len(report["failed"]), report["failed"]
        journal = tmp_path / ".exitplan" / "journal.sqlite"
        with sqlite3.connect(journal) as db:
            assert db.execute("SELECT status FROM runs").fetchall() == [("failed",)]
            stored = db.execute(
                "SELECT dest_key, sha256 FROM items WHERE state IN ('verified', 'unchecked')"
            ).fetchall()
        # Whatever the journal calls stored is there, whole: never a 0-byte or cut-short file.
        for key, sha in stored:
            assert hashlib.sha256((vault / key).read_bytes()).hexdigest() == sha, key
        assert not [p for p in vault.glob("*/.exitplan-partial/*") if p.is_file()]

        room.make_room()
        resumed = exitplan(tmp_path, "resume", "--output", "json", "--quiet")
        try:
            assert resumed.returncode == 0, resumed.stderr[-3000:]
            assert json.loads(resumed.stdout)["status"] == "done"
            assert assert_sandbox_copied_byte_identical(vault) >= 2000
            verified = exitplan(tmp_path, "verify")
            assert verified.returncode == 0, verified.stdout[-2000:]
            assert not [p for p in vault.glob("*/.exitplan-partial/*") if p.is_file()]
        finally:
            # The finished run replayed the service, which outlives exitplan; the test's does not.
            exitplan(tmp_path, "rollback")
