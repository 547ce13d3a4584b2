"""`exitplan verify` finds damage at the destination, marks it, and it is copied again.

Four objects are damaged after a finished export, as a disk or a person might:
one cut short, one zeroed, one deleted, one with a byte flipped. `verify`
finds all four and marks them damaged in the journal; `resume` (or `verify
--repair`) copies exactly those four again, and nothing else.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

import boto3
import botocore.config
import pytest

from orchestrator.cli import main

pytestmark = pytest.mark.e2e

BUCKET = "repair-media"
OBJECTS = {
    f"photos/{i:02d}.jpg": hashlib.sha256(str(i).encode()).digest() * (100 + 37 * i)
    for i in range(30)
}
DAMAGE = {
    "photos/03.jpg": "cut short",
    "photos/07.jpg": "zeroed",
    "photos/11.jpg": "deleted",
    "photos/19.jpg": "a byte flipped",
}


@pytest.fixture(scope="module")
def source(moto_endpoint: str) -> str:
    s3 = boto3.client(
        "s3",
        endpoint_url=moto_endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=botocore.config.Config(s3={"addressing_style": "path"}),
    )
    s3.create_bucket(Bucket=BUCKET)
    for key, body in OBJECTS.items():
        s3.put_object(Bucket=BUCKET, Key=key, Body=body)
    return moto_endpoint


@pytest.fixture
def config(tmp_path: Path, source: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "exitplan.yaml"
    path.write_text(
        f"""\
source:
  aws: {{regions: [us-east-1], endpoint_url: "{source}"}}
destinations:
  - name: vault
    storage: {{driver: local, path: ./vault}}
"""
    )
    return path


def damage(vault: Path) -> None:
    for key, how in DAMAGE.items():
        path = vault / "s3" / BUCKET / key
        data = path.read_bytes()
        if how == "cut short":
            path.write_bytes(data[: len(data) // 2])
        elif how == "zeroed":
            path.write_bytes(b"\0" * len(data))
        elif how == "deleted":
            path.unlink()
        else:
            path.write_bytes(data[:5] + bytes([data[5] ^ 0x01]) + data[6:])


def states(workspace: Path) -> dict[str, str]:
    with sqlite3.connect(workspace / "journal.sqlite") as db:
        return dict(db.execute("SELECT dest_key, state FROM items WHERE kind='s3'"))


def assert_all_byte_identical(vault: Path) -> None:
    for key, body in OBJECTS.items():
        assert (vault / "s3" / BUCKET / key).read_bytes() == body, key


def exported(config: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    assert main(["export", "--config", str(config), "--quiet"]) == 0
    capsys.readouterr()
    vault = config.parent / "vault"
    damage(vault)
    return vault


def test_verify_finds_all_four_and_resume_copies_exactly_those(config, capsys):
    vault = exported(config, capsys)
    assert main(["verify", "--config", str(config)]) == 1
    out = capsys.readouterr().out
    assert "vault: DAMAGED" in out and "1 missing, 3 changed" in out
    assert f"  missing s3/{BUCKET}/photos/11.jpg" in out
    for key in ("photos/03.jpg", "photos/07.jpg", "photos/19.jpg"):
        assert f"  changed s3/{BUCKET}/{key}" in out
    assert "4 object(s) marked damaged in the journal" in out
    marked = states(config.parent / ".exitplan")
    assert sorted(k for k, s in marked.items() if s == "damaged") == sorted(
        f"s3/{BUCKET}/{key}" for key in DAMAGE
    )

    assert main(["resume", "--config", str(config), "--output", "json", "--quiet"]) == 0
    report = json.loads(capsys.readouterr().out)
    s3 = next(k for k in report["kinds"] if k["kind"] == "s3")
    assert s3["copied_this_run_items"] == len(DAMAGE)
    assert s3["already_verified_items"] == len(OBJECTS) - len(DAMAGE)
    assert_all_byte_identical(vault)
    assert main(["verify", "--config", str(config)]) == 0


def test_verify_repair_copies_the_damaged_ones_again(config, capsys):
    vault = exported(config, capsys)
    assert main(["verify", "--repair", "--config", str(config), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "4 object(s) marked damaged in the journal; copying them again" in out
    assert_all_byte_identical(vault)
    [report_path] = (config.parent / ".exitplan" / "runs").glob("*/report.json")
    s3 = next(k for k in json.loads(report_path.read_text())["kinds"] if k["kind"] == "s3")
    assert s3["copied_this_run_items"] == len(DAMAGE)
    assert main(["verify", "--config", str(config)]) == 0
    assert "vault: ok: 30 objects" in capsys.readouterr().out


def test_verify_without_a_journal_refuses_and_creates_nothing(config, capsys):
    assert main(["verify", "--config", str(config)]) == 2
    assert "no journal" in capsys.readouterr().err
    assert not (config.parent / "vault").exists()
