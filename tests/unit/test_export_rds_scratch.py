"""A killed run's scratch directory (pg_dump output in clear) is removed, and only
the PostgreSQL server that is really its own would be stopped."""

from __future__ import annotations

import subprocess
from pathlib import Path

from orchestrator.export.exporters.rds import remove_scratch


def test_a_killed_runs_scratch_is_removed_and_nothing_else_is_signalled(tmp_path: Path) -> None:
    scratch = tmp_path / "runs" / "r1" / "scratch"
    instance = scratch / "rds" / "us-east-1" / "microblog-db" / "0123456789ab"
    dump = instance / "dump" / "databases" / "microblog"
    dump.mkdir(parents=True)
    (dump / "3001.dat").write_text("1\tuser1\tuser1@microblog.example\n")
    # A restore-check cluster the kill left, whose pid is now another process's.
    bystander = subprocess.Popen(["sleep", "600"])
    try:
        cluster = instance / "exitplan-pg-abc123"
        (cluster / "data").mkdir(parents=True)
        (cluster / "data" / "postmaster.pid").write_text(f"{bystander.pid}\n{cluster}/data\n1\n")

        assert remove_scratch(scratch) == [
            f"removed {cluster} (its PostgreSQL server was not running)",
            f"removed {scratch}",
        ]
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()
    assert not scratch.exists()
    assert (tmp_path / "runs" / "r1").exists()
    assert remove_scratch(scratch) == []
