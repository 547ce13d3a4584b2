"""Scratch PostgreSQL clusters: no clear password on disk even when killed, and a
server orphaned by a kill is found from its record and stopped, nothing else."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.errors import FatalError
from orchestrator.postgres import (
    CLUSTER_DIR_PREFIX,
    LocalCluster,
    PgTools,
    psql_lines,
    scram_sha256_verifier,
    stop_recorded_cluster,
)
from tests.support.postgres import CANARY_PASSWORD, pg_tools  # noqa: F401 - fixture

REPO = Path(__file__).resolve().parents[2]

# Starts a cluster, prints each on_started record as a JSON line, then "ready",
# then waits to be killed.
_CHILD = """
import json, sys
from pathlib import Path
from orchestrator.postgres import LocalCluster, PgTools
cluster = LocalCluster(
    PgTools(Path(sys.argv[1])),
    password=sys.argv[2],
    parent_dir=Path(sys.argv[3]),
    on_started=lambda record: print(json.dumps(record), flush=True),
)
cluster.start()
print("ready", flush=True)
sys.stdin.read()
"""


def _start_child(bindir: Path, parent: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(bindir), CANARY_PASSWORD, str(parent)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def _files_holding(root: Path, secret: str) -> list[str]:
    needle = secret.encode()
    return [
        str(path.relative_to(root))
        for path in root.rglob("*")
        if path.is_file() and not path.is_symlink() and needle in path.read_bytes()
    ]


def _serving(pid: int, datadir: str) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
        return state not in ("Z", "X") and os.path.realpath(f"/proc/{pid}/cwd") == datadir
    except OSError:
        return False


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory the server user can reach too (root's pytest tmp dirs are closed)."""
    path = Path(tempfile.mkdtemp(prefix="exitplan-test-"))
    path.chmod(0o777)  # the server user writes here too
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_the_server_stores_the_verifier_and_the_password_logs_in(
    pg_tools: PgTools,  # noqa: F811 - fixture
    tmp_path: Path,
) -> None:
    with LocalCluster(pg_tools, password=CANARY_PASSWORD, parent_dir=tmp_path) as cluster:
        (stored,) = psql_lines(
            pg_tools,
            cluster.conn(),
            "SELECT rolpassword FROM pg_authid WHERE rolname = current_user;\n",
            what="read the stored verifier",
        )
        assert stored.startswith("SCRAM-SHA-256$4096:")
        assert cluster.workdir is not None
        assert _files_holding(cluster.workdir, CANARY_PASSWORD) == []
    salt = bytes(range(16))
    assert scram_sha256_verifier("pencil", salt=salt) == scram_sha256_verifier("pencil", salt=salt)
    assert scram_sha256_verifier("pencil") != scram_sha256_verifier("pencil")  # salted
    with pytest.raises(ValueError, match="ASCII"):
        LocalCluster(pg_tools, password="pässword")


def test_a_kill_during_initdb_leaves_no_clear_password_on_disk(
    pg_tools: PgTools,  # noqa: F811 - fixture
    shared_dir: Path,
) -> None:
    """initdb is held at its start (a wrapper around the real one waits on a
    FIFO), exitplan is SIGKILLed there, then initdb goes on: neither the file
    initdb read the password from nor anything left in the cluster directory
    holds the password."""
    bindir = shared_dir / "bin"
    bindir.mkdir()
    for tool in ("pg_dump", "pg_restore", "psql", "pg_ctl"):
        (bindir / tool).symlink_to(pg_tools.bindir / tool)
    for fifo in ("started", "resume", "done"):
        os.mkfifo(shared_dir / fifo)
        (shared_dir / fifo).chmod(0o666)  # the server user opens them
    seen = shared_dir / "pwfile-as-initdb-saw-it"
    seen.touch()
    seen.chmod(0o666)
    wrapper = bindir / "initdb"
    wrapper.write_text(
        "#!/bin/sh\n"
        'for arg in "$@"; do case "$arg" in --pwfile=*) pwfile="${arg#--pwfile=}";; esac; done\n'
        f'cat "$pwfile" > {seen}\n'
        f"echo started > {shared_dir / 'started'}\n"
        f"read line < {shared_dir / 'resume'}\n"
        f'{pg_tools.bindir / "initdb"} "$@"\n'
        f"echo done > {shared_dir / 'done'}\n"
    )
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)

    child = _start_child(bindir, shared_dir)
    assert child.stdout is not None
    record = json.loads(child.stdout.readline())  # recorded before initdb runs
    assert record["pid"] is None
    assert (shared_dir / "started").read_text() == "started\n"  # initdb is running now
    child.kill()
    child.wait()
    (shared_dir / "resume").write_text("go\n")
    assert (shared_dir / "done").read_text() == "done\n"  # initdb has finished or died

    assert CANARY_PASSWORD not in seen.read_text()
    assert seen.read_text().startswith("SCRAM-SHA-256$")
    workdir = Path(record["workdir"])
    assert workdir.exists(), "the killed run left its directory (for the undo to remove)"
    assert _files_holding(workdir, CANARY_PASSWORD) == []
    assert stop_recorded_cluster(record) == (
        f"removed {workdir} (its PostgreSQL server was not running)"
    )
    assert not workdir.exists()


def test_a_server_orphaned_by_sigkill_is_stopped_from_its_record(
    pg_tools: PgTools,  # noqa: F811 - fixture
    shared_dir: Path,
) -> None:
    child = _start_child(pg_tools.bindir, shared_dir)
    assert child.stdout is not None
    records = []
    try:
        for line in child.stdout:
            if line.strip() == "ready":
                break
            records.append(json.loads(line))
        first, last = records
        moving = ("pid", "port", "started_at")
        assert [first[k] for k in moving] == [None, None, None]
        assert {k: v for k, v in last.items() if k not in moving} == {
            k: v for k, v in first.items() if k not in moving
        }
        assert isinstance(last["port"], int) and isinstance(last["started_at"], int)
        assert CANARY_PASSWORD not in json.dumps(records)
        pid, datadir = last["pid"], os.path.realpath(last["datadir"])

        child.send_signal(signal.SIGKILL)
        child.wait()
        assert _serving(pid, datadir), "the server outlives the process that started it"

        # The record made before the server started is enough: the server is
        # found through postmaster.pid and its working directory.
        assert stop_recorded_cluster(first) == (
            f"stopped the scratch PostgreSQL server (pid {pid}) and removed {first['workdir']}"
        )
        assert not _serving(pid, datadir)
        assert not Path(first["workdir"]).exists()
        assert stop_recorded_cluster(last) == (
            f"scratch PostgreSQL cluster {first['workdir']}: already gone"
        )
    finally:
        child.kill()
        child.wait()
        for record in records[:1]:
            stop_recorded_cluster(record)  # a failed assertion must not leave a server


def test_a_pid_that_is_not_the_server_is_never_signalled(shared_dir: Path) -> None:
    """postmaster.pid left by a dead server names a pid now reused by another process."""
    bystander = subprocess.Popen(["sleep", "600"])
    try:
        workdir = Path(tempfile.mkdtemp(prefix=CLUSTER_DIR_PREFIX, dir=shared_dir))
        (workdir / "data").mkdir()
        (workdir / "data" / "postmaster.pid").write_text(f"{bystander.pid}\n{workdir}/data\n1\n")
        record: dict[str, Any] = {
            "kind": "postgres-cluster",
            "workdir": str(workdir),
            "datadir": str(workdir / "data"),
            "pid": bystander.pid,
        }
        assert stop_recorded_cluster(record) == (
            f"removed {workdir} (its PostgreSQL server was not running)"
        )
        assert bystander.poll() is None, "a process that is not the server was signalled"
    finally:
        bystander.kill()
        bystander.wait()


@pytest.mark.parametrize(
    "record",
    [
        {"kind": "postgres-cluster", "workdir": "/etc", "datadir": "/etc/data"},
        {"kind": "postgres-cluster", "workdir": "exitplan-pg-x", "datadir": "exitplan-pg-x/data"},
        {"kind": "postgres-cluster", "workdir": "/tmp/exitplan-pg-x", "datadir": "/var/lib/pg"},
        {
            "kind": "something-else",
            "workdir": "/tmp/exitplan-pg-x",
            "datadir": "/tmp/exitplan-pg-x/data",
        },
        {"kind": "postgres-cluster"},
    ],
)
def test_a_record_that_is_not_a_scratch_cluster_is_refused(record: dict[str, Any]) -> None:
    with pytest.raises(FatalError, match="left alone"):
        stop_recorded_cluster(record)
    assert Path("/etc/passwd").exists()
