"""The short CI version of bench/kill_loop.py: SIGKILL a sandbox migrate at random moments
(the first seconds included), resume, and find nothing lost, corrupt, running or in clear."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]


def test_killed_at_random_moments_then_resumed_nothing_is_lost_or_left(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "kill_loop.py"),
            "--kills",
            "2",
            "--window",
            "20",
            "--seed",
            "15",
            "--workdir",
            str(tmp_path / "trials"),
        ],
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-3000:]
    assert "2 trials, 0 with problems" in done.stdout
