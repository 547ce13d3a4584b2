"""`exitplan migrate` on the built-in sandbox, as a user runs it: a new process."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from orchestrator.export.exporters.s3 import destination_key
from orchestrator.sandbox.account import MEDIA_BUCKET, object_body, sandbox_account

pytestmark = pytest.mark.e2e

EXITPLAN = [sys.executable, "-m", "orchestrator.cli"]
REPO = Path(__file__).resolve().parents[2]


def exitplan(cwd: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [*EXITPLAN, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_sandbox_copied_byte_identical(vault: Path) -> int:
    """Every object version in the sandbox account is in the vault with the same sha256."""
    checked = 0
    with sandbox_account() as account:
        s3 = account.client("s3")
        for bucket in (b["Name"] for b in s3.list_buckets()["Buckets"]):
            for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
                for version in page.get("Versions", []):
                    vid = version.get("VersionId")
                    vid = None if vid in (None, "null") else vid
                    body = s3.get_object(
                        Bucket=bucket, Key=version["Key"], **({"VersionId": vid} if vid else {})
                    )["Body"].read()
                    key = destination_key(bucket, version["Key"], vid, bool(version["IsLatest"]))
                    path = vault / key
                    assert path.is_file(), f"{key} is missing"
                    assert sha256_of(path) == hashlib.sha256(body).hexdigest(), key
                    checked += 1
    return checked


@pytest.fixture(scope="module")
def migrated(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Path, subprocess.CompletedProcess[str]]]:
    cwd = tmp_path_factory.mktemp("sandbox")
    result = exitplan(cwd, "migrate", "--deadline", "+2h")
    yield cwd, result
    # The replayed service outlives exitplan on purpose; the tests' does not.
    for run in sorted((cwd / ".exitplan" / "runs").iterdir(), reverse=True):
        exitplan(cwd, "rollback", run.name)


def test_migrate_ends_with_the_service_answering_with_the_sources_data(migrated):
    cwd, result = migrated
    assert result.returncode == 0, result.stdout[-3000:]
    report = json.loads(next((cwd / ".exitplan" / "runs").glob("*/report.json")).read_text())
    service = report["service"]
    assert service["answering"] is True and service["healthy_at"]
    posts = next(
        c for c in service["checks"] if c["kind"] == "rows" and c["name"].endswith(".posts")
    )
    assert (posts["served"], posts["source"], posts["equal"]) == ("2400", "2400", True)
    media = next(c for c in service["checks"] if c["kind"] == "file")
    assert media["equal"] and len(media["source"]) == 64
    assert f"service: {service['url']} answering" in result.stdout
    with urllib.request.urlopen(service["url"] + "api/stats", timeout=10) as answer:
        assert json.loads(answer.read())["tables"]["public.posts"] == 2400
    key = media["name"]
    with urllib.request.urlopen(service["url"] + "media/" + quote(key), timeout=10) as answer:
        body = answer.read()
    assert (
        hashlib.sha256(body).hexdigest()
        == hashlib.sha256(object_body(MEDIA_BUCKET, key)).hexdigest()
    )


def test_migrate_on_the_sandbox_exits_0_and_reports(migrated):
    cwd, result = migrated
    assert result.returncode == 0, result.stderr[-3000:]
    assert "deadline" in result.stdout and "met" in result.stdout
    [report_path] = (cwd / ".exitplan" / "runs").glob("*/report.json")
    report = json.loads(report_path.read_text())
    assert report["status"] == "done"
    assert report["deadline"]["met"] is True
    kinds = {k["kind"]: k for k in report["kinds"]}
    assert kinds["s3"]["complete"] and kinds["s3"]["saved_items"] >= 2000
    assert report["totals"]["failed_items"] == 0


def test_every_sandbox_object_is_byte_identical_to_the_source(migrated):
    cwd, result = migrated
    assert result.returncode == 0, result.stderr[-3000:]
    assert assert_sandbox_copied_byte_identical(cwd / "exitplan-sandbox") >= 2000


def test_the_zone_file_and_tables_are_exported(migrated):
    cwd, _ = migrated
    vault = cwd / "exitplan-sandbox"
    zone = (vault / "route53" / "microblog.example.zone").read_text()
    assert "$ORIGIN microblog.example." in zone
    assert list((vault / "dynamodb").rglob("microblog-sessions.jsonl.gz"))
    manifest = (vault / "manifest" / "manifest.jsonl").read_text().splitlines()
    assert len(manifest) >= 2000
    row = json.loads(manifest[0])
    assert {"key", "size", "sha256", "source_checksum", "source"} <= set(row)


def test_a_second_run_copies_no_verified_object_again(migrated):
    cwd, first = migrated
    assert first.returncode == 0
    second = exitplan(cwd, "migrate", "--deadline", "+2h", "--output", "json")
    assert second.returncode == 0, second.stderr[-3000:]
    report = json.loads(second.stdout)
    s3 = next(k for k in report["kinds"] if k["kind"] == "s3")
    assert s3["copied_this_run_items"] == 0
    assert s3["already_verified_items"] == s3["listed_items"]


def verified_count(journal: Path) -> int:
    try:
        with sqlite3.connect(f"file:{journal}?mode=ro", uri=True) as db:
            row = db.execute(
                "SELECT COUNT(*) FROM items WHERE state='verified' AND kind='s3'"
            ).fetchone()
            return int(row[0])
    except sqlite3.OperationalError:  # not created yet
        return 0


def test_sigkill_during_export_then_resume_copies_nothing_verified_again(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    # A bandwidth cap keeps the export going long enough to be killed in the middle.
    proc = subprocess.Popen(
        [*EXITPLAN, "migrate", "--deadline", "+2h", "--bwlimit", "6MiB", "--quiet"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    journal = tmp_path / ".exitplan" / "journal.sqlite"
    give_up = time.monotonic() + 240
    try:
        while verified_count(journal) < 300:
            assert proc.poll() is None, f"exited early: {proc.stderr.read()[-2000:]}"
            assert time.monotonic() < give_up, "the export never got going"
            time.sleep(0.2)  # polling a condition, not waiting for time to pass
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    at_kill = verified_count(journal)
    assert proc.returncode == -signal.SIGKILL
    with sqlite3.connect(f"file:{journal}?mode=ro", uri=True) as db:
        done_at_kill = {row[0] for row in db.execute("SELECT name FROM steps WHERE status='done'")}

    resumed = exitplan(tmp_path, "resume", "--output", "json")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    report = json.loads(resumed.stdout)
    s3 = next(k for k in report["kinds"] if k["kind"] == "s3")
    assert s3["complete"]
    # Everything the killed run had verified is skipped, not copied again.
    assert s3["already_verified_items"] >= at_kill
    assert s3["already_verified_items"] + s3["copied_this_run_items"] == s3["listed_items"]
    assert s3["copied_this_run_items"] < s3["listed_items"]
    assert_sandbox_copied_byte_identical(tmp_path / "exitplan-sandbox")
    # Steps the killed run finished are reused, not run again: no second inventory or probe.
    # The PostgreSQL servers the killed run started are stopped, their directories gone.
    with sqlite3.connect(f"file:{journal}?mode=ro", uri=True) as db:
        servers = db.execute(
            "SELECT state, resource FROM undo WHERE kind='postgres-cluster'"
        ).fetchall()
    for state, resource in servers:
        assert state == "undone", resource
        assert not Path(json.loads(resource)["workdir"]).exists()
    assert set(report["reused_steps"]) == done_at_kill - {"export", "manifest"}
    assert "export" not in report["reused_steps"]
    exitplan(tmp_path, "rollback")  # the replayed service outlives exitplan; the test's does not


def served_addresses(cwd: Path, name: str) -> set[str]:
    """Ask the sandbox's DNS target over UDP, as a resolver would (its zone file, served)."""
    from orchestrator.cutover.query import AuthoritativeEndpoint, query_authoritative
    from providers.dns_local import LocalDnsServer

    with LocalDnsServer(cwd / ".exitplan" / "dns" / "zones.json") as server:
        answer = query_authoritative(
            AuthoritativeEndpoint(server.host, server.port), name, "A", transport="udp"
        )
    return set(answer.values)


def test_the_services_names_resolve_to_the_new_host(migrated):
    cwd, result = migrated
    report = json.loads(next((cwd / ".exitplan" / "runs").glob("*/report.json")).read_text())
    dns = {step["name"]: step for step in report["dns"]}
    assert dns["microblog.example: new zone"]["status"] == "done"
    assert "answer identically" in dns["microblog.example: new zone"]["detail"]
    assert dns["flip"]["status"] == "done" and "www.microblog.example -> 127.0.0.1" in result.stdout
    for name in ("microblog.example.", "www.microblog.example.", "api.microblog.example."):
        assert served_addresses(cwd, name) == {"127.0.0.1"}
    # Names the service does not own are left as they were.
    assert served_addresses(cwd, "dev.microblog.example.") == {"203.0.113.30"}


def test_rollback_stops_the_service_and_removes_what_the_replay_made(migrated):
    cwd, _ = migrated
    first = sorted((cwd / ".exitplan" / "runs").iterdir())[0]
    service = json.loads((first / "report.json").read_text())["service"]
    target = (cwd / "exitplan-target").resolve()
    assert target.is_dir()
    rolled = exitplan(cwd, "rollback", first.name)
    assert rolled.returncode == 0, rolled.stdout + rolled.stderr
    assert (
        "stopped microblog-web" in rolled.stdout and "stopped microblog-postgres" in rolled.stdout
    )
    assert not target.exists() and not (cwd / "exitplan-target").exists()
    if target.parent != cwd:  # moved where the service user can reach it: that goes too
        assert not target.parent.exists()
    with pytest.raises(OSError):
        urllib.request.urlopen(service["url"] + "healthz", timeout=5)
    # Rollback removes what the run made at the new DNS provider too: the names are gone.
    assert served_addresses(cwd, "www.microblog.example.") == set()


def test_the_deadline_stops_migrate_with_exit_3_and_a_report_of_what_was_left(tmp_path):
    # 70 MiB of S3 at 256 KiB/s needs over four minutes; the deadline is a minute away.
    # Route53 is critical and first: it is saved; of S3, what cannot finish by the
    # cutoff is descoped with its reason, or stopped where the deadline fell.
    result = exitplan(
        tmp_path,
        "migrate",
        "--deadline",
        "+60s",
        "--safety-margin",
        "5s",
        "--only",
        "route53,s3",
        "--bwlimit",
        "256KiB",
    )
    assert result.returncode == 3, result.stderr[-3000:]
    assert "descoped s3" in result.stdout
    report = json.loads(next((tmp_path / ".exitplan" / "runs").glob("*/report.json")).read_text())
    assert report["status"] == "deadline-missed"
    kinds = {k["kind"]: k for k in report["kinds"]}
    assert kinds["route53"]["complete"]
    assert not kinds["s3"]["complete"]
    left = kinds["s3"]["listed_items"] - kinds["s3"]["saved_items"]
    descoped = sum(
        d["items"] for g in report["data"] if g["kind"] == "s3" for d in g.get("descoped", [])
    )
    export = {step["name"]: step["status"] for step in report["steps"]}["export"]
    if export == "cancelled":  # the deadline stopped what ran past it
        assert report["stopped_by"] == "the deadline passed"
        assert 0 < descoped <= left
    else:  # everything started ended in time: what was left was descoped, with reasons
        assert export == "done" and descoped == left > 0
    assert all(d["reason"] for g in report["data"] for d in g.get("descoped", []))


def test_a_deadline_closer_than_the_safety_margin_is_refused_before_anything_starts(tmp_path):
    result = exitplan(tmp_path, "migrate", "--deadline", "+60s", "--only", "route53")
    assert result.returncode == 2
    assert "no more than the safety margin" in result.stderr
    assert "e.g. --safety-margin " in result.stderr
    assert not (tmp_path / ".exitplan" / "journal.sqlite").exists()
