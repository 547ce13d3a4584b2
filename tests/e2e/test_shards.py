"""`exitplan export --shard K/N` on each machine, then `exitplan merge`: where no Dask
scheduler can run, the same export split by key hash, each shard with its own
journal, merged into what one unsharded export writes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from orchestrator.cli import main
from providers.aws import AwsAccount

pytestmark = pytest.mark.e2e

BUCKET = "shard-media"
TABLE = "shard-sessions"


@pytest.fixture(scope="module")
def source(moto_endpoint: str) -> str:
    account = AwsAccount(regions=["us-east-1"], endpoint_url=moto_endpoint)
    s3 = account.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    for index in range(120):
        body = hashlib.sha512(str(index).encode()).digest() * (index + 1)
        s3.put_object(Bucket=BUCKET, Key=f"photos/{index:03d}.jpg", Body=body)
    dynamodb = account.client("dynamodb")
    for table in (TABLE, f"{TABLE}-archive", f"{TABLE}-audit"):
        dynamodb.create_table(
            TableName=table,
            KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        for index in range(30):
            dynamodb.put_item(TableName=table, Item={"id": {"S": f"{table}-{index:03d}"}})
    return moto_endpoint


def config(tmp: Path, endpoint: str, vault: str) -> Path:
    path = tmp / f"{vault}.yaml"
    path.write_text(
        f'source:\n  aws: {{regions: [us-east-1], endpoint_url: "{endpoint}"}}\n'
        f"workspace: ./{vault}-workspace\n"
        f"destinations:\n  - {{name: vault, storage: {{driver: local, path: ./{vault}}}}}\n"
    )
    return path


def export(path: Path, *extra: str) -> int:
    return main(["export", "--config", str(path), "--only", "s3,dynamodb", "--quiet", *extra])


def tree(root: Path) -> dict[str, str]:
    """Every exported file and its sha256; a DynamoDB data file and its meta by name only
    (a parallel scan interleaves pages differently from one run to the next)."""
    return {
        p.relative_to(root).as_posix(): (
            "" if "dynamodb" in p.parts else hashlib.sha256(p.read_bytes()).hexdigest()
        )
        for p in root.rglob("*")
        if p.is_file() and "manifest" not in p.parts
    }


def comparable(manifest: Path) -> list[str]:
    """The manifest's rows as written, a DynamoDB row by its key and kind only."""
    lines = []
    for line in manifest.read_text().splitlines():
        row = json.loads(line)
        lines.append(f"dynamodb {row['key']}" if row["kind"] == "dynamodb" else line)
    return lines


def rows(manifest: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in manifest.read_text().splitlines()]


def test_two_shards_merged_equal_one_unsharded_run(source, tmp_path, capsys):
    sharded = config(tmp_path, source, "sharded")
    assert export(sharded, "--shard", "1/2") == 0
    # A merge before every shard is exported writes nothing and says which is missing.
    assert main(["merge", "--config", str(sharded)]) == 1
    assert "shard(s) 2/2 not exported yet" in capsys.readouterr().out
    assert not (tmp_path / "sharded" / "manifest" / "manifest.jsonl").exists()
    assert export(sharded, "--shard", "2/2") == 0
    assert main(["merge", "--config", str(sharded)]) == 0
    assert "2 shard manifest(s) merged" in capsys.readouterr().out

    whole = config(tmp_path, source, "whole")
    assert export(whole) == 0

    merged = tmp_path / "sharded" / "manifest" / "manifest.jsonl"
    unsharded = tmp_path / "whole" / "manifest" / "manifest.jsonl"
    assert comparable(merged) == comparable(unsharded)
    assert tree(tmp_path / "sharded") == tree(tmp_path / "whole")
    assert len(rows(merged)) == 120 + 3 * 2

    # Each shard kept its own journal and exported its own part, about half,
    # with a table's meta in the same shard as its data.
    shard_rows = [
        {row["key"] for row in rows(tmp_path / "sharded" / "manifest" / "shards" / name)}
        for name in ("1-of-2.jsonl", "2-of-2.jsonl")
    ]
    assert not shard_rows[0] & shard_rows[1]
    assert all(30 < len(keys) < 96 for keys in shard_rows)
    for keys in shard_rows:
        for key in keys:
            if key.endswith(".jsonl.gz"):
                assert key.replace(".jsonl.gz", ".meta.json") in keys
    for name in ("1-of-2", "2-of-2"):
        assert (tmp_path / "sharded-workspace" / "shards" / name / "journal.sqlite").is_file()


def test_a_shard_that_is_not_k_of_n_is_refused_before_anything_is_written(source, tmp_path, capsys):
    path = config(tmp_path, source, "refused")
    for bad in ("3/2", "0/2", "two", "1/"):
        assert main(["export", "--config", str(path), "--shard", bad]) == 2
        error = capsys.readouterr().err
        assert "--shard" in error and "K/N" in error, error
    assert not (tmp_path / "refused").exists()
    assert not (tmp_path / "refused-workspace").exists()
