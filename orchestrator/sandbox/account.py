"""The built-in "microblog" source account: a reference service seeded in moto.

With no config every exitplan command runs against this account, so a new user
sees the whole path work in one command, and tests have a realistic source to
export from. The account is the same byte for byte and id for id on every run:

* content comes from :func:`object_body` / :func:`snapshot_block_data`, pure
  functions of the name, so a test recomputes the bytes it expects;
* moto draws every id (instance, volume, snapshot, S3 version id, ...) from one
  ``random.Random`` (``moto.moto_api._internal.mock_random``); it is seeded with
  :data:`SANDBOX_SEED` right before seeding, and every call that draws an id is
  made from one thread in a fixed order.

:func:`seed_microblog` works against any endpoint (in-process ``mock_aws`` or a
moto server); :func:`sandbox_account` is the in-process account itself.

Seeding through boto3 takes seconds, so the in-process account is seeded once
and its moto state saved in the user's cache directory (see
:func:`sandbox_cache_dir`); later runs load it in a fraction of a second. The
file is keyed by :data:`SANDBOX_VERSION`, the moto, botocore and Python
versions and the source of the modules that seed and save it, so a change to
any of them seeds afresh. What loads is the same account, id for id, as what
a seeding gives, and moto's id generator continues from the same state.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import json
import os
import random
import stat
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from orchestrator.errors import ConfigError
from orchestrator.postgres import LocalCluster
from providers.aws import AwsAccount

SANDBOX_REGION = "us-east-1"
#: Bump when what the sandbox holds changes in a way its source does not show
#: (the cache key covers this module's source already).
SANDBOX_VERSION = 1
#: Where the seeded account is cached; ``off`` turns the cache off.
CACHE_DIR_ENV = "EXITPLAN_CACHE_DIR"
#: Seeds moto's id generator and every content generator below.
SANDBOX_SEED = 20210110

MEDIA_BUCKET = "microblog-user-media"
CONFIG_BUCKET = "microblog-config"
SITE_BUCKET = "microblog-static-site"
BUCKETS = (MEDIA_BUCKET, CONFIG_BUCKET, SITE_BUCKET)

SESSIONS_TABLE = "microblog-sessions"
HOSTED_ZONE_NAME = "microblog.example."
DB_INSTANCE_ID = "microblog-db"
DB_NAME = "microblog"
DB_MASTER_USERNAME = "microblog_admin"
DB_ENGINE_VERSION = "15.4"
LOAD_BALANCER_NAME = "microblog-alb"
TARGET_GROUP_NAME = "microblog-web"
WEB_SECURITY_GROUP = "microblog-web"
DB_SECURITY_GROUP = "microblog-db"
#: Amazon Linux 2 from moto's built-in AMI list (stable across moto releases).
SANDBOX_AMI_ID = "ami-04681a1dbd79675a5"

DB_PASSWORD_SECRET = "microblog/db-password"  # noqa: S105 - a name, not a value
API_KEYS_SECRET = "microblog/api-keys"  # noqa: S105 - a name, not a value
FEATURE_FLAGS_PARAMETER = "/microblog/feature-flags"
SMTP_PASSWORD_PARAMETER = "/microblog/smtp-password"  # noqa: S105 - a name

# Secret VALUES. They are distinctive on purpose: tests grep logs, journals,
# manifests and reports for them; finding one there is a leak.
DB_PASSWORD = "canary-dbpw-Vq7Kx2Lm9Rt4"  # noqa: S105 - fake sandbox value, a canary
API_KEYS: dict[str, str] = {
    "mailgun": "canary-mailgun-8fJ3nW5pQz1Y",
    "stripe": "canary-stripe-sk_Hd6Tg0Xc4Ba2",
}
API_KEYS_JSON = json.dumps(API_KEYS, sort_keys=True)
SMTP_PASSWORD = "canary-smtp-Ue3Rb7Mk1Ws8"  # noqa: S105 - a fake sandbox value, a canary
#: Every secret value seeded, for leak checks.
SECRET_CANARIES: tuple[str, ...] = (DB_PASSWORD, *API_KEYS.values(), SMTP_PASSWORD)
#: Not a secret (a plain String parameter), listed so tests can tell the two apart.
FEATURE_FLAGS_VALUE = json.dumps({"new_timeline": True, "video_upload": False}, sort_keys=True)

MULTIPART_PART_SIZE = 5 * 1024 * 1024
KIB = 1024
MIB = 1024 * 1024

#: EBS direct snapshot: moto reports (and we therefore write) 512-byte blocks.
SNAPSHOT_VOLUME_SIZE_GIB = 1
SNAPSHOT_BLOCK_SIZE = 512
SNAPSHOT_BLOCK_INDICES: tuple[int, ...] = (0, 1, 2, 3, 64, 65, 1024, 4096)

SESSION_USERS = 300
SESSIONS_PER_USER = 4

WEB_USER_DATA = """#cloud-config
package_update: true
packages: [nginx, python3-gunicorn]
runcmd:
  - systemctl enable --now nginx
  - [sh, -c, "echo microblog-web > /etc/microblog-role"]
"""


# --------------------------------------------------------------------------- content


@dataclass(frozen=True)
class SeedObject:
    """One S3 object version the sandbox writes, in upload order.

    ``generation`` counts versions of a key from 0; ``multipart`` objects are
    uploaded in :data:`MULTIPART_PART_SIZE` parts, so their ETag is not an MD5.
    """

    bucket: str
    key: str
    size: int
    generation: int = 0
    multipart: bool = False
    content_type: str = "application/octet-stream"


def _derived_seed(*parts: object) -> int:
    """A stable 64-bit seed from names (``hash()`` is salted per process)."""
    digest = hashlib.sha256("\x00".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big")


def _rng(*parts: object) -> random.Random:
    """A generator for sandbox content named by ``parts``: reproducible, not secret."""
    return random.Random(_derived_seed(SANDBOX_SEED, *parts))  # noqa: S311 - test data, not crypto


def _log_uniform(rng: random.Random, low: int, high: int) -> int:
    """Sizes skewed to the small end, as user media is."""
    return int(low * (high / low) ** rng.random())


@lru_cache(maxsize=1)
def _media_objects() -> tuple[SeedObject, ...]:
    rng = _rng(MEDIA_BUCKET)
    objects: list[SeedObject] = []

    def add(key: str, size: int, content_type: str, multipart: bool = False) -> None:
        objects.append(
            SeedObject(MEDIA_BUCKET, key, size, multipart=multipart, content_type=content_type)
        )

    for uid in range(1000, 1400):
        add(f"users/{uid}/avatar.jpg", _log_uniform(rng, 4 * KIB, 64 * KIB), "image/jpeg")
    add("users/1000/.keep", 0, "application/x-empty")
    add("users/1007/Profilbild München (2).jpg", 23 * KIB + 17, "image/jpeg")
    add("posts/2020/11/ünïcödé post/cover image.jpg", 41 * KIB + 3, "image/jpeg")
    # 20 videos between 1 and 8 MiB; the last two exceed one part and go multipart.
    for n in range(18):
        add(f"video/2020/{n:04d}.mp4", rng.randint(1 * MIB, 2 * MIB), "video/mp4")
    add("video/2020/0018.mp4", 7 * MIB + 123, "video/mp4", multipart=True)
    add("video/2020/0019.mp4", 5 * MIB + 4097, "video/mp4", multipart=True)
    post = 0
    while len(objects) < 2048:
        month = 1 + post % 12
        for n in range(rng.randint(1, 5)):
            key = f"posts/2020/{month:02d}/{50000 + post}/{n}.jpg"
            add(key, _log_uniform(rng, 1 * KIB, 64 * KIB), "image/jpeg")
        post += 1
    return tuple(objects)


_CONFIG_KEYS: tuple[tuple[str, int], ...] = (
    # (key, number of versions)
    ("app/settings.json", 3),
    ("app/logging.yaml", 2),
    ("nginx/microblog.conf", 3),
    ("deploy/release.txt", 2),
    ("deploy/old-release.txt", 2),  # its latest version is a delete marker
)
CONFIG_DELETED_KEY = "deploy/old-release.txt"


def _config_text(key: str, generation: int) -> bytes:
    rng = _rng(CONFIG_BUCKET, key, generation)
    lines = [f"# {key} (generation {generation})"]
    lines += [f"setting_{i} = {rng.randint(0, 10**6)}" for i in range(rng.randint(3, 12))]
    return ("\n".join(lines) + "\n").encode()


_SITE_FILES: dict[str, tuple[str, str]] = {
    "index.html": (
        "text/html",
        "<!doctype html>\n<html><head><title>microblog</title>"
        '<link rel="stylesheet" href="css/site.css"></head>\n'
        "<body><h1>microblog</h1><p>Short posts, long memories.</p>"
        '<script src="js/app.js"></script></body></html>\n',
    ),
    "error.html": (
        "text/html",
        "<!doctype html>\n<html><head><title>Not found</title></head>"
        "<body><h1>404</h1><p>That page left before we did.</p></body></html>\n",
    ),
    "css/site.css": ("text/css", "body { font-family: sans-serif; max-width: 40em; }\n"),
    "js/app.js": ("application/javascript", 'document.title += " - online";\n'),
    "robots.txt": ("text/plain", "User-agent: *\nAllow: /\n"),
}


def seed_objects() -> Iterator[SeedObject]:
    """Every S3 object version the sandbox writes, per bucket in upload order."""
    yield from _media_objects()
    for key, versions in _CONFIG_KEYS:
        for generation in range(versions):
            size = len(_config_text(key, generation))
            yield SeedObject(CONFIG_BUCKET, key, size, generation, content_type="text/plain")
    for key, (content_type, text) in _SITE_FILES.items():
        yield SeedObject(SITE_BUCKET, key, len(text.encode()), content_type=content_type)


@lru_cache(maxsize=1)
def _media_sizes() -> dict[str, int]:
    return {obj.key: obj.size for obj in _media_objects()}


def object_body(bucket: str, key: str, generation: int = 0) -> bytes:
    """The exact bytes the sandbox stores at ``bucket``/``key`` (version ``generation``).

    Pure and fast (``random.Random.randbytes`` seeded from the name), so tests
    recompute what an export must have produced. Raises KeyError for a name
    the sandbox does not write.
    """
    if bucket == MEDIA_BUCKET:
        size = _media_sizes()[key]
        return _rng(bucket, key).randbytes(size)
    if bucket == CONFIG_BUCKET:
        versions = dict(_CONFIG_KEYS)[key]
        if not 0 <= generation < versions:
            raise KeyError(f"{bucket}/{key} has versions 0..{versions - 1}, not {generation}")
        return _config_text(key, generation)
    if bucket == SITE_BUCKET:
        return _SITE_FILES[key][1].encode()
    raise KeyError(f"{bucket!r} is not a sandbox bucket")


def s3_etag(body: bytes, part_size: int | None = None) -> str:
    """The ETag S3 gives ``body``: its MD5, or for a multipart upload in
    ``part_size`` parts the MD5 of the part MD5s with a ``-<parts>`` suffix.
    Quoted, as S3 returns it."""
    if part_size is None:
        return f'"{hashlib.md5(body, usedforsecurity=False).hexdigest()}"'
    parts = [body[i : i + part_size] for i in range(0, len(body), part_size)] or [b""]
    joined = b"".join(hashlib.md5(p, usedforsecurity=False).digest() for p in parts)
    return f'"{hashlib.md5(joined, usedforsecurity=False).hexdigest()}-{len(parts)}"'


def snapshot_block_data(block_index: int) -> bytes:
    """The bytes of one block of the sandbox's EBS direct snapshot."""
    rng = _rng("ebs-snapshot", block_index)
    return rng.randbytes(SNAPSHOT_BLOCK_SIZE)


_SCOPES = ("read", "write", "dm", "admin")


def _session_items() -> Iterator[dict[str, Any]]:
    """DynamoDB items (wire format) for the sessions table, with S, N, BOOL, L, M, B."""
    rng = _rng(SESSIONS_TABLE)
    for user in range(SESSION_USERS):
        for n in range(SESSIONS_PER_USER):
            created = 1_600_000_000 + rng.randint(0, 10_000_000)
            yield {
                "user_id": {"S": f"u{1000 + user}"},
                "session_id": {"S": f"s{user:04d}-{n}-{rng.getrandbits(32):08x}"},
                "created_at": {"N": str(created)},
                "expires_at": {"N": str(created + 14 * 86400)},
                "active": {"BOOL": rng.random() < 0.7},
                "scopes": {"L": [{"S": s} for s in rng.sample(_SCOPES, 2)]},
                "device": {
                    "M": {
                        "ua": {"S": rng.choice(["firefox", "safari", "android-app", "ios-app"])},
                        "ip": {"S": f"198.51.100.{rng.randint(1, 254)}"},
                        "trusted": {"BOOL": rng.random() < 0.5},
                    }
                },
                "token_hash": {"B": rng.randbytes(16)},
            }


def _zone_records(alb_dns: str) -> list[tuple[str, str, list[str]]]:
    """(name relative to the zone or "@", type, values) for the hosted zone."""
    return [
        ("@", "A", ["203.0.113.10"]),
        ("@", "AAAA", ["2001:db8::10"]),
        ("www", "A", ["203.0.113.10", "203.0.113.11"]),
        ("www", "AAAA", ["2001:db8::11"]),
        ("api", "A", ["203.0.113.20"]),
        ("web-1.internal", "A", ["10.20.1.11"]),
        ("web-2.internal", "A", ["10.20.2.12"]),
        ("worker-1.internal", "A", ["10.20.1.21"]),
        ("lb", "CNAME", [alb_dns]),
        ("static", "CNAME", [f"{SITE_BUCKET}.s3-website-{SANDBOX_REGION}.amazonaws.com"]),
        ("media", "CNAME", ["d111111abcdef8.cloudfront.net"]),
        ("status", "CNAME", ["status.example.net"]),
        ("@", "MX", ["10 mx1.mail.example.net.", "20 mx2.mail.example.net."]),
        ("@", "TXT", ['"v=spf1 include:_spf.mail.example.net ~all"']),
        ("_dmarc", "TXT", ['"v=DMARC1; p=quarantine; rua=mailto:dmarc@microblog.example"']),
        # Spaces, escaped quotes and two strings in one value: what breaks naive copiers.
        ("motd", "TXT", ['"He said \\"hello world\\" and left" "second string"']),
        ("_sip._tcp", "SRV", ["10 60 5060 sip.microblog.example."]),
        ("_xmpp-server._tcp", "SRV", ["5 0 5269 xmpp.microblog.example."]),
        ("@", "CAA", ['0 issue "letsencrypt.org"', '0 iodef "mailto:security@microblog.example"']),
        ("mail", "CNAME", ["mx1.mail.example.net"]),
        ("dev", "A", ["203.0.113.30"]),
        ("dev", "AAAA", ["2001:db8::30"]),
    ]


# --------------------------------------------------------------------------- summary


@dataclass(frozen=True)
class BucketSummary:
    """What one seeded bucket holds.

    ``object_count``/``total_bytes`` count current objects only (what a plain
    listing shows); ``version_count`` counts every stored version, noncurrent
    included, delete markers excluded (equal to ``object_count`` if unversioned).
    """

    name: str
    object_count: int
    total_bytes: int
    version_count: int
    delete_marker_count: int
    versioned: bool
    website: bool


@dataclass(frozen=True)
class SeedSummary:
    """Names, ids and counts of everything :func:`seed_microblog` created.

    Equal summaries mean identical accounts (ids included); ``elapsed_seconds``
    is left out of the comparison.
    """

    region: str
    buckets: tuple[BucketSummary, ...]
    vpc_id: str
    subnet_ids: tuple[str, ...]
    security_group_ids: dict[str, str]
    instance_ids: dict[str, str]
    #: "<instance>:root" / "worker-1:data" -> volume id, attached volumes only.
    volume_ids: dict[str, str]
    snapshot_id: str
    snapshot_block_indices: tuple[int, ...]
    load_balancer_arn: str
    load_balancer_dns: str
    listener_ports: tuple[int, ...]
    target_group_arn: str
    certificate_arn: str
    db_instance_id: str
    table_name: str
    table_item_count: int
    hosted_zone_id: str
    hosted_zone_name: str
    #: Resource record sets in the zone, moto's NS and SOA included.
    record_set_count: int
    secret_names: tuple[str, ...]
    parameter_names: tuple[str, ...]
    elapsed_seconds: float = field(default=0.0, compare=False)

    def bucket(self, name: str) -> BucketSummary:
        """The summary of bucket ``name``; KeyError if the sandbox has none."""
        for bucket in self.buckets:
            if bucket.name == name:
                return bucket
        raise KeyError(name)


# --------------------------------------------------------------------------- seeding


def _tags(**tags: str) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in tags.items()]


def _put_object(s3: Any, obj: SeedObject) -> None:
    body = object_body(obj.bucket, obj.key, obj.generation)
    if not obj.multipart:
        s3.put_object(Bucket=obj.bucket, Key=obj.key, Body=body, ContentType=obj.content_type)
        return
    upload = s3.create_multipart_upload(
        Bucket=obj.bucket, Key=obj.key, ContentType=obj.content_type
    )
    upload_id = upload["UploadId"]
    try:
        parts = []
        for number, start in enumerate(range(0, len(body), MULTIPART_PART_SIZE), start=1):
            part = s3.upload_part(
                Bucket=obj.bucket,
                Key=obj.key,
                UploadId=upload_id,
                PartNumber=number,
                Body=body[start : start + MULTIPART_PART_SIZE],
            )
            parts.append({"PartNumber": number, "ETag": part["ETag"]})
        s3.complete_multipart_upload(
            Bucket=obj.bucket, Key=obj.key, UploadId=upload_id, MultipartUpload={"Parts": parts}
        )
    except BaseException:
        # A dangling upload would hold parts (and show up to an exporter) forever.
        s3.abort_multipart_upload(Bucket=obj.bucket, Key=obj.key, UploadId=upload_id)
        raise


def _seed_s3(account: AwsAccount) -> tuple[BucketSummary, ...]:
    s3 = account.client("s3", SANDBOX_REGION)
    for bucket in BUCKETS:
        # us-east-1 is the one region that rejects a LocationConstraint.
        s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=CONFIG_BUCKET, VersioningConfiguration={"Status": "Enabled"})
    s3.put_bucket_website(
        Bucket=SITE_BUCKET,
        WebsiteConfiguration={
            "IndexDocument": {"Suffix": "index.html"},
            "ErrorDocument": {"Key": "error.html"},
        },
    )
    # One thread, fixed order: every put draws an S3 version id from moto's
    # shared generator, so concurrency would shuffle ids between keys and runs.
    latest: dict[tuple[str, str], int] = {}
    versions: dict[str, int] = dict.fromkeys(BUCKETS, 0)
    for obj in seed_objects():
        _put_object(s3, obj)
        latest[(obj.bucket, obj.key)] = obj.size
        versions[obj.bucket] += 1
    s3.delete_object(Bucket=CONFIG_BUCKET, Key=CONFIG_DELETED_KEY)
    del latest[(CONFIG_BUCKET, CONFIG_DELETED_KEY)]

    summaries = []
    for bucket in BUCKETS:
        sizes = [size for (b, _), size in latest.items() if b == bucket]
        summaries.append(
            BucketSummary(
                name=bucket,
                object_count=len(sizes),
                total_bytes=sum(sizes),
                version_count=versions[bucket],
                delete_marker_count=1 if bucket == CONFIG_BUCKET else 0,
                versioned=bucket == CONFIG_BUCKET,
                website=bucket == SITE_BUCKET,
            )
        )
    return tuple(summaries)


@dataclass
class _Network:
    vpc_id: str
    subnet_ids: tuple[str, str]
    web_sg: str
    db_sg: str


def _seed_network(ec2: Any) -> _Network:
    vpc_id = ec2.create_vpc(
        CidrBlock="10.20.0.0/16",
        TagSpecifications=[{"ResourceType": "vpc", "Tags": _tags(Name="microblog-vpc")}],
    )["Vpc"]["VpcId"]
    subnets = []
    for n, zone in enumerate(("a", "b"), start=1):
        subnets.append(
            ec2.create_subnet(
                VpcId=vpc_id,
                CidrBlock=f"10.20.{n}.0/24",
                AvailabilityZone=f"{SANDBOX_REGION}{zone}",
                TagSpecifications=[
                    {"ResourceType": "subnet", "Tags": _tags(Name=f"microblog-public-{zone}")}
                ],
            )["Subnet"]["SubnetId"]
        )
    igw = ec2.create_internet_gateway()["InternetGateway"]["InternetGatewayId"]
    ec2.attach_internet_gateway(InternetGatewayId=igw, VpcId=vpc_id)

    web_sg = ec2.create_security_group(
        GroupName=WEB_SECURITY_GROUP, Description="microblog web tier", VpcId=vpc_id
    )["GroupId"]
    ec2.authorize_security_group_ingress(
        GroupId=web_sg,
        IpPermissions=[
            {
                "IpProtocol": "tcp",
                "FromPort": port,
                "ToPort": port,
                "IpRanges": [{"CidrIp": "0.0.0.0/0"}],
            }
            for port in (22, 80, 443)
        ],
    )
    db_sg = ec2.create_security_group(
        GroupName=DB_SECURITY_GROUP, Description="microblog database", VpcId=vpc_id
    )["GroupId"]
    ec2.authorize_security_group_ingress(
        GroupId=db_sg,
        IpPermissions=[
            {
                "IpProtocol": "tcp",
                "FromPort": 5432,
                "ToPort": 5432,
                "UserIdGroupPairs": [{"GroupId": web_sg}],
            }
        ],
    )
    return _Network(vpc_id, (subnets[0], subnets[1]), web_sg, db_sg)


def _seed_instances(ec2: Any, net: _Network) -> tuple[dict[str, str], dict[str, str]]:
    specs = (
        # name, type, subnet index, user data, root GiB
        ("web-1", "t3.medium", 0, WEB_USER_DATA, 16),
        ("web-2", "t3.medium", 1, WEB_USER_DATA, 16),
        ("worker-1", "t3.large", 0, None, 20),
    )
    instance_ids: dict[str, str] = {}
    volume_ids: dict[str, str] = {}
    for name, instance_type, subnet, user_data, root_gib in specs:
        kwargs: dict[str, Any] = {}
        if user_data is not None:
            kwargs["UserData"] = user_data  # boto3 base64-encodes it
        instance = ec2.run_instances(
            ImageId=SANDBOX_AMI_ID,
            InstanceType=instance_type,
            MinCount=1,
            MaxCount=1,
            SubnetId=net.subnet_ids[subnet],
            SecurityGroupIds=[net.web_sg],
            BlockDeviceMappings=[
                {
                    "DeviceName": "/dev/xvda",
                    "Ebs": {"VolumeSize": root_gib, "VolumeType": "gp3"},
                }
            ],
            TagSpecifications=[
                {"ResourceType": "instance", "Tags": _tags(Name=name, app="microblog")}
            ],
            **kwargs,
        )["Instances"][0]
        instance_ids[name] = instance["InstanceId"]
        for mapping in instance.get("BlockDeviceMappings", []):
            volume_ids[f"{name}:root"] = mapping["Ebs"]["VolumeId"]
    data = ec2.create_volume(
        AvailabilityZone=f"{SANDBOX_REGION}a",
        Size=8,
        VolumeType="gp3",
        TagSpecifications=[{"ResourceType": "volume", "Tags": _tags(Name="microblog-worker-data")}],
    )
    ec2.attach_volume(
        VolumeId=data["VolumeId"], InstanceId=instance_ids["worker-1"], Device="/dev/sdf"
    )
    volume_ids["worker-1:data"] = data["VolumeId"]
    if len(volume_ids) != len(specs) + 1:
        raise RuntimeError(f"moto attached an unexpected set of volumes: {volume_ids}")
    return instance_ids, volume_ids


def _seed_snapshot(
    account: AwsAccount,
    data_volume_id: str,
    name: str = "microblog-worker-data-nightly",
    blocks: tuple[int, ...] = SNAPSHOT_BLOCK_INDICES,
) -> str:
    """A snapshot of a volume made through the EBS direct APIs.

    moto serves ListSnapshotBlocks/GetSnapshotBlock only for snapshots started
    this way, so it stands in for a nightly snapshot of the volume; the
    ``volume-id`` tag links the two, as moto's snapshot points at a volume of
    its own.
    """
    ebs = account.client("ebs", SANDBOX_REGION)
    ec2 = account.client("ec2", SANDBOX_REGION)
    snapshot_id: str = ebs.start_snapshot(
        VolumeSize=SNAPSHOT_VOLUME_SIZE_GIB,
        Description=f"{name}, nightly",
        Tags=_tags(**{"volume-id": data_volume_id, "Name": name}),
    )["SnapshotId"]
    for index in blocks:
        block = snapshot_block_data(index)
        ebs.put_snapshot_block(
            SnapshotId=snapshot_id,
            BlockIndex=index,
            BlockData=block,
            DataLength=len(block),
            Checksum=base64.b64encode(hashlib.sha256(block).digest()).decode(),
            ChecksumAlgorithm="SHA256",
        )
    ebs.complete_snapshot(SnapshotId=snapshot_id, ChangedBlocksCount=len(blocks))
    # moto's start_snapshot also makes a throwaway volume to hang the snapshot
    # on; real EBS direct snapshots have none, so drop it to keep the volume
    # list true to the service.
    phantom = ec2.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"][0]["VolumeId"]
    if phantom != data_volume_id:
        ec2.delete_volume(VolumeId=phantom)
    return snapshot_id


def seed_microblog(account: AwsAccount) -> SeedSummary:
    """Create the microblog service in ``account`` (empty, at an AWS-like endpoint).

    Everything goes through boto3, so this works in-process under ``mock_aws``
    and against a moto server alike. For identical ids, seed moto's generator
    first (:func:`seed_moto_random`). Not idempotent: a second call fails on
    the existing bucket. Runs single-threaded on purpose (see ``_seed_s3``).
    """
    started = time.monotonic()
    buckets = _seed_s3(account)

    ec2 = account.client("ec2", SANDBOX_REGION)
    net = _seed_network(ec2)
    instance_ids, volume_ids = _seed_instances(ec2, net)
    snapshot_id = _seed_snapshot(account, volume_ids["worker-1:data"])
    # Every root volume has its nightly snapshot too (a boot sector and a
    # little more), so the sandbox exports every disk of the service.
    for role, volume_id in sorted(volume_ids.items()):
        if role.endswith(":root"):
            _seed_snapshot(account, volume_id, f"microblog-{role.replace(':', '-')}", (0, 1, 2))

    # Secrets before RDS: the database password is read back from its secret,
    # the way the real service's provisioning does it.
    sm = account.client("secretsmanager", SANDBOX_REGION)
    sm.create_secret(Name=DB_PASSWORD_SECRET, SecretString=DB_PASSWORD)
    sm.create_secret(Name=API_KEYS_SECRET, SecretString=API_KEYS_JSON)
    ssm = account.client("ssm", SANDBOX_REGION)
    ssm.put_parameter(Name=FEATURE_FLAGS_PARAMETER, Value=FEATURE_FLAGS_VALUE, Type="String")
    ssm.put_parameter(Name=SMTP_PASSWORD_PARAMETER, Value=SMTP_PASSWORD, Type="SecureString")

    acm = account.client("acm", SANDBOX_REGION)
    certificate_arn = acm.request_certificate(
        DomainName=HOSTED_ZONE_NAME.rstrip("."),
        SubjectAlternativeNames=[f"*.{HOSTED_ZONE_NAME.rstrip('.')}"],
        ValidationMethod="DNS",
    )["CertificateArn"]
    elb = account.client("elbv2", SANDBOX_REGION)
    lb = elb.create_load_balancer(
        Name=LOAD_BALANCER_NAME,
        Subnets=list(net.subnet_ids),
        SecurityGroups=[net.web_sg],
        Scheme="internet-facing",
        Type="application",
        Tags=_tags(app="microblog"),
    )["LoadBalancers"][0]
    tg_arn = elb.create_target_group(
        Name=TARGET_GROUP_NAME,
        Protocol="HTTP",
        Port=80,
        VpcId=net.vpc_id,
        TargetType="instance",
        HealthCheckPath="/healthz",
    )["TargetGroups"][0]["TargetGroupArn"]
    elb.register_targets(
        TargetGroupArn=tg_arn,
        Targets=[{"Id": instance_ids["web-1"]}, {"Id": instance_ids["web-2"]}],
    )
    forward = [{"Type": "forward", "TargetGroupArn": tg_arn}]
    elb.create_listener(
        LoadBalancerArn=lb["LoadBalancerArn"], Protocol="HTTP", Port=80, DefaultActions=forward
    )
    elb.create_listener(
        LoadBalancerArn=lb["LoadBalancerArn"],
        Protocol="HTTPS",
        Port=443,
        Certificates=[{"CertificateArn": certificate_arn}],
        DefaultActions=forward,
    )

    rds = account.client("rds", SANDBOX_REGION)
    rds.create_db_subnet_group(
        DBSubnetGroupName="microblog-db-subnets",
        DBSubnetGroupDescription="microblog database subnets",
        SubnetIds=list(net.subnet_ids),
    )
    password = sm.get_secret_value(SecretId=DB_PASSWORD_SECRET)["SecretString"]
    rds.create_db_instance(
        DBInstanceIdentifier=DB_INSTANCE_ID,
        DBInstanceClass="db.t3.medium",
        Engine="postgres",
        EngineVersion=DB_ENGINE_VERSION,
        AllocatedStorage=20,
        StorageType="gp3",
        DBName=DB_NAME,
        MasterUsername=DB_MASTER_USERNAME,
        MasterUserPassword=password,
        Port=5432,
        VpcSecurityGroupIds=[net.db_sg],
        DBSubnetGroupName="microblog-db-subnets",
        Tags=_tags(app="microblog"),
    )

    table_items = _seed_table(account)
    zone_id, record_set_count = _seed_zone(account, lb["DNSName"])

    return SeedSummary(
        region=SANDBOX_REGION,
        buckets=buckets,
        vpc_id=net.vpc_id,
        subnet_ids=net.subnet_ids,
        security_group_ids={WEB_SECURITY_GROUP: net.web_sg, DB_SECURITY_GROUP: net.db_sg},
        instance_ids=instance_ids,
        volume_ids=volume_ids,
        snapshot_id=snapshot_id,
        snapshot_block_indices=SNAPSHOT_BLOCK_INDICES,
        load_balancer_arn=lb["LoadBalancerArn"],
        load_balancer_dns=lb["DNSName"],
        listener_ports=(80, 443),
        target_group_arn=tg_arn,
        certificate_arn=certificate_arn,
        db_instance_id=DB_INSTANCE_ID,
        table_name=SESSIONS_TABLE,
        table_item_count=table_items,
        hosted_zone_id=zone_id,
        hosted_zone_name=HOSTED_ZONE_NAME,
        record_set_count=record_set_count,
        secret_names=(DB_PASSWORD_SECRET, API_KEYS_SECRET),
        parameter_names=(FEATURE_FLAGS_PARAMETER, SMTP_PASSWORD_PARAMETER),
        elapsed_seconds=time.monotonic() - started,
    )


def _seed_table(account: AwsAccount) -> int:
    ddb = account.client("dynamodb", SANDBOX_REGION)
    ddb.create_table(
        TableName=SESSIONS_TABLE,
        KeySchema=[
            {"AttributeName": "user_id", "KeyType": "HASH"},
            {"AttributeName": "session_id", "KeyType": "RANGE"},
        ],
        AttributeDefinitions=[
            {"AttributeName": "user_id", "AttributeType": "S"},
            {"AttributeName": "session_id", "AttributeType": "S"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    count = 0
    batch: list[dict[str, Any]] = []
    for item in _session_items():
        batch.append({"PutRequest": {"Item": item}})
        count += 1
        if len(batch) == 25:  # BatchWriteItem's limit
            _write_batch(ddb, batch)
            batch = []
    if batch:
        _write_batch(ddb, batch)
    return count


def _write_batch(ddb: Any, requests: list[dict[str, Any]]) -> None:
    pending: dict[str, Any] = {SESSIONS_TABLE: requests}
    for _ in range(10):
        pending = ddb.batch_write_item(RequestItems=pending).get("UnprocessedItems") or {}
        if not pending:
            return
    raise RuntimeError(f"{SESSIONS_TABLE}: items still unprocessed after 10 batch writes")


def _seed_zone(account: AwsAccount, alb_dns: str) -> tuple[str, int]:
    r53 = account.client("route53", SANDBOX_REGION)
    zone_id: str = r53.create_hosted_zone(
        Name=HOSTED_ZONE_NAME,
        CallerReference="exitplan-sandbox-microblog",
        HostedZoneConfig={"Comment": "microblog public zone", "PrivateZone": False},
    )["HostedZone"]["Id"]
    changes = []
    for name, rtype, values in _zone_records(alb_dns):
        fqdn = HOSTED_ZONE_NAME if name == "@" else f"{name}.{HOSTED_ZONE_NAME}"
        changes.append(
            {
                "Action": "CREATE",
                "ResourceRecordSet": {
                    "Name": fqdn,
                    "Type": rtype,
                    "TTL": 300,
                    "ResourceRecords": [{"Value": v} for v in values],
                },
            }
        )
    r53.change_resource_record_sets(HostedZoneId=zone_id, ChangeBatch={"Changes": changes})
    count = 0
    for page in r53.get_paginator("list_resource_record_sets").paginate(HostedZoneId=zone_id):
        count += len(page["ResourceRecordSets"])
    return zone_id, count


# --------------------------------------------------------------------------- the account

_CREDENTIAL_DEFAULTS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SECURITY_TOKEN": "testing",
    "AWS_SESSION_TOKEN": "testing",
}


def seed_moto_random(seed: int = SANDBOX_SEED, endpoint_url: str | None = None) -> None:
    """Seed moto's id generator: in this process, or in the moto server at ``endpoint_url``.

    Call right before :func:`seed_microblog` on a freshly reset moto for
    identical ids run after run.
    """
    if endpoint_url is None:
        from moto.moto_api._internal import mock_random

        mock_random.seed(seed)
        return
    url = f"{endpoint_url.rstrip('/')}/moto-api/seed?a={int(seed)}"
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"endpoint_url {endpoint_url!r}: expected an http(s) URL")
    request = urllib.request.Request(url, method="POST")  # noqa: S310 - scheme checked above
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310  # nosec B310 # http(s) only, checked above
        response.read()


@dataclass(frozen=True)
class Sandbox:
    """A running sandbox: the account and what was seeded in it."""

    account: AwsAccount
    summary: SeedSummary
    #: The PostgreSQL cluster behind the RDS instance (``running_sandbox(postgres=True)``
    #: with PostgreSQL installed), else None.
    postgres: LocalCluster | None = None
    #: Whether the account was loaded from the cache rather than seeded.
    from_cache: bool = False


# --------------------------------------------------------------------------- PostgreSQL

#: Rows of the microblog database behind the sandbox's RDS instance, per table.
SANDBOX_PG_ROW_COUNTS: dict[str, int] = {
    "public.users": 400,
    "public.posts": 2400,
    "public.follows": 1600,
}
_PG_WORDS = ("exit", "plan", "deadline", "cloud", "café", "日本", "backup", "shipit", "coffee")


def microblog_sql() -> str:
    """The microblog schema and its rows as one psql script (COPY inline); the
    same text on every call, with :data:`SANDBOX_PG_ROW_COUNTS` rows."""
    rng = _rng("postgres", DB_NAME)
    users = SANDBOX_PG_ROW_COUNTS["public.users"]
    lines = [
        "CREATE TABLE users (id integer PRIMARY KEY, handle text NOT NULL UNIQUE,"
        " email text NOT NULL, created_at timestamptz NOT NULL);",
        "CREATE TABLE posts (id bigint PRIMARY KEY, user_id integer NOT NULL REFERENCES users,"
        " body text NOT NULL, created_at timestamptz NOT NULL);",
        "CREATE TABLE follows (follower_id integer REFERENCES users,"
        " followee_id integer REFERENCES users, created_at timestamptz NOT NULL,"
        " PRIMARY KEY (follower_id, followee_id));",
        "CREATE INDEX posts_by_user ON posts (user_id, created_at);",
        "COPY users FROM STDIN;",
    ]
    for uid in range(1, users + 1):
        lines.append(
            f"{uid}\tuser{uid}\tuser{uid}@microblog.example\t"
            f"2019-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d} 12:00:00+00"
        )
    lines.append("\\.")
    lines.append("COPY posts FROM STDIN;")
    for pid in range(1, SANDBOX_PG_ROW_COUNTS["public.posts"] + 1):
        body = " ".join(rng.choice(_PG_WORDS) for _ in range(rng.randint(3, 12)))
        lines.append(
            f"{pid}\t{rng.randint(1, users)}\t{body}\t2020-{rng.randint(1, 12):02d}-"
            f"{rng.randint(1, 28):02d} {rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:00+00"
        )
    lines.append("\\.")
    lines.append("COPY follows FROM STDIN;")
    pairs: set[tuple[int, int]] = set()
    while len(pairs) < SANDBOX_PG_ROW_COUNTS["public.follows"]:
        pair = (rng.randint(1, users), rng.randint(1, users))
        if pair[0] != pair[1]:
            pairs.add(pair)
    lines += [f"{a}\t{b}\t2020-06-01 00:00:00+00" for a, b in sorted(pairs)]
    lines.append("\\.")
    return "\n".join(lines) + "\n"


@contextmanager
def sandbox_postgres(
    account: AwsAccount, *, on_cluster_started: Callable[[dict[str, Any]], None] | None = None
) -> Iterator[LocalCluster | None]:
    """Put a real PostgreSQL cluster behind the sandbox's RDS instance; stop it on exit.

    The cluster (127.0.0.1, a free port) has :data:`DB_MASTER_USERNAME` /
    :data:`DB_PASSWORD` as superuser and database :data:`DB_NAME` seeded by
    :func:`microblog_sql`. moto's RDS endpoint cannot be changed, so the
    instance is tagged ``exitplan:endpoint=127.0.0.1:<port>``, which the RDS
    exporter honours, and ``exitplan:password-secret`` names the password's
    secret. Yields None (the instance keeps its unreachable endpoint, and the
    RDS exporter says what to install) when PostgreSQL is not installed.
    ``on_cluster_started`` gets the cluster's record for the undo log (see
    ``LocalCluster``'s ``on_started``).
    """
    from orchestrator.export.exporters.rds import ENDPOINT_TAG, PASSWORD_SECRET_TAG
    from orchestrator.postgres import create_database, find_pg_tools, psql_lines

    rds = account.client("rds", SANDBOX_REGION)
    arn = rds.describe_db_instances(DBInstanceIdentifier=DB_INSTANCE_ID)["DBInstances"][0][
        "DBInstanceArn"
    ]
    rds.add_tags_to_resource(
        ResourceName=arn, Tags=_tags(**{PASSWORD_SECRET_TAG: DB_PASSWORD_SECRET})
    )
    tools = find_pg_tools(server=True)
    if tools is None:
        yield None
        return
    with LocalCluster(
        tools,
        superuser=DB_MASTER_USERNAME,
        password=DB_PASSWORD,
        on_started=on_cluster_started,
    ) as cluster:
        create_database(tools, cluster.conn(), DB_NAME)
        psql_lines(
            tools, cluster.conn(DB_NAME), microblog_sql(), what="seed the microblog database"
        )
        rds.add_tags_to_resource(
            ResourceName=arn, Tags=_tags(**{ENDPOINT_TAG: f"{cluster.host}:{cluster.port}"})
        )
        yield cluster


# --------------------------------------------------------------------------- the cache


def sandbox_cache_dir(env: Mapping[str, str] | None = None) -> Path | None:
    """Where the seeded sandbox is cached, or None when caching is off.

    ``$EXITPLAN_CACHE_DIR`` (``off`` for no cache), else ``$XDG_CACHE_HOME/exitplan``,
    else ``~/.cache/exitplan``.
    """
    env = os.environ if env is None else env
    chosen = env.get(CACHE_DIR_ENV)
    if chosen is not None:
        return None if chosen.strip().lower() in ("", "off") else Path(chosen).expanduser()
    base = env.get("XDG_CACHE_HOME")
    if not base:
        try:
            base = str(Path("~/.cache").expanduser())
        except RuntimeError:  # no home directory to expand
            return None
    return Path(base) / "exitplan"


def _cache_key() -> str:
    """What the cached state depends on: a change to any of these seeds afresh."""
    import botocore
    import moto

    from orchestrator.sandbox import snapshot

    digest = hashlib.sha256()
    for part in (
        f"sandbox {SANDBOX_VERSION} snapshot {snapshot.SNAPSHOT_FORMAT}",
        f"moto {moto.__version__} botocore {botocore.__version__}",
        f"python {sys.version_info.major}.{sys.version_info.minor} {sys.implementation.name}",
    ):
        digest.update(part.encode() + b"\0")
    for module_file in (__file__, snapshot.__file__):
        digest.update(Path(module_file).read_bytes())
    return digest.hexdigest()[:32]


def _cache_file(cache_dir: Path) -> Path:
    return cache_dir / f"sandbox-{_cache_key()}.pickle"


def _private_to_this_user(path: Path) -> bool:
    """Whether only this user can have written ``path`` (owner, not group/world writable)."""
    try:
        info = path.stat()
    except OSError:
        return False
    return info.st_uid == os.geteuid() and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def _load_cached_sandbox(cache_dir: Path) -> SeedSummary | None:
    """Restore the cached account into the running ``mock_aws``; None when there is none.

    A file that is not this user's alone is never loaded (a pickle runs
    code); one that does not load is removed so the next run writes a good one.
    """
    from orchestrator.sandbox.snapshot import SnapshotError, restore_moto_state

    path = _cache_file(cache_dir)
    if not (_private_to_this_user(cache_dir) and _private_to_this_user(path)):
        return None
    started = time.monotonic()
    try:
        with path.open("rb") as cached:
            summary = _summary_from_json(json.loads(cached.readline()))
            restore_moto_state(cached)
    except (OSError, ValueError, KeyError, TypeError, SnapshotError):
        with contextlib.suppress(OSError):
            path.unlink()
        return None
    return _with_elapsed(summary, time.monotonic() - started)


def _save_sandbox_cache(cache_dir: Path, summary: SeedSummary) -> None:
    """Save the freshly seeded account for later runs; silently skipped when it cannot be."""
    from orchestrator.sandbox.snapshot import SnapshotError, capture_moto_state

    try:
        cache_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not _private_to_this_user(cache_dir):
            return
        target = _cache_file(cache_dir)
        header = json.dumps(_summary_to_json(summary), sort_keys=True).encode()
        fd, temp = tempfile.mkstemp(prefix=".sandbox-", suffix=".tmp", dir=cache_dir)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(header + b"\n")
                capture_moto_state(out)
            # Another run may have saved one meanwhile: the same account, so
            # either file will do (the last one written stays).
            os.replace(temp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise
        for stale in cache_dir.glob("sandbox-*.pickle"):
            if stale != target:
                with contextlib.suppress(OSError):
                    stale.unlink()
    except (OSError, SnapshotError):
        return


def _summary_to_json(summary: SeedSummary) -> dict[str, Any]:
    data = {f.name: getattr(summary, f.name) for f in dataclasses.fields(summary)}
    data["buckets"] = [dataclasses.asdict(b) for b in summary.buckets]
    return data


def _summary_from_json(data: dict[str, Any]) -> SeedSummary:
    values: dict[str, Any] = dict(data)
    values["buckets"] = tuple(BucketSummary(**b) for b in data["buckets"])
    for name in ("subnet_ids", "snapshot_block_indices", "listener_ports"):
        values[name] = tuple(data[name])
    for name in ("secret_names", "parameter_names"):
        values[name] = tuple(data[name])
    return SeedSummary(**values)


def _with_elapsed(summary: SeedSummary, seconds: float) -> SeedSummary:
    return dataclasses.replace(summary, elapsed_seconds=seconds)


@contextmanager
def running_sandbox(
    *,
    postgres: bool = False,
    on_cluster_started: Callable[[dict[str, Any]], None] | None = None,
) -> Iterator[Sandbox]:
    """The seeded microblog account held in moto in this process, with its summary.

    Starts a fresh ``moto.mock_aws()`` (not to be nested in another active
    one: the account would not start empty) and loads the account from the
    cache (:func:`sandbox_cache_dir`), or seeds moto's generator, seeds the
    service and saves it there for the next run; either way the same account. While inside, boto3 calls from any thread of this
    process reach moto, and dummy credentials are in ``os.environ`` (set only
    where none were; the environment is restored on exit and all moto state
    is dropped). With ``postgres``, a real PostgreSQL cluster stands behind
    the RDS instance (see :func:`sandbox_postgres`) and is stopped on exit.
    """
    import moto

    saved = {
        name: os.environ.get(name)
        for name in (*_CREDENTIAL_DEFAULTS, "AWS_PROFILE", "AWS_DEFAULT_REGION")
    }
    try:
        if not os.environ.get("AWS_ACCESS_KEY_ID"):
            os.environ.update(_CREDENTIAL_DEFAULTS)
        # A profile named in the environment would send boto3 to ~/.aws for a
        # profile that may not exist; the sandbox needs none.
        os.environ.pop("AWS_PROFILE", None)
        os.environ.setdefault("AWS_DEFAULT_REGION", SANDBOX_REGION)
        with moto.mock_aws():
            cache_dir = sandbox_cache_dir()
            summary = _load_cached_sandbox(cache_dir) if cache_dir is not None else None
            from_cache = summary is not None
            account = AwsAccount(regions=(SANDBOX_REGION,))
            if summary is None:
                # mock_aws's reset empties moto's per-account backends, so each is
                # rebuilt lazily after this seed (EC2's default VPC draws ids too):
                # the same draws in the same order, whatever ran in moto before.
                seed_moto_random(SANDBOX_SEED)
                summary = seed_microblog(account)
                if cache_dir is not None:
                    _save_sandbox_cache(cache_dir, summary)
            if not postgres:
                yield Sandbox(account, summary, from_cache=from_cache)
                return
            with sandbox_postgres(account, on_cluster_started=on_cluster_started) as cluster:
                yield Sandbox(account, summary, cluster, from_cache=from_cache)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextmanager
def sandbox_account() -> Iterator[AwsAccount]:
    """The seeded microblog account (see :func:`running_sandbox`), in :data:`SANDBOX_REGION`."""
    with running_sandbox() as sandbox:
        yield sandbox.account
