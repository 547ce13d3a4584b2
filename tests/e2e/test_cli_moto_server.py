"""The CLI against a moto server on 127.0.0.1, as it runs against AWS: by endpoint_url.

The second destination is an S3-compatible store (a second moto server reached
through libcloud's MinIO driver), standing in for B2, Wasabi or Spaces.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from pathlib import Path

import boto3
import botocore.config
import pytest

from orchestrator.cli import main
from tests.support.moto_server import moto_server

pytestmark = pytest.mark.e2e

SOURCE_BUCKET = "cli-media"
OBJECTS = {
    f"photos/{i:03d}/image.jpg": hashlib.sha512(str(i).encode()).digest() * (i + 1)
    for i in range(150)
}


def client(endpoint: str, service: str) -> object:
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=botocore.config.Config(s3={"addressing_style": "path"}),
    )


@pytest.fixture(scope="module")
def source(moto_endpoint: str, s3_destination: str) -> str:
    # Seeded after both servers started: starting a server empties moto's state.
    s3 = client(moto_endpoint, "s3")
    s3.create_bucket(Bucket=SOURCE_BUCKET)
    for key, body in OBJECTS.items():
        s3.put_object(Bucket=SOURCE_BUCKET, Key=key, Body=body)
    route53 = client(moto_endpoint, "route53")
    zone = route53.create_hosted_zone(Name="cli.example.", CallerReference="cli")["HostedZone"]
    route53.change_resource_record_sets(
        HostedZoneId=zone["Id"],
        ChangeBatch={
            "Changes": [
                {
                    "Action": "CREATE",
                    "ResourceRecordSet": {
                        "Name": "www.cli.example.",
                        "Type": "A",
                        "TTL": 60,
                        "ResourceRecords": [{"Value": "192.0.2.10"}],
                    },
                }
            ]
        },
    )
    return moto_endpoint


@pytest.fixture(scope="module")
def s3_destination() -> Iterator[str]:
    with moto_server() as url:
        yield url


@pytest.fixture
def config(
    tmp_path: Path, source: str, s3_destination: str, monkeypatch: pytest.MonkeyPatch
) -> Path:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("DEST_KEY_ID", "dest-key")
    monkeypatch.setenv("DEST_SECRET", "canary-dest-secret-Zq81")
    monkeypatch.chdir(tmp_path)
    port = s3_destination.rsplit(":", 1)[1]
    path = tmp_path / "exitplan.yaml"
    path.write_text(
        f"""\
source:
  aws: {{regions: [us-east-1], endpoint_url: "{source}"}}
priorities:
  - {{tier: critical, match: {{kind: route53}}}}
  - {{tier: important, match: {{kind: s3, bucket: cli-*}}}}
destinations:
  - name: vault
    storage: {{driver: local, path: ./vault}}
  - name: offsite
    storage:
      driver: s3
      host: 127.0.0.1
      port: {port}
      secure: false
      container: offsite-{tmp_path.name.lower().replace("_", "-")[:30]}
      key: "${{DEST_KEY_ID}}"
      secret: "${{DEST_SECRET}}"
"""
    )
    return path


def test_migrate_copies_to_both_destinations_verified(config, capsys, s3_destination):
    code = main(
        ["migrate", "--config", str(config), "--deadline", "+1h", "--output", "json", "--quiet"]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    report = json.loads(out)
    s3 = next(k for k in report["kinds"] if k["kind"] == "s3")
    assert s3["complete"]
    vault = config.parent / "vault"
    for key, body in OBJECTS.items():
        assert (vault / "s3" / SOURCE_BUCKET / key).read_bytes() == body
    offsite = client(s3_destination, "s3")
    bucket = next(b for b in report["destinations"] if b["name"] == "offsite")["where"].rsplit(
        "/", 1
    )[1]
    for key, body in list(OBJECTS.items())[:20]:
        got = offsite.get_object(Bucket=bucket, Key=f"s3/{SOURCE_BUCKET}/{key}")["Body"].read()
        assert got == body
    zone = (vault / "route53" / "cli.example.zone").read_text()
    assert re.search(r"^www\.cli\.example\.\s+60\s+IN\s+A\s+192\.0\.2\.10$", zone, re.M)
    # The destination's secret never reaches the report or the journal.
    workspace = config.parent / ".exitplan"
    for path in workspace.rglob("*"):
        if path.is_file():
            assert b"canary-dest-secret" not in path.read_bytes(), path


def test_inventory_json_lists_the_bucket(config, capsys):
    assert main(["inventory", "--config", str(config), "--output", "json"]) == 0
    facts = json.loads(capsys.readouterr().out)
    bucket = next(f for f in facts if f["kind"] == "s3" and f["id"] == SOURCE_BUCKET)
    assert bucket["attributes"]["objects"] == len(OBJECTS) or bucket["attributes"].get(
        "items"
    ) == len(OBJECTS)


def test_status_and_verify_after_a_run_and_verify_finds_damage(config, capsys):
    assert main(["migrate", "--config", str(config), "--deadline", "+1h", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["status", "--config", str(config)]) == 0
    status = capsys.readouterr().out
    # A finished run says when it finished and the margin it kept, not a projection.
    assert ": done" in status and "before the deadline" in status
    assert "projected" not in status
    assert main(["verify", "--config", str(config), "--destination", "vault"]) == 0
    capsys.readouterr()
    damaged = config.parent / "vault" / "s3" / SOURCE_BUCKET / "photos/007/image.jpg"
    data = bytearray(damaged.read_bytes())
    data[10] ^= 0xFF
    damaged.write_bytes(bytes(data))
    assert main(["verify", "--config", str(config), "--destination", "vault"]) == 1
    assert "photos/007/image.jpg" in capsys.readouterr().out


def test_dry_run_writes_nothing(config, capsys):
    before = sorted(p.name for p in config.parent.iterdir())
    assert main(["migrate", "--config", str(config), "--deadline", "+1h", "--dry-run"]) == 0
    assert "dry run" in capsys.readouterr().out
    assert sorted(p.name for p in config.parent.iterdir()) == before
