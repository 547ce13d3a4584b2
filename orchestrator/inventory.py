"""Read-only facts about the source account: what there is to evacuate.

``collect_inventory`` streams one :class:`Fact` per resource, region by region,
using paginators throughout; S3 objects are counted and summed while paging and
never held in a list, so a bucket of millions of objects costs constant memory.

Only describe/list calls are made. Secret and parameter VALUES are never read
(no ``GetSecretValue``/``GetParameter*``): facts hold names and types only,
because facts end up in the journal, the plan and the report.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import botocore.exceptions

from orchestrator.errors import FatalError
from orchestrator.export.iam_policy import client_error_is_access_denied, denied_message
from providers.aws import AwsAccount

#: Every kind of fact, in the order they are collected within a region.
KINDS: tuple[str, ...] = (
    "s3",
    "ec2",
    "ebs-volume",
    "ebs-snapshot",
    "rds",
    "dynamodb",
    "elb",
    "secret",
    "ssm-parameter",
    "route53",
)
#: The region of facts about global services (Route 53).
GLOBAL_REGION = "global"
GIB = 1024**3


@dataclass(frozen=True)
class Fact:
    """One resource in the source account.

    ``id`` is the resource's own name or id (bucket name, instance id, table
    name, load balancer ARN, ...), unique within (kind, region). ``attributes``
    holds JSON-able values only (str, int, float, bool, None, lists, dicts);
    it never holds a secret value. Where a fact knows how many bytes of data
    the resource holds, ``attributes["bytes"]`` says so; provisioned sizes are
    ``attributes["provisioned_bytes"]``.
    """

    kind: str
    region: str
    id: str
    attributes: dict[str, Any] = field(default_factory=dict, hash=False)


def fact_to_json(fact: Fact) -> dict[str, Any]:
    """The fact as a JSON-able dict: ``{"kind", "region", "id", "attributes"}``."""
    return {
        "kind": fact.kind,
        "region": fact.region,
        "id": fact.id,
        "attributes": _jsonable(fact.attributes),
    }


@dataclass(frozen=True)
class KindTotals:
    """Totals over the facts of one kind.

    ``bytes`` sums what facts report as data held; ``provisioned_bytes`` sums
    allocated capacity (EBS, RDS); ``items`` sums contained items (S3 objects,
    DynamoDB items, DNS record sets).
    """

    count: int = 0
    bytes: int = 0
    provisioned_bytes: int = 0
    items: int = 0


@dataclass(frozen=True)
class InventorySummary:
    """Totals per kind (every kind in :data:`KINDS` present, zero if none) and overall."""

    by_kind: dict[str, KindTotals]
    regions: tuple[str, ...]

    @property
    def fact_count(self) -> int:
        return sum(t.count for t in self.by_kind.values())

    @property
    def total_bytes(self) -> int:
        return sum(t.bytes for t in self.by_kind.values())

    def as_counts(self) -> dict[str, dict[str, int]]:
        """Kinds that have any facts, as plain numbers for reports and the CLI."""
        return {
            kind: {"count": t.count, "bytes": t.bytes, "items": t.items}
            for kind, t in self.by_kind.items()
            if t.count
        }


def summarize_inventory(facts: Iterable[Fact]) -> InventorySummary:
    """Sum facts per kind in one pass (``facts`` may be the live stream)."""
    totals: dict[str, list[int]] = {kind: [0, 0, 0, 0] for kind in KINDS}
    regions: dict[str, None] = {}
    for fact in facts:
        row = totals.setdefault(fact.kind, [0, 0, 0, 0])
        row[0] += 1
        row[1] += int(fact.attributes.get("bytes") or 0)
        row[2] += int(fact.attributes.get("provisioned_bytes") or 0)
        row[3] += int(fact.attributes.get("items") or 0)
        regions.setdefault(fact.region, None)
    return InventorySummary(
        by_kind={kind: KindTotals(*row) for kind, row in totals.items()},
        regions=tuple(regions),
    )


def collect_inventory(account: AwsAccount) -> Iterator[Fact]:
    """Stream facts about every resource of a known kind in ``account``'s regions.

    Per region, in :data:`KINDS` order; Route 53 (global) comes once, last,
    with region :data:`GLOBAL_REGION`. S3 buckets are listed once and each is
    reported in its own region; a bucket outside the configured regions is
    reported without counting its objects (``outside_configured_regions``).
    Read-only, so safe to repeat. Raises FatalError naming the API call when
    the credentials are not allowed to make it; throttling and transient
    errors are retried by botocore.
    """
    bucket_regions = _bucket_regions(account)
    for region in account.regions:
        yield from _s3_facts(account, region, [b for b, r in bucket_regions if r == region])
        yield from _ec2_facts(account, region)
        yield from _volume_facts(account, region)
        yield from _snapshot_facts(account, region)
        yield from _rds_facts(account, region)
        yield from _dynamodb_facts(account, region)
        yield from _elb_facts(account, region)
        yield from _secret_facts(account, region)
        yield from _parameter_facts(account, region)
    for bucket, region in bucket_regions:
        if region not in account.regions:
            yield Fact("s3", region, bucket, {"outside_configured_regions": True})
    yield from _route53_facts(account)


# --------------------------------------------------------------------------- helpers


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, bytes):
        # No API we call returns bytes in a fact; refuse rather than guess an encoding.
        raise TypeError("a fact attribute holds bytes; facts must be JSON-able")
    return value


def _tags(tag_list: list[dict[str, str]] | None) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in tag_list or []}


@contextmanager
def _calling(service: str, operation: str) -> Iterator[None]:
    """Turn a permission error into a FatalError that names the missing permission."""
    try:
        yield
    except botocore.exceptions.ClientError as exc:
        if client_error_is_access_denied(exc):
            code = exc.response.get("Error", {}).get("Code", "")
            raise FatalError(
                f"inventory: {denied_message(service, operation, detail=code)}"
            ) from exc
        raise


def _paginate(client: Any, operation: str, key: str, **kwargs: Any) -> Iterator[Any]:
    """Every element of ``key`` across all pages of ``operation``."""
    service = client.meta.service_model.service_name
    with _calling(service, client.meta.method_to_api_mapping.get(operation, operation)):
        for page in client.get_paginator(operation).paginate(**kwargs):
            yield from page.get(key, [])


# --------------------------------------------------------------------------- S3


def _bucket_regions(account: AwsAccount) -> list[tuple[str, str]]:
    """(bucket, region) for every bucket the account owns (a short list, not objects)."""
    s3 = account.client("s3")
    result = []
    with _calling("s3", "ListBuckets"):
        buckets = s3.list_buckets().get("Buckets", [])
    for bucket in buckets:
        name = bucket["Name"]
        with _calling("s3", "GetBucketLocation"):
            location = s3.get_bucket_location(Bucket=name).get("LocationConstraint")
        # S3 reports us-east-1 as no constraint, and eu-west-1 by its old name.
        region = {None: "us-east-1", "": "us-east-1", "EU": "eu-west-1"}.get(location, location)
        result.append((name, region))
    return result


def _s3_facts(account: AwsAccount, region: str, buckets: list[str]) -> Iterator[Fact]:
    s3 = account.client("s3", region)
    for bucket in buckets:
        count = total = 0
        for obj in _paginate(s3, "list_objects_v2", "Contents", Bucket=bucket):
            count += 1
            total += obj["Size"]
        with _calling("s3", "GetBucketVersioning"):
            status = s3.get_bucket_versioning(Bucket=bucket).get("Status", "Disabled")
        attributes: dict[str, Any] = {
            "objects": count,
            "items": count,
            "bytes": total,
            "versioning": status,
            "website": _has_website(s3, bucket),
        }
        if status in ("Enabled", "Suspended"):
            attributes.update(_version_totals(s3, bucket))
        yield Fact("s3", region, bucket, attributes)


def _version_totals(s3: Any, bucket: str) -> dict[str, int]:
    versions = version_bytes = markers = 0
    with _calling("s3", "ListObjectVersions"):
        for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
            for version in page.get("Versions", []):
                versions += 1
                version_bytes += version["Size"]
            markers += len(page.get("DeleteMarkers", []))
    return {"versions": versions, "version_bytes": version_bytes, "delete_markers": markers}


def _has_website(s3: Any, bucket: str) -> bool:
    try:
        with _calling("s3", "GetBucketWebsite"):
            s3.get_bucket_website(Bucket=bucket)
    except botocore.exceptions.ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "NoSuchWebsiteConfiguration":
            return False
        raise
    return True


# --------------------------------------------------------------------------- EC2 / EBS


def _security_groups(ec2: Any) -> dict[str, dict[str, Any]]:
    """Group id -> name and open ports, for the instances' facts."""
    groups = {}
    for group in _paginate(ec2, "describe_security_groups", "SecurityGroups"):
        open_ports = []
        for perm in group.get("IpPermissions", []):
            sources = [r["CidrIp"] for r in perm.get("IpRanges", [])]
            sources += [r["CidrIpv6"] for r in perm.get("Ipv6Ranges", [])]
            sources += [p["GroupId"] for p in perm.get("UserIdGroupPairs", [])]
            open_ports.append(
                {
                    "protocol": perm.get("IpProtocol"),
                    "from_port": perm.get("FromPort"),
                    "to_port": perm.get("ToPort"),
                    "sources": sources,
                }
            )
        groups[group["GroupId"]] = {"name": group.get("GroupName"), "open_ports": open_ports}
    return groups


def _instance_size(
    ec2: Any, instance_type: str | None, known: dict[str, dict[str, int] | None]
) -> dict[str, int] | None:
    """vCPUs and memory of an instance type as AWS describes it (None: AWS does not)."""
    if not instance_type:
        return None
    if instance_type not in known:
        try:
            with _calling("ec2", "DescribeInstanceTypes"):
                found = ec2.describe_instance_types(InstanceTypes=[instance_type])["InstanceTypes"]
        except botocore.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "InvalidInstanceType":
                raise
            found = []
        known[instance_type] = (
            {
                "vcpus": int(found[0]["VCpuInfo"]["DefaultVCpus"]),
                "memory_mib": int(found[0]["MemoryInfo"]["SizeInMiB"]),
            }
            if found
            else None
        )
    return known[instance_type]


def _ec2_facts(account: AwsAccount, region: str) -> Iterator[Fact]:
    ec2 = account.client("ec2", region)
    groups: dict[str, dict[str, Any]] | None = None
    sizes: dict[str, dict[str, int] | None] = {}
    for reservation in _paginate(ec2, "describe_instances", "Reservations"):
        for instance in reservation.get("Instances", []):
            if groups is None:  # only fetched when there is an instance to describe
                groups = _security_groups(ec2)
            instance_id = instance["InstanceId"]
            with _calling("ec2", "DescribeInstanceAttribute"):
                user_data = ec2.describe_instance_attribute(
                    InstanceId=instance_id, Attribute="userData"
                )
            tags = _tags(instance.get("Tags"))
            size = _instance_size(ec2, instance.get("InstanceType"), sizes) or {}
            yield Fact(
                "ec2",
                region,
                instance_id,
                {
                    "name": tags.get("Name"),
                    "instance_type": instance.get("InstanceType"),
                    # From DescribeInstanceTypes; absent when AWS does not describe the type.
                    "vcpus": size.get("vcpus"),
                    "memory_mib": size.get("memory_mib"),
                    "image_id": instance.get("ImageId"),
                    "state": instance.get("State", {}).get("Name"),
                    "availability_zone": instance.get("Placement", {}).get("AvailabilityZone"),
                    "vpc_id": instance.get("VpcId"),
                    "private_ip": instance.get("PrivateIpAddress"),
                    "public_ip": instance.get("PublicIpAddress"),
                    "security_groups": [
                        {
                            "id": sg["GroupId"],
                            "name": sg.get("GroupName"),
                            "open_ports": groups.get(sg["GroupId"], {}).get("open_ports", []),
                        }
                        for sg in instance.get("SecurityGroups", [])
                    ],
                    "volumes": [
                        {"device": m["DeviceName"], "volume_id": m["Ebs"]["VolumeId"]}
                        for m in instance.get("BlockDeviceMappings", [])
                        if "Ebs" in m
                    ],
                    # Whether, not what: user data often carries secrets.
                    "user_data_set": bool(user_data.get("UserData", {}).get("Value")),
                    "tags": tags,
                },
            )


def _volume_facts(account: AwsAccount, region: str) -> Iterator[Fact]:
    ec2 = account.client("ec2", region)
    for volume in _paginate(ec2, "describe_volumes", "Volumes"):
        yield Fact(
            "ebs-volume",
            region,
            volume["VolumeId"],
            {
                "size_gib": volume["Size"],
                "provisioned_bytes": volume["Size"] * GIB,
                "volume_type": volume.get("VolumeType"),
                "state": volume.get("State"),
                "availability_zone": volume.get("AvailabilityZone"),
                "encrypted": volume.get("Encrypted", False),
                "attachments": [
                    {"instance_id": a.get("InstanceId"), "device": a.get("Device")}
                    for a in volume.get("Attachments", [])
                ],
                "tags": _tags(volume.get("Tags")),
            },
        )


def _snapshot_facts(account: AwsAccount, region: str) -> Iterator[Fact]:
    ec2 = account.client("ec2", region)
    with _calling("sts", "GetCallerIdentity"):
        own_account = account.client("sts", region).get_caller_identity()["Account"]
    for snapshot in _paginate(ec2, "describe_snapshots", "Snapshots", OwnerIds=["self"]):
        # OwnerIds=self is the contract, but moto ignores it and lists the
        # snapshots behind its public AMIs too: check the owner ourselves.
        if snapshot.get("OwnerId") != own_account:
            continue
        tags = _tags(snapshot.get("Tags"))
        yield Fact(
            "ebs-snapshot",
            region,
            snapshot["SnapshotId"],
            {
                "volume_id": snapshot.get("VolumeId"),
                # The direct-API snapshots name their source volume in a tag.
                "source_volume_id": tags.get("volume-id", snapshot.get("VolumeId")),
                "size_gib": snapshot.get("VolumeSize"),
                "provisioned_bytes": (snapshot.get("VolumeSize") or 0) * GIB,
                "state": snapshot.get("State"),
                "description": snapshot.get("Description"),
                "start_time": snapshot.get("StartTime"),
                "encrypted": snapshot.get("Encrypted", False),
                "tags": tags,
            },
        )


# --------------------------------------------------------------------------- databases


def _rds_facts(account: AwsAccount, region: str) -> Iterator[Fact]:
    rds = account.client("rds", region)
    for db in _paginate(rds, "describe_db_instances", "DBInstances"):
        endpoint = db.get("Endpoint") or {}
        yield Fact(
            "rds",
            region,
            db["DBInstanceIdentifier"],
            {
                "engine": db.get("Engine"),
                "engine_version": db.get("EngineVersion"),
                "instance_class": db.get("DBInstanceClass"),
                "storage_gb": db.get("AllocatedStorage"),
                "provisioned_bytes": (db.get("AllocatedStorage") or 0) * GIB,
                "storage_type": db.get("StorageType"),
                "status": db.get("DBInstanceStatus"),
                "endpoint_host": endpoint.get("Address"),
                "endpoint_port": endpoint.get("Port"),
                "db_name": db.get("DBName"),
                "master_username": db.get("MasterUsername"),
                "multi_az": db.get("MultiAZ", False),
                "arn": db.get("DBInstanceArn"),
            },
        )


def _dynamodb_facts(account: AwsAccount, region: str) -> Iterator[Fact]:
    ddb = account.client("dynamodb", region)
    for name in _paginate(ddb, "list_tables", "TableNames"):
        with _calling("dynamodb", "DescribeTable"):
            table = ddb.describe_table(TableName=name)["Table"]
        types = {a["AttributeName"]: a["AttributeType"] for a in table["AttributeDefinitions"]}
        yield Fact(
            "dynamodb",
            region,
            name,
            {
                # AWS refreshes these about every six hours: an estimate for planning.
                "items": table.get("ItemCount", 0),
                "bytes": table.get("TableSizeBytes", 0),
                "key_schema": [
                    {
                        "name": k["AttributeName"],
                        "key_type": k["KeyType"],
                        "attribute_type": types.get(k["AttributeName"]),
                    }
                    for k in table["KeySchema"]
                ],
                "billing_mode": table.get("BillingModeSummary", {}).get(
                    "BillingMode", "PROVISIONED"
                ),
                "status": table.get("TableStatus"),
                "arn": table.get("TableArn"),
            },
        )


# --------------------------------------------------------------------------- network, DNS


def _elb_facts(account: AwsAccount, region: str) -> Iterator[Fact]:
    elb = account.client("elbv2", region)
    for lb in _paginate(elb, "describe_load_balancers", "LoadBalancers"):
        arn = lb["LoadBalancerArn"]
        listeners = [
            {
                "port": listener.get("Port"),
                "protocol": listener.get("Protocol"),
                "actions": [a.get("Type") for a in listener.get("DefaultActions", [])],
                "target_groups": [
                    a["TargetGroupArn"]
                    for a in listener.get("DefaultActions", [])
                    if "TargetGroupArn" in a
                ],
            }
            for listener in _paginate(elb, "describe_listeners", "Listeners", LoadBalancerArn=arn)
        ]
        yield Fact(
            "elb",
            region,
            arn,
            {
                "name": lb.get("LoadBalancerName"),
                "dns_name": lb.get("DNSName"),
                "type": lb.get("Type"),
                "scheme": lb.get("Scheme"),
                "vpc_id": lb.get("VpcId"),
                "state": lb.get("State", {}).get("Code"),
                "security_groups": lb.get("SecurityGroups", []),
                "listeners": sorted(listeners, key=lambda x: x["port"] or 0),
            },
        )


def _route53_facts(account: AwsAccount) -> Iterator[Fact]:
    r53 = account.client("route53")
    for zone in _paginate(r53, "list_hosted_zones", "HostedZones"):
        zone_id = zone["Id"].rsplit("/", 1)[-1]
        # Counted rather than taken from ResourceRecordSetCount, which some
        # endpoints leave out; a zone is small enough to page through.
        records = 0
        types: dict[str, None] = {}
        for record in _paginate(
            r53, "list_resource_record_sets", "ResourceRecordSets", HostedZoneId=zone["Id"]
        ):
            records += 1
            types.setdefault(record["Type"], None)
        yield Fact(
            "route53",
            GLOBAL_REGION,
            zone_id,
            {
                "name": zone["Name"],
                "private": zone.get("Config", {}).get("PrivateZone", False),
                "record_sets": records,
                "items": records,
                "record_types": sorted(types),
            },
        )


# --------------------------------------------------------------------------- secrets (names only)


def _secret_facts(account: AwsAccount, region: str) -> Iterator[Fact]:
    sm = account.client("secretsmanager", region)
    for secret in _paginate(sm, "list_secrets", "SecretList"):
        yield Fact(
            "secret",
            region,
            secret["Name"],
            {
                "arn": secret.get("ARN"),
                "type": "secretsmanager",
                "kms_key_id": secret.get("KmsKeyId"),
                "rotation_enabled": secret.get("RotationEnabled", False),
                "last_changed": secret.get("LastChangedDate"),
            },
        )


def _parameter_facts(account: AwsAccount, region: str) -> Iterator[Fact]:
    ssm = account.client("ssm", region)
    # DescribeParameters returns metadata only: the values never reach us.
    for parameter in _paginate(ssm, "describe_parameters", "Parameters"):
        yield Fact(
            "ssm-parameter",
            region,
            parameter["Name"],
            {
                "type": parameter.get("Type"),
                "tier": parameter.get("Tier"),
                "version": parameter.get("Version"),
                "last_modified": parameter.get("LastModifiedDate"),
            },
        )
