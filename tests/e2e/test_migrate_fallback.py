"""`migrate` takes the best host it can get, keeps it, and never makes a second one.

Two DigitalOcean accounts (loopback stand-ins driven by libcloud's real
driver): both look fine to the probe, and rank a-cloud first; a-cloud then
refuses to create the server (capacity gone), so the run falls back to
b-cloud, whose new server is a real sshd. The server is in the undo log
from the moment it exists: a run killed right after provisioning is resumed
without a second server, and `exitplan rollback` removes it.
"""

from __future__ import annotations

import os
import secrets
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import MappingProxyType

import pytest

from orchestrator.config import CandidateConfig, default_sandbox_config
from orchestrator.run.commands import (
    execute_run,
    existing_journal,
    rollback_run,
    settings_for,
)
from tests.support.digitalocean import DigitalOceanStandIn, _common_free_port
from tests.support.sshd import generate_key, require_openssh

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def clouds(tmp_path: Path) -> Iterator[tuple[DigitalOceanStandIn, DigitalOceanStandIn]]:
    require_openssh()
    started = []
    try:
        for name in ("a", "b"):
            standin = DigitalOceanStandIn(
                workdir=tmp_path / f"do-{name}",
                token=secrets.token_hex(16),
                ssh_port=_common_free_port(),
            )
            standin.start()
            started.append(standin)
        yield started[0], started[1]
    finally:
        for standin in started:
            standin.stop()


def test_migrate_falls_back_to_the_next_candidate_and_rollback_removes_the_server(
    clouds, tmp_path, monkeypatch
):
    first, second = clouds
    first.mode = "refuse-create"
    login = generate_key(tmp_path / "login" / "id_ed25519")
    monkeypatch.setenv("EXITPLAN_SSH_KEY_FILE", str(login.private))
    config = default_sandbox_config(tmp_path)
    config = replace(
        config,
        candidates=(
            CandidateConfig(
                "a-cloud", "libcloud", MappingProxyType(first.candidate_options(size="s-4vcpu-8gb"))
            ),
            CandidateConfig(
                "b-cloud",
                "libcloud",
                MappingProxyType(second.candidate_options(size="s-4vcpu-8gb")),
            ),
        ),
    )
    deadline = datetime.now(UTC) + timedelta(hours=2)
    settings = settings_for("migrate", config, deadline=deadline, kinds=("route53",))
    result = execute_run(config, settings)
    assert result.exit_code == 0, result.report["steps"]
    placement = result.report["placement"]
    ranked = [row["candidate"] for row in placement["candidates"] if row["status"] == "fit"]
    assert ranked == ["a-cloud", "b-cloud"]
    assert [(a["candidate"], a["outcome"]) for a in placement["attempts"]] == [
        ("a-cloud", "no_capacity"),
        ("b-cloud", "ready"),
    ]
    chosen = placement["chosen"]
    assert chosen["candidate"] == "b-cloud"
    assert chosen["host_key_fingerprint"].startswith("SHA256:")
    assert len(second.droplets) == 1 and not first.droplets
    # What the run made outside its workspace is listed (the server, and the sandbox's
    # DNS names it moved), and rollback removes it.
    to_roll_back = result.report["to_roll_back"]
    servers = [line for line in to_roll_back if line.startswith("b-cloud: server ")]
    dns = [line for line in to_roll_back if "of zone microblog.example." in line]
    assert len(servers) == 1 and len(servers) + len(dns) == len(to_roll_back), to_roll_back
    with existing_journal(config) as journal:
        _, outcomes = rollback_run(journal, result.run_id, settings_clock(), config=config)
    assert {(o.kind, o.state) for o in outcomes} == {("server", "undone"), ("dns_change", "undone")}
    assert second.droplets == {}
    with existing_journal(config) as journal:
        _, again = rollback_run(journal, result.run_id, settings_clock(), config=config)
    assert again == []  # nothing left to undo


def settings_clock():
    from orchestrator.clock import SystemClock

    return SystemClock()


def _config_file(tmp_path: Path, cloud: DigitalOceanStandIn, source: str) -> Path:
    options = cloud.candidate_options(size="s-4vcpu-8gb")
    path = tmp_path / "exitplan.yaml"
    path.write_text(
        f"""\
source:
  aws: {{regions: [us-east-1], endpoint_url: "{source}"}}
destinations:
  - name: vault
    storage: {{driver: local, path: ./vault}}
candidates:
  - name: do
    kind: libcloud
    driver: digitalocean
    key: "${{DO_TOKEN}}"
    size: s-4vcpu-8gb
    region: {options["region"]}
    image: {options["image"]}
    host: {options["host"]}
    port: {options["port"]}
    secure: false
    ssh_port: {options["ssh_port"]}
    ssh_user: {options["ssh_user"]}
""",
        encoding="utf-8",
    )
    return path


def _pending_servers(journal: Path) -> list[str]:
    if not journal.exists():
        return []
    with sqlite3.connect(journal) as db:
        try:
            rows = db.execute(
                "SELECT resource FROM undo WHERE kind='server' AND state='pending'"
            ).fetchall()
        except sqlite3.OperationalError:
            return []
    return [row[0] for row in rows]


def test_a_run_killed_right_after_provisioning_resumes_on_the_same_server(
    clouds, tmp_path, moto_endpoint
):
    cloud, _ = clouds
    login = generate_key(tmp_path / "login" / "id_ed25519")
    config = _config_file(tmp_path, cloud, moto_endpoint)
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "EXITPLAN_SSH_KEY_FILE": str(login.private),
        "DO_TOKEN": cloud.token,
    }
    # Hold the new server down until the run has been killed: it cannot be ready first.
    cloud.boot_allowed.clear()
    command = [sys.executable, "-m", "orchestrator.cli", "migrate", "--config", str(config)]
    proc = subprocess.Popen(
        [*command, "--deadline", "+2h", "--only", "route53", "--quiet"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    journal = tmp_path / ".exitplan" / "journal.sqlite"
    try:
        give_up = time.monotonic() + 120
        while not _pending_servers(journal) and proc.poll() is None:
            assert time.monotonic() < give_up, "no server was provisioned"
            time.sleep(0.05)  # polling for the moment to kill, not waiting for a result
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert len(cloud.droplets) == 1
    made = next(iter(cloud.droplets))
    cloud.boot_allowed.set()
    resumed = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "resume", "--workspace", str(journal.parent)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert list(cloud.droplets) == [made], "resume provisioned a second server"
    assert len(_pending_servers(journal)) == 1
    rolled = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "rollback", "--workspace", str(journal.parent)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert rolled.returncode == 0, rolled.stdout + rolled.stderr
    assert cloud.droplets == {}
