"""`exitplan replay` as a user runs it: a new process, a config, a run whose host is an sshd."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestrator.config import load_config
from orchestrator.placement.steps import PlaceOutput
from orchestrator.run.commands import settings_for
from orchestrator.run.journal import Journal
from orchestrator.run.serde import to_json
from tests.support.replay import SECRET_VALUES, make_export, ssh_placement
from tests.support.sshd import KeyPair, SshdServer
from tests.support.sshd import ssh_client_key as ssh_client_key
from tests.support.sshd import sshd_host as sshd_host

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]


def exitplan(cwd: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def prepared_run(
    tmp_path: Path, server: SshdServer, key: KeyPair, files: dict[str, bytes]
) -> tuple[Path, str]:
    """A config, an export and a run whose ``place`` step chose ``server`` (as migrate leaves it)."""
    export = make_export(tmp_path, files)
    config = tmp_path / "exitplan.yaml"
    config.write_text(
        "source: {aws: {regions: [us-east-1]}}\n"
        f"destinations: [{{name: vault, storage: {{driver: local, path: {export.path}}}}}]\n"
    )
    settings = settings_for("migrate", load_config(config), deadline=None, kinds=None)
    with Journal(tmp_path / ".exitplan" / "journal.sqlite") as journal:
        run_id = journal.start_run("migrate", None, to_json(settings))
        journal.start_step(run_id, "place")
        journal.finish_step(
            run_id, "place", "done", "", to_json(PlaceOutput(ssh_placement(server, key), ()))
        )
    return config, run_id


def replay_rows(tmp_path: Path, run_id: str) -> dict[str, tuple[str, str]]:
    with sqlite3.connect(tmp_path / ".exitplan" / "journal.sqlite") as db:
        rows = db.execute(
            "SELECT step, status, started_at FROM replay_steps WHERE run_id=?", (run_id,)
        ).fetchall()
    return {step: (status, started) for step, status, started in rows}


def test_kill_9_mid_replay_then_the_next_replay_finishes_it_and_runs_the_pending_handler(
    tmp_path: Path, sshd_host: SshdServer, ssh_client_key: KeyPair
) -> None:
    target = tmp_path / "target"
    started, go = tmp_path / "step-c-started", tmp_path / "go"
    config, run_id = prepared_run(tmp_path, sshd_host, ssh_client_key, {"files/a.txt": b"a\n"})
    playbook = tmp_path / "p.yaml"
    playbook.write_text(
        f"""
artifacts: {{a: files/a.txt}}
steps:
  - {{id: dir, directory: "{target}"}}
  - id: a
    put: {{artifact: a, dest: "{target}/a.txt"}}
    notify: reload
  - id: c
    command: [sh, -c, 'touch {started}; while [ ! -e {go} ]; do sleep 0.05; done']
  - {{id: d, command: [touch, "{target}/d"]}}
handlers:
  - {{id: reload, command: [touch, "{target}/reloaded"]}}
"""
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    args = [
        sys.executable,
        "-m",
        "orchestrator.cli",
        "replay",
        run_id,
        "-c",
        str(config),
        "--playbook",
        str(playbook),
    ]
    process = subprocess.Popen(
        args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 60
    while not started.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "step c never started"
        time.sleep(0.02)  # polling for a file the step creates, not waiting for time to pass
    process.send_signal(signal.SIGKILL)
    process.communicate()
    before = replay_rows(tmp_path, run_id)
    assert before["a"][0] == "changed" and before["c"][0] == "running"
    assert not (target / "reloaded").exists()

    go.touch()
    result = exitplan(tmp_path, "replay", run_id, "-c", str(config), "--playbook", str(playbook))
    assert result.returncode == 0, result.stdout + result.stderr
    after = replay_rows(tmp_path, run_id)
    assert after["dir"] == before["dir"] and after["a"] == before["a"]  # not redone
    assert "step a: reused" in result.stdout and "step c: changed" in result.stdout
    assert (target / "d").exists() and (target / "reloaded").exists()
    assert "handler reload: changed" in result.stdout

    # A finished replay is checked afresh the next time: nothing is reused blindly.
    again = exitplan(tmp_path, "replay", run_id, "-c", str(config), "--playbook", str(playbook))
    assert again.returncode == 0 and "reused" not in again.stdout and "step a: ok" in again.stdout


def test_secrets_never_reach_output_logs_journal_or_diffs_at_the_highest_verbosity(
    tmp_path: Path, sshd_host: SshdServer, ssh_client_key: KeyPair
) -> None:
    target = tmp_path / "target"
    config, run_id = prepared_run(tmp_path, sshd_host, ssh_client_key, {})
    body = """
secrets:
  pw: {{secret: app/db-password}}
  token: {{secret: app/api-token}}
steps:
  - {{id: dir, directory: "{target}"}}
  - id: conf
    template: {{content: "{word} {{{{ secrets.pw }}}}\\n", dest: "{target}/conf", mode: "0600"}}
  - id: echo
    command: {{argv: [sh, -c, 'echo "token is $TOKEN"; echo "pw $PW" >&2'], env: {{TOKEN: "{{{{ secrets.token }}}}", PW: "{{{{ secrets.pw }}}}"}}}}
  - id: fails
    on_failure: continue
    command: {{argv: [sh, -c, 'echo "bad password $PW" >&2; exit 3'], env: {{PW: "{{{{ secrets.pw }}}}"}}}}
"""
    playbook = tmp_path / "p.yaml"
    playbook.write_text(body.format(target=target, word="first"))
    identity = ("--identity", str(tmp_path / "identity.age"))
    first = exitplan(
        tmp_path, "replay", run_id, "-c", str(config), "--playbook", str(playbook), "-v", *identity
    )
    playbook.write_text(body.format(target=target, word="second"))
    check = exitplan(
        tmp_path,
        "replay",
        run_id,
        "-c",
        str(config),
        "--playbook",
        str(playbook),
        "--check",
        "--diff",
        "-v",
        *identity,
    )
    assert "step fails: failed" in first.stdout and "<secret:pw>" in first.stdout
    assert "+second <secret:pw>" in check.stdout, check.stdout
    assert (
        SECRET_VALUES["app/db-password"] in (target / "conf").read_text()
    )  # it did reach the host
    texts = [first.stdout, first.stderr, check.stdout, check.stderr]
    files = [p for p in (tmp_path / ".exitplan").rglob("*") if p.is_file()]
    assert any(p.name.startswith("journal.sqlite") for p in files)
    for value in SECRET_VALUES.values():
        for text in texts:
            assert value not in text
        for path in files:
            assert value.encode() not in path.read_bytes(), path


@pytest.mark.parametrize(
    ("playbook", "where", "says"),
    [
        ("steps:\n  - {id: a, comand: [true]}\n", ":2:13:", "unknown op or key 'comand'"),
        (
            "steps:\n  - id: a\n    command: [echo, '{{ nope }}']\n",
            ":3:21:",
            "undefined variable 'nope'",
        ),
        (
            "steps:\n  - {id: a, command: [true]}\n  - {id: a, command: [true]}\n",
            ":3:10:",
            "duplicate step id 'a'",
        ),
        ("steps:\n  - {id: a, command: [true], notify: gone}\n", ":2:38:", "not a handler"),
        (
            "artifacts: {d: rds/x/dump.tar}\nsteps:\n  - {id: a, command: [true]}\n",
            ":1:16:",
            "not in the export's manifest",
        ),
        (
            "vars: {db_password: hunter2}\nsteps:\n  - {id: a, command: [true]}\n",
            ":1:21:",
            "literal secret",
        ),
        ("steps:\n  - {id: a, directory: /srv/../etc}\n", ":2:24:", "contains '..'"),
    ],
)
def test_a_bad_playbook_exits_2_with_its_location_and_nothing_runs(
    tmp_path: Path,
    sshd_host: SshdServer,
    ssh_client_key: KeyPair,
    playbook: str,
    where: str,
    says: str,
) -> None:
    config, run_id = prepared_run(tmp_path, sshd_host, ssh_client_key, {"files/a.txt": b"a"})
    path = tmp_path / "bad.yaml"
    path.write_text(playbook)
    result = exitplan(tmp_path, "replay", run_id, "-c", str(config), "--playbook", str(path))
    assert result.returncode == 2, result.stderr
    assert f"{path}{where}" in result.stderr and says in result.stderr, result.stderr
    assert replay_rows(tmp_path, run_id) == {}


def test_kill_9_of_migrate_mid_replay_then_resume_brings_the_sandbox_service_up(
    tmp_path: Path,
) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", "migrate", "--deadline", "+2h", "--quiet"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    journal = tmp_path / ".exitplan" / "journal.sqlite"

    def restored() -> bool:
        try:
            with sqlite3.connect(f"file:{journal}?mode=ro", uri=True) as db:
                row = db.execute("SELECT status FROM replay_steps WHERE step='restore'").fetchone()
        except sqlite3.OperationalError:
            return False
        return row is not None and row[0] == "changed"

    deadline = time.monotonic() + 300
    try:
        while not restored():
            assert process.poll() is None, process.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "the replay never restored the database"
            time.sleep(0.05)  # polling the journal for a condition, not waiting for time to pass
    finally:
        process.send_signal(signal.SIGKILL)
        process.communicate()
    with sqlite3.connect(journal) as db:
        run_id = db.execute("SELECT id FROM runs").fetchone()[0]
        pending = db.execute("SELECT handler FROM replay_handlers WHERE state='pending'").fetchall()
    before = replay_rows(tmp_path, run_id)
    assert pending == [("restart-web",)]
    try:
        resumed = exitplan(tmp_path, "resume", timeout=600)
        assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
        after = replay_rows(tmp_path, run_id)
        for step, (status, started) in before.items():
            if status in ("changed", "ok", "skipped"):
                assert after[step] == (status, started), step  # not redone
        with sqlite3.connect(journal) as db:
            handlers = db.execute("SELECT handler, state FROM replay_handlers").fetchall()
        assert handlers == [("restart-web", "done")]
        assert "service: http://127.0.0.1:" in resumed.stdout and "answering" in resumed.stdout
        assert "public.posts: served 2400, equal to the source's" in resumed.stdout
    finally:
        exitplan(tmp_path, "rollback", run_id, timeout=300)
