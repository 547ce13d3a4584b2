"""Inventory of the seeded sandbox: every kind found, counts and bytes right,
read-only, and no secret value anywhere in the facts."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from orchestrator.inventory import (
    GLOBAL_REGION,
    KINDS,
    Fact,
    collect_inventory,
    fact_to_json,
    summarize_inventory,
)
from orchestrator.sandbox import account as sb
from orchestrator.sandbox.account import Sandbox
from providers.aws import AwsAccount

_SERVICES = ("s3", "ec2", "sts", "rds", "dynamodb", "elbv2", "secretsmanager", "ssm", "route53")


@pytest.fixture(scope="module")
def facts(sandbox: Sandbox) -> list[Fact]:
    return list(collect_inventory(sandbox.account))


def _by_kind(facts: list[Fact], kind: str) -> dict[str, Fact]:
    return {f.id: f for f in facts if f.kind == kind}


def test_every_kind_is_found_with_the_seeded_counts(facts: list[Fact], sandbox: Sandbox) -> None:
    seeded = sandbox.summary
    assert Counter(f.kind for f in facts) == {
        "s3": 3,
        "ec2": 3,
        "ebs-volume": 4,
        "ebs-snapshot": 4,
        "rds": 1,
        "dynamodb": 1,
        "elb": 1,
        "secret": 2,
        "ssm-parameter": 2,
        "route53": 1,
    }
    assert set(KINDS) == {f.kind for f in facts}

    buckets = _by_kind(facts, "s3")
    for bucket in seeded.buckets:
        attrs = buckets[bucket.name].attributes
        assert buckets[bucket.name].region == sb.SANDBOX_REGION
        assert attrs["objects"] == bucket.object_count
        assert attrs["bytes"] == bucket.total_bytes
        assert attrs["website"] is bucket.website
        assert (attrs["versioning"] == "Enabled") is bucket.versioned
        if bucket.versioned:
            assert attrs["versions"] == bucket.version_count
            assert attrs["delete_markers"] == bucket.delete_marker_count
        else:
            assert "versions" not in attrs

    instances = _by_kind(facts, "ec2")
    assert set(instances) == set(seeded.instance_ids.values())
    web1 = instances[seeded.instance_ids["web-1"]].attributes
    worker = instances[seeded.instance_ids["worker-1"]].attributes
    assert (web1["name"], web1["instance_type"], web1["state"]) == ("web-1", "t3.medium", "running")
    assert web1["image_id"] == sb.SANDBOX_AMI_ID
    assert web1["user_data_set"] is True and worker["user_data_set"] is False
    (web_sg,) = web1["security_groups"]
    assert web_sg["name"] == sb.WEB_SECURITY_GROUP
    assert sorted(p["from_port"] for p in web_sg["open_ports"]) == [22, 80, 443]
    assert {v["volume_id"] for v in worker["volumes"]} == {
        seeded.volume_ids["worker-1:root"],
        seeded.volume_ids["worker-1:data"],
    }

    volumes = _by_kind(facts, "ebs-volume")
    assert set(volumes) == set(seeded.volume_ids.values())
    data = volumes[seeded.volume_ids["worker-1:data"]].attributes
    assert data["size_gib"] == 8
    assert data["attachments"] == [
        {"instance_id": seeded.instance_ids["worker-1"], "device": "/dev/sdf"}
    ]

    snapshot = _by_kind(facts, "ebs-snapshot")[seeded.snapshot_id]
    assert snapshot.attributes["source_volume_id"] == seeded.volume_ids["worker-1:data"]
    snapshotted = {
        s.attributes["source_volume_id"] for s in _by_kind(facts, "ebs-snapshot").values()
    }
    assert snapshotted == set(seeded.volume_ids.values())

    db = _by_kind(facts, "rds")[sb.DB_INSTANCE_ID].attributes
    assert (db["engine"], db["instance_class"], db["storage_gb"]) == (
        "postgres",
        "db.t3.medium",
        20,
    )
    assert db["engine_version"].startswith("15.")
    assert db["endpoint_port"] == 5432 and db["endpoint_host"]

    table = _by_kind(facts, "dynamodb")[sb.SESSIONS_TABLE].attributes
    assert table["items"] == seeded.table_item_count
    assert [(k["name"], k["key_type"], k["attribute_type"]) for k in table["key_schema"]] == [
        ("user_id", "HASH", "S"),
        ("session_id", "RANGE", "S"),
    ]

    (zone,) = _by_kind(facts, "route53").values()
    assert zone.region == GLOBAL_REGION
    assert zone.attributes["name"] == sb.HOSTED_ZONE_NAME
    assert zone.attributes["record_sets"] == seeded.record_set_count

    assert set(_by_kind(facts, "secret")) == set(seeded.secret_names)
    params = {k: f.attributes["type"] for k, f in _by_kind(facts, "ssm-parameter").items()}
    assert params == {
        sb.FEATURE_FLAGS_PARAMETER: "String",
        sb.SMTP_PASSWORD_PARAMETER: "SecureString",
    }

    lb = _by_kind(facts, "elb")[seeded.load_balancer_arn].attributes
    assert lb["dns_name"] == seeded.load_balancer_dns
    assert [(x["port"], x["protocol"]) for x in lb["listeners"]] == [(80, "HTTP"), (443, "HTTPS")]


def test_s3_counts_span_pages(facts: list[Fact], sandbox: Sandbox) -> None:
    # The bucket really is bigger than one page, so the paginator had to be followed.
    first_page = sandbox.account.client("s3").list_objects_v2(Bucket=sb.MEDIA_BUCKET)
    assert first_page["IsTruncated"] is True and first_page["KeyCount"] == 1000
    media = _by_kind(facts, "s3")[sb.MEDIA_BUCKET].attributes
    assert media["objects"] == sandbox.summary.bucket(sb.MEDIA_BUCKET).object_count > 2000


def test_no_secret_value_appears_in_any_fact(facts: list[Fact], sandbox: Sandbox) -> None:
    # The canaries are really in the account, so their absence below means something.
    sm = sandbox.account.client("secretsmanager")
    assert sm.get_secret_value(SecretId=sb.DB_PASSWORD_SECRET)["SecretString"] == sb.DB_PASSWORD

    text = repr(facts) + json.dumps([fact_to_json(f) for f in facts])
    for canary in sb.SECRET_CANARIES:
        assert canary not in text
    # User data is reported as set or not, never its content.
    assert "cloud-config" not in text and "nginx" not in text


def test_inventory_only_reads_and_never_asks_for_values(sandbox: Sandbox) -> None:
    account = AwsAccount(regions=(sb.SANDBOX_REGION,))  # fresh clients, hooks stay local
    calls: list[str] = []

    def record(model: Any, **_: Any) -> None:
        calls.append(model.name)

    for service in _SERVICES:
        account.client(service).meta.events.register("before-call", record)

    facts = collect_inventory(account)
    assert isinstance(facts, Iterator)
    assert next(facts).kind == "s3"  # streamed: the first fact comes before the rest is read
    list(facts)

    assert calls
    assert all(name.startswith(("List", "Describe", "Get")) for name in calls), calls
    forbidden = {
        "GetSecretValue",
        "BatchGetSecretValue",
        "GetParameter",
        "GetParameters",
        "GetParametersByPath",
        "GetParameterHistory",
        "GetObject",
    }
    assert forbidden.isdisjoint(calls)


def test_buckets_outside_the_configured_regions_are_named_not_counted(sandbox: Sandbox) -> None:
    account = AwsAccount(regions=("eu-west-1",))
    facts = list(collect_inventory(account))
    buckets = _by_kind(facts, "s3")
    assert set(buckets) == set(sb.BUCKETS)
    for fact in buckets.values():
        assert fact.region == sb.SANDBOX_REGION
        assert fact.attributes == {"outside_configured_regions": True}
    assert not _by_kind(facts, "ec2")


def test_summary_totals(facts: list[Fact], sandbox: Sandbox) -> None:
    summary = summarize_inventory(iter(facts))
    assert summary.fact_count == len(facts)
    assert summary.regions == (sb.SANDBOX_REGION, GLOBAL_REGION)
    s3 = summary.by_kind["s3"]
    assert s3.count == 3
    assert s3.bytes == sum(b.total_bytes for b in sandbox.summary.buckets)
    assert s3.items == sum(b.object_count for b in sandbox.summary.buckets)
    assert summary.by_kind["dynamodb"].items == sandbox.summary.table_item_count
    assert summary.by_kind["ebs-volume"].provisioned_bytes == (16 + 16 + 20 + 8) * 1024**3
    assert summary.by_kind["route53"].items == sandbox.summary.record_set_count
    assert summary.by_kind["secret"].count == 2


def test_fact_json_round_trips_and_facts_hash(facts: list[Fact]) -> None:
    for fact in facts:
        encoded = json.loads(json.dumps(fact_to_json(fact)))
        assert (encoded["kind"], encoded["region"], encoded["id"]) == (
            fact.kind,
            fact.region,
            fact.id,
        )
    assert len(set(facts)) == len(facts)
