"""The sandbox account: what it holds, that the bytes are recomputable, and that
every seeding (in-process, in another process, in a moto server) is identical."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from orchestrator.sandbox import account as sb
from orchestrator.sandbox.account import Sandbox
from providers.aws import AwsAccount

REPO = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------- the content spec


def test_media_spec_has_the_shape_the_exporters_are_tested_against() -> None:
    media = [o for o in sb.seed_objects() if o.bucket == sb.MEDIA_BUCKET]
    sizes = [o.size for o in media]
    total = sum(sizes)

    assert len(media) >= 2000
    assert len({o.key for o in media}) == len(media)
    assert 60_000_000 <= total <= 90_000_000
    large = [s for s in sizes if s >= sb.MIB]
    assert 18 <= len(large) <= 22
    assert all(s <= 8 * sb.MIB for s in large)
    assert sum(1 for s in sizes if sb.KIB <= s <= 64 * sb.KIB) > 0.9 * len(media)
    assert 0 in sizes
    assert any(" " in o.key and not o.key.isascii() for o in media)
    multipart = [o for o in media if o.multipart]
    assert len(multipart) >= 2
    assert all(o.size > sb.MULTIPART_PART_SIZE for o in multipart)
    assert {k.split("/")[0] for k in (o.key for o in media)} == {"users", "posts", "video"}


def test_object_body_is_pure_and_sized() -> None:
    key = "video/2020/0018.mp4"
    first = sb.object_body(sb.MEDIA_BUCKET, key)
    assert first == sb.object_body(sb.MEDIA_BUCKET, key)
    assert len(first) == 7 * sb.MIB + 123
    assert sb.object_body(sb.MEDIA_BUCKET, "users/1000/.keep") == b""
    assert sb.object_body(sb.CONFIG_BUCKET, "app/settings.json", 0) != sb.object_body(
        sb.CONFIG_BUCKET, "app/settings.json", 1
    )
    with pytest.raises(KeyError):
        sb.object_body(sb.MEDIA_BUCKET, "no/such/key")
    with pytest.raises(KeyError):
        sb.object_body(sb.CONFIG_BUCKET, "app/settings.json", 3)


def test_s3_etag_matches_the_multipart_rule() -> None:
    body = b"x" * (sb.MULTIPART_PART_SIZE + 1)
    part_md5s = hashlib.md5(body[: sb.MULTIPART_PART_SIZE]).digest() + hashlib.md5(b"x").digest()
    assert sb.s3_etag(body, sb.MULTIPART_PART_SIZE) == f'"{hashlib.md5(part_md5s).hexdigest()}-2"'
    assert sb.s3_etag(body) == f'"{hashlib.md5(body).hexdigest()}"'


# --------------------------------------------------------------------------- the seeded account


def _list_objects(account: AwsAccount, bucket: str) -> dict[str, dict[str, Any]]:
    s3 = account.client("s3")
    found: dict[str, dict[str, Any]] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            found[obj["Key"]] = obj
    return found


def test_media_bucket_holds_exactly_the_spec(sandbox: Sandbox) -> None:
    listed = _list_objects(sandbox.account, sb.MEDIA_BUCKET)
    spec = {o.key: o for o in sb.seed_objects() if o.bucket == sb.MEDIA_BUCKET}

    assert {k: o["Size"] for k, o in listed.items()} == {k: o.size for k, o in spec.items()}
    summary = sandbox.summary.bucket(sb.MEDIA_BUCKET)
    assert summary.object_count == len(listed)
    assert summary.total_bytes == sum(o["Size"] for o in listed.values())
    for key, obj in spec.items():
        if obj.multipart:
            body = sb.object_body(sb.MEDIA_BUCKET, key)
            assert listed[key]["ETag"] == sb.s3_etag(body, sb.MULTIPART_PART_SIZE)
            assert listed[key]["ETag"].endswith('-2"')


def test_stored_bytes_are_the_recomputable_bytes(sandbox: Sandbox) -> None:
    s3 = sandbox.account.client("s3")
    keys = [
        "users/1007/Profilbild München (2).jpg",
        "posts/2020/11/ünïcödé post/cover image.jpg",
        "users/1000/.keep",
        "video/2020/0019.mp4",
        "users/1399/avatar.jpg",
    ]
    for key in keys:
        got = s3.get_object(Bucket=sb.MEDIA_BUCKET, Key=key)
        body = got["Body"].read()
        assert body == sb.object_body(sb.MEDIA_BUCKET, key), key
        if key != "video/2020/0019.mp4":
            assert got["ETag"] == sb.s3_etag(body)


def test_config_bucket_keeps_versions_and_a_delete_marker(sandbox: Sandbox) -> None:
    s3 = sandbox.account.client("s3")
    assert s3.get_bucket_versioning(Bucket=sb.CONFIG_BUCKET)["Status"] == "Enabled"
    resp = s3.list_object_versions(Bucket=sb.CONFIG_BUCKET)
    per_key = Counter(v["Key"] for v in resp["Versions"])
    assert per_key == Counter(dict(sb._CONFIG_KEYS))
    assert [m["Key"] for m in resp["DeleteMarkers"]] == [sb.CONFIG_DELETED_KEY]
    assert resp["DeleteMarkers"][0]["IsLatest"] is True

    # Versions come newest first; generation n is the (n+1)-th oldest.
    settings = [v for v in resp["Versions"] if v["Key"] == "app/settings.json"]
    for generation, version in enumerate(reversed(settings)):
        body = s3.get_object(
            Bucket=sb.CONFIG_BUCKET, Key="app/settings.json", VersionId=version["VersionId"]
        )["Body"].read()
        assert body == sb.object_body(sb.CONFIG_BUCKET, "app/settings.json", generation)

    summary = sandbox.summary.bucket(sb.CONFIG_BUCKET)
    assert summary.version_count == sum(per_key.values())
    assert summary.object_count == len(sb._CONFIG_KEYS) - 1
    assert len(_list_objects(sandbox.account, sb.CONFIG_BUCKET)) == summary.object_count


def test_static_site_is_a_website(sandbox: Sandbox) -> None:
    s3 = sandbox.account.client("s3")
    website = s3.get_bucket_website(Bucket=sb.SITE_BUCKET)
    assert website["IndexDocument"]["Suffix"] == "index.html"
    assert website["ErrorDocument"]["Key"] == "error.html"
    index = s3.get_object(Bucket=sb.SITE_BUCKET, Key="index.html")
    assert index["ContentType"] == "text/html"
    assert index["Body"].read() == sb.object_body(sb.SITE_BUCKET, "index.html")
    assert {"css/site.css", "js/app.js", "error.html"} <= set(
        _list_objects(sandbox.account, sb.SITE_BUCKET)
    )


def test_instances_security_groups_and_volumes(sandbox: Sandbox) -> None:
    ec2 = sandbox.account.client("ec2")
    ids = sandbox.summary.instance_ids
    instances = {
        i["InstanceId"]: i
        for r in ec2.describe_instances(InstanceIds=list(ids.values()))["Reservations"]
        for i in r["Instances"]
    }
    types = {name: instances[iid]["InstanceType"] for name, iid in ids.items()}
    assert types == {"web-1": "t3.medium", "web-2": "t3.medium", "worker-1": "t3.large"}
    for name, iid in ids.items():
        tags = {t["Key"]: t["Value"] for t in instances[iid]["Tags"]}
        assert tags["Name"] == name
        user_data = ec2.describe_instance_attribute(InstanceId=iid, Attribute="userData")
        encoded = user_data.get("UserData", {}).get("Value")
        if name.startswith("web-"):
            assert base64.b64decode(encoded).decode() == sb.WEB_USER_DATA
        else:
            assert not encoded

    groups = {
        g["GroupName"]: g
        for g in ec2.describe_security_groups(
            GroupIds=list(sandbox.summary.security_group_ids.values())
        )["SecurityGroups"]
    }
    web_ports = sorted(p["FromPort"] for p in groups["microblog-web"]["IpPermissions"])
    assert web_ports == [22, 80, 443]
    (db_rule,) = groups["microblog-db"]["IpPermissions"]
    assert db_rule["FromPort"] == 5432
    assert db_rule["UserIdGroupPairs"][0]["GroupId"] == groups["microblog-web"]["GroupId"]

    volumes = ec2.describe_volumes()["Volumes"]
    # Only the attached ones: the EBS direct snapshot's scratch volume is gone.
    assert {v["VolumeId"] for v in volumes} == set(sandbox.summary.volume_ids.values())
    data = next(v for v in volumes if v["VolumeId"] == sandbox.summary.volume_ids["worker-1:data"])
    assert data["Size"] == 8
    assert data["Attachments"][0]["InstanceId"] == ids["worker-1"]


def test_snapshot_is_readable_through_ebs_direct_apis(sandbox: Sandbox) -> None:
    ebs = sandbox.account.client("ebs")
    snapshot_id = sandbox.summary.snapshot_id
    listing = ebs.list_snapshot_blocks(SnapshotId=snapshot_id)
    indices = sorted(b["BlockIndex"] for b in listing["Blocks"])
    assert indices == sorted(sb.SNAPSHOT_BLOCK_INDICES)
    block_size = listing["BlockSize"]  # moto says 512, AWS 524288: read it, never assume
    for block in listing["Blocks"]:
        got = ebs.get_snapshot_block(
            SnapshotId=snapshot_id,
            BlockIndex=block["BlockIndex"],
            BlockToken=block["BlockToken"],
        )
        data = got["BlockData"].read()
        assert len(data) == block_size
        assert data == sb.snapshot_block_data(block["BlockIndex"])
        assert got["Checksum"] == base64.b64encode(hashlib.sha256(data).digest()).decode()

    (snap,) = sandbox.account.client("ec2").describe_snapshots(SnapshotIds=[snapshot_id])[
        "Snapshots"
    ]
    tags = {t["Key"]: t["Value"] for t in snap["Tags"]}
    assert tags["volume-id"] == sandbox.summary.volume_ids["worker-1:data"]


def test_load_balancer_listeners_and_targets(sandbox: Sandbox) -> None:
    elb = sandbox.account.client("elbv2")
    listeners = elb.describe_listeners(LoadBalancerArn=sandbox.summary.load_balancer_arn)
    assert sorted(x["Port"] for x in listeners["Listeners"]) == [80, 443]
    health = elb.describe_target_health(TargetGroupArn=sandbox.summary.target_group_arn)
    targets = {t["Target"]["Id"] for t in health["TargetHealthDescriptions"]}
    ids = sandbox.summary.instance_ids
    assert targets == {ids["web-1"], ids["web-2"]}


def test_database_table_zone_secrets(sandbox: Sandbox) -> None:
    account = sandbox.account
    (db,) = account.client("rds").describe_db_instances(DBInstanceIdentifier=sb.DB_INSTANCE_ID)[
        "DBInstances"
    ]
    assert (db["Engine"], db["DBInstanceClass"], db["AllocatedStorage"]) == (
        "postgres",
        "db.t3.medium",
        20,
    )
    assert db["EngineVersion"].startswith("15.")

    ddb = account.client("dynamodb")
    count = 0
    types: set[str] = set()
    for page in ddb.get_paginator("scan").paginate(TableName=sb.SESSIONS_TABLE):
        count += page["Count"]
        for item in page["Items"]:
            for value in item.values():
                types |= set(value)
    assert count == sandbox.summary.table_item_count >= 1000
    assert {"S", "N", "BOOL", "L", "M", "B"} <= types

    r53 = account.client("route53")
    records = [
        r
        for page in r53.get_paginator("list_resource_record_sets").paginate(
            HostedZoneId=sandbox.summary.hosted_zone_id
        )
        for r in page["ResourceRecordSets"]
    ]
    assert len(records) == sandbox.summary.record_set_count >= 22
    assert {"A", "AAAA", "CNAME", "MX", "TXT", "SRV", "CAA", "NS", "SOA"} <= {
        r["Type"] for r in records
    }
    motd = next(r for r in records if r["Name"] == f"motd.{sb.HOSTED_ZONE_NAME}")
    assert (
        motd["ResourceRecords"][0]["Value"]
        == '"He said \\"hello world\\" and left" "second string"'
    )

    sm = account.client("secretsmanager")
    assert sm.get_secret_value(SecretId=sb.DB_PASSWORD_SECRET)["SecretString"] == sb.DB_PASSWORD
    api_keys = json.loads(sm.get_secret_value(SecretId=sb.API_KEYS_SECRET)["SecretString"])
    assert api_keys == sb.API_KEYS
    ssm = account.client("ssm")
    smtp = ssm.get_parameter(Name=sb.SMTP_PASSWORD_PARAMETER, WithDecryption=True)["Parameter"]
    assert (smtp["Type"], smtp["Value"]) == ("SecureString", sb.SMTP_PASSWORD)
    assert set(sb.SECRET_CANARIES) >= {sb.DB_PASSWORD, sb.SMTP_PASSWORD, *sb.API_KEYS.values()}


def test_seeding_is_fast_enough(sandbox: Sandbox) -> None:
    # Generous against slow CI; the measured time on a dev box is ~7 s.
    assert sandbox.summary.elapsed_seconds < 30


# --------------------------------------------------------------------------- determinism


def fingerprint(account: AwsAccount) -> dict[str, Any]:
    """Every id and checksum moto made up while seeding, in a comparable form."""
    s3 = account.client("s3")
    ec2 = account.client("ec2")
    config = s3.list_object_versions(Bucket=sb.CONFIG_BUCKET)
    media_etags = {k: o["ETag"] for k, o in _list_objects(account, sb.MEDIA_BUCKET).items()}
    return {
        "config_versions": [
            [v["Key"], v["VersionId"], v["ETag"], v["IsLatest"]] for v in config["Versions"]
        ],
        "delete_markers": [[m["Key"], m["VersionId"]] for m in config["DeleteMarkers"]],
        "media_etags": media_etags,
        "instances": sorted(
            [i["InstanceId"], i["PrivateIpAddress"]]
            for r in ec2.describe_instances()["Reservations"]
            for i in r["Instances"]
        ),
        "volumes": sorted(v["VolumeId"] for v in ec2.describe_volumes()["Volumes"]),
        # moto ignores OwnerIds and lists its ~1,200 AMI snapshots as well.
        "snapshots": sorted(
            s["SnapshotId"]
            for s in ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]
            if s["OwnerId"] == account.client("sts").get_caller_identity()["Account"]
        ),
        "vpcs": sorted(v["VpcId"] for v in ec2.describe_vpcs()["Vpcs"]),
        "security_groups": sorted(
            g["GroupId"] for g in ec2.describe_security_groups()["SecurityGroups"]
        ),
        "load_balancers": sorted(
            [lb["LoadBalancerArn"], lb["DNSName"]]
            for lb in account.client("elbv2").describe_load_balancers()["LoadBalancers"]
        ),
        "secrets": sorted(
            s["ARN"] for s in account.client("secretsmanager").list_secrets()["SecretList"]
        ),
        "zones": sorted(
            z["Id"] for z in account.client("route53").list_hosted_zones()["HostedZones"]
        ),
    }


def summary_ids(summary: sb.SeedSummary) -> dict[str, Any]:
    return json.loads(json.dumps(summary.__dict__, default=lambda o: o.__dict__))


# Run in a child process: prints one JSON line per seeding.
_CHILD = """
import json, os, sys
from orchestrator.sandbox import account as sb
from tests.unit.test_sandbox import fingerprint, summary_ids
mode = sys.argv[1]
out = []
if mode == "server":
    from moto.server import ThreadedMotoServer
    from providers.aws import AwsAccount
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    sb.seed_moto_random(endpoint_url=url)
    account = AwsAccount(regions=(sb.SANDBOX_REGION,), endpoint_url=url)
    summary = sb.seed_microblog(account)
    out.append({"fingerprint": fingerprint(account), "summary": summary_ids(summary)})
    server.stop()
else:
    for _ in range(int(mode)):
        with sb.running_sandbox() as running:
            out.append({"fingerprint": fingerprint(running.account),
                        "summary": summary_ids(running.summary)})
        out[-1]["env_restored"] = "AWS_ACCESS_KEY_ID" not in os.environ
print(json.dumps(out))
"""


def _start_child(mode: str, hash_seed: str) -> subprocess.Popen[str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("AWS_") and k not in {"MOTO_ALLOW_NONEXISTENT_REGION"}
    }
    # Different hash seeds: set and dict-of-set iteration order must not leak into ids.
    env["PYTHONHASHSEED"] = hash_seed
    env["PYTHONPATH"] = str(REPO)
    if mode == "server":
        env.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
    return subprocess.Popen(
        [sys.executable, "-c", _CHILD, mode],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _collect(child: subprocess.Popen[str]) -> list[dict[str, Any]]:
    stdout, stderr = child.communicate(timeout=300)
    assert child.returncode == 0, stderr
    result: list[dict[str, Any]] = json.loads(stdout.strip().splitlines()[-1])
    return result


def test_every_seeding_gives_identical_ids_and_checksums() -> None:
    """Twice in one new process, once in another with another hash seed, and in
    a moto server: the same version ids, ETags, instance, volume and snapshot
    ids, and an equal SeedSummary. (New processes, as a resume is: in this
    test process, threads left by earlier tests could draw from moto's one
    random generator while it seeds.)"""
    children = [_start_child("2", "1"), _start_child("1", "2"), _start_child("server", "3")]
    twice, once, server = (_collect(c) for c in children)

    runs = [*twice, *once, *server]
    for run in runs:
        assert run.pop("env_restored", True), "sandbox left dummy credentials in os.environ"
        del run["summary"]["elapsed_seconds"]
    assert len(runs) == 4
    here = runs.pop(0)
    for run in runs:
        assert run["fingerprint"] == here["fingerprint"]
        assert run["summary"] == here["summary"]
    # A fingerprint that is empty would compare equal too.
    fp = here["fingerprint"]
    assert len(fp["media_etags"]) >= 2000
    assert len(fp["config_versions"]) == sum(n for _, n in sb._CONFIG_KEYS)
    # Every volume has its nightly snapshot.
    assert len(fp["instances"]) == 3 and len(fp["volumes"]) == 4 and len(fp["snapshots"]) == 4
