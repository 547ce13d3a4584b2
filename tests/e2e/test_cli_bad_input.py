"""Bad input: one clear message naming file:line or the field and the fix, exit 2, nothing written."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from orchestrator.cli import main

GOOD = """\
source:
  aws:
    regions: [us-east-1]
    endpoint_url: http://127.0.0.1:9
destinations:
  - name: vault
    storage: {driver: local, path: ./vault}
"""


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run_bad(workdir: Path, capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    before = tree(workdir)
    code = main(list(argv))
    err = capsys.readouterr().err
    assert code == 2, err
    assert tree(workdir) == before, "bad input must change nothing"
    assert err.count("exitplan: error:") == 1
    return err


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (GOOD.replace("regions: [us-east-1]", "regions: [us-east-1"), "config.yaml:"),
        (GOOD + "deadlnie: +3h\n", "config.yaml:8:1: deadlnie"),
        (GOOD.replace("regions: [us-east-1]", "regions: 7"), "config.yaml:3:"),
        (GOOD.replace("    storage: {driver: local, path: ./vault}\n", ""), "storage"),
        (GOOD.replace("./vault", '"${EXITPLAN_TEST_UNSET_VAR}"'), "EXITPLAN_TEST_UNSET_VAR"),
    ],
    ids=["malformed-yaml", "unknown-key", "wrong-type", "missing-field", "unset-env"],
)
def test_bad_config_exits_2_naming_the_place(workdir, capsys, text, expected):
    (workdir / "config.yaml").write_text(text)
    err = run_bad(workdir, capsys, "migrate", "--config", "config.yaml", "--deadline", "+1h")
    assert expected in err


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ("/dev/zero", "/dev/zero: is a character device, not a config file"),
        (".", ": is a directory, not a config file"),
    ],
)
def test_a_config_that_is_not_a_file_exits_2_at_once(workdir, capsys, config, expected):
    err = run_bad(workdir, capsys, "config", "validate", config)
    assert expected in err
    err = run_bad(workdir, capsys, "inventory", "--config", config)
    assert expected in err


def test_runaway_nesting_exits_2_naming_the_place(workdir, capsys):
    (workdir / "config.yaml").write_text(GOOD + "deadline: " + "[" * 20_000 + "]" * 20_000)
    err = run_bad(workdir, capsys, "migrate", "--config", "config.yaml", "--deadline", "+1h")
    assert "config.yaml:8:" in err and "nested deeper than 64 levels" in err


def test_config_validate_refuses_a_host_key_that_is_not_a_key_and_lists_every_problem(
    workdir, capsys
):
    text = GOOD + (
        "candidates:\n"
        "  - {name: colo, kind: ssh-pool, hosts: [{address: 10.0.0.1, user: u, host_key: x}]}\n"
        "transfer: {bwlimit: 0}\n"
    )
    (workdir / "config.yaml").write_text(text)
    err = run_bad(workdir, capsys, "config", "validate", "config.yaml")
    assert "exitplan: error: 2 problems:\n" in err
    assert "config.yaml:9:81: candidates[0].hosts[0].host_key: host_key 'x' is not" in err
    assert "config.yaml:10:21: transfer.bwlimit: must be more than 0" in err


def test_unknown_key_suggests_the_fix(workdir, capsys):
    (workdir / "config.yaml").write_text(GOOD + "deadlnie: +3h\n")
    err = run_bad(workdir, capsys, "config", "validate", "config.yaml")
    assert "deadline" in err.split("deadlnie", 1)[1]


@pytest.mark.parametrize(
    ("deadline", "expected"),
    [
        ("2021-01-10T23:59-08:00", "in the past"),
        ("next tuesday", "--deadline"),
        ("2021-01-10 23:59", "offset"),
        ("9999-12-31 23:59 America/Los_Angeles", "outside the dates exitplan can count with"),
        ("9999-12-31T23:59:00-08:00", "outside the dates exitplan can count with"),
    ],
)
def test_bad_deadline_exits_2_and_writes_nothing(workdir, capsys, deadline, expected):
    err = run_bad(workdir, capsys, "migrate", "--deadline", deadline)
    assert expected in err


def test_migrate_without_a_deadline_says_how_to_give_one(workdir, capsys):
    err = run_bad(workdir, capsys, "migrate")
    assert "--deadline" in err


def test_missing_credentials_exit_2_and_name_the_fix(workdir, capsys, monkeypatch):
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(workdir / "no-such-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(workdir / "no-such-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    (workdir / "config.yaml").write_text(GOOD)
    err = run_bad(workdir, capsys, "migrate", "--config", "config.yaml", "--deadline", "+1h")
    assert "AWS_ACCESS_KEY_ID" in err


def test_unknown_command_is_a_usage_error(workdir, capsys):
    run_bad(workdir, capsys, "evacuate")


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (("--concurrency", "0"), "--concurrency: 0 is out of range; use a number from 1 to 512"),
        (("--bwlimit", "0"), "--bwlimit"),
        (("--only", "bogus"), "--only: unknown kind(s) bogus"),
    ],
    ids=["concurrency-0", "bwlimit-0", "only-bogus"],
)
def test_bad_flags_are_refused_before_anything_is_written(workdir, capsys, flags, expected):
    # On the sandbox: nothing may be written, not even the sandbox's own age key.
    err = run_bad(workdir, capsys, "migrate", "--deadline", "+1h", *flags)
    assert expected in err


def test_verify_without_a_journal_creates_nothing(workdir, capsys):
    (workdir / "config.yaml").write_text(GOOD)
    err = run_bad(workdir, capsys, "verify", "--config", "config.yaml")
    assert "no journal at" in err and not (workdir / "vault").exists()


def test_a_workspace_that_is_a_file_is_refused(workdir, capsys):
    (workdir / "not-a-dir").write_text("x")
    err = run_bad(workdir, capsys, "migrate", "--deadline", "+1h", "--workspace", "not-a-dir")
    assert "is a file, not a directory" in err


def test_a_workspace_that_cannot_be_created_is_refused(workdir, capsys):
    err = run_bad(
        workdir, capsys, "migrate", "--deadline", "+1h", "--workspace", "/proc/exitplan-ws"
    )
    assert "cannot create it" in err


@pytest.mark.parametrize("command", ["status", "resume"])
def test_a_corrupt_journal_says_so_and_how_to_go_on(workdir, capsys, command):
    workspace = workdir / ".exitplan"
    workspace.mkdir()
    (workspace / "journal.sqlite").write_bytes(b"\x00garbage\x00" * 4096)
    err = run_bad(workdir, capsys, command)
    assert "is not a readable journal" in err and "move journal.sqlite aside" in err


def test_an_unreachable_source_is_one_message_not_a_traceback(workdir, capsys):
    (workdir / "config.yaml").write_text(GOOD)  # endpoint 127.0.0.1:9: nothing listens
    err = run_bad(workdir, capsys, "inventory", "--config", "config.yaml")
    assert "cannot reach the source at http://127.0.0.1:9" in err
    assert "Traceback" not in err
