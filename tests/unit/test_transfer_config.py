"""The copy engine's executor in the config and on the command line: where copies run."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from orchestrator.cli import main
from orchestrator.config import load_config
from orchestrator.errors import ConfigError
from orchestrator.run.commands import SettingOverrides, config_for, resumed, settings_for
from orchestrator.run.journal import RunRecord
from orchestrator.run.serde import to_json

HEAD = "source: {sandbox: true}\ndestinations: [{name: v, storage: {driver: local, path: ./v}}]\n"


def load(tmp_path: Path, transfer: str):
    path = tmp_path / "exitplan.yaml"
    path.write_text(HEAD + transfer + "\n")
    return load_config(path)


def error(tmp_path: Path, transfer: str) -> str:
    with pytest.raises(ConfigError) as raised:
        load(tmp_path, transfer)
    return str(raised.value)


def test_a_dask_scheduler_is_read_with_its_executor(tmp_path):
    transfer = load(tmp_path, "transfer: {executor: dask, scheduler: tcp://10.0.0.5:8786}").transfer
    assert (transfer.executor, transfer.scheduler, transfer.workers) == (
        "dask",
        "tcp://10.0.0.5:8786",
        None,
    )
    assert load(tmp_path, "transfer: {concurrency: 8}").transfer.executor == "threads"


@pytest.mark.parametrize(
    ("transfer", "where", "says"),
    [
        ("transfer: {executor: dusk}", ":3:22: transfer.executor:", "did you mean 'dask'?"),
        (
            "transfer: {scheduler: tcp://h:8786}",
            ":3:12: transfer.scheduler:",
            "only for the dask executor; add 'executor: dask'",
        ),
        (
            "transfer: {executor: dask}",
            ":3:22: transfer.executor:",
            "add 'scheduler: tcp://HOST:8786' under transfer (for worker processes on this "
            "machine, pass --workers N instead)",
        ),
        (
            "transfer: {executor: dask, scheduler: 10.0.0.5}",
            ":3:39: transfer.scheduler:",
            "write tcp://HOST:PORT",
        ),
    ],
)
def test_a_wrong_executor_setting_names_file_line_column_and_the_fix(
    tmp_path, transfer, where, says
):
    message = error(tmp_path, transfer)
    assert f"exitplan.yaml{where}" in message and says in message, message


@pytest.mark.parametrize("value", ["0", "-1", "two", "257"])
def test_workers_must_be_a_number_of_processes(tmp_path, capsys, monkeypatch, value):
    monkeypatch.chdir(tmp_path)
    assert main(["export", "--workers", value, "--only", "route53"]) == 2
    assert "--workers" in capsys.readouterr().err
    assert not (tmp_path / ".exitplan").exists()


def test_workers_are_recorded_and_resume_restores_them(tmp_path):
    config = load(tmp_path, "")
    config = replace(config, transfer=replace(config.transfer, workers=3))
    settings = settings_for("export", config, deadline=None, kinds=("s3",))
    assert settings.workers == 3
    assert config_for(settings).transfer.workers == 3
    record = RunRecord(
        id="r",
        command="export",
        status="failed",
        started_at=datetime.now(UTC),
        finished_at=None,
        deadline=None,
        invocation=to_json(settings),
    )
    resumed_config, again = resumed(record, SettingOverrides())
    assert again.workers == 3 and resumed_config.transfer.workers == 3
    _, overridden = resumed(record, SettingOverrides(workers=1))
    assert overridden.workers == 1
