"""The export runs as a user holding exactly `exitplan iam-policy`, against a moto server enforcing IAM.

The sandbox account (microblog, with a real PostgreSQL behind its RDS
instance) is seeded into a moto server in its own process, which then
enforces IAM (tests/support/moto_iam.py). Each test makes an IAM user holding
one generated policy and runs ``python -m orchestrator.cli export`` as that
user, with ``source.aws.endpoint_url`` pointing at the server.

Which actions moto 5.2's enforcement proves, and which only the code scan
does (tests/unit/test_iam_policy.py covers every action):

* proven here by enforcement: the actions of S3, EC2 (``Describe*`` and
  ``CreateSnapshot``), Elastic Load Balancing, RDS (``Describe*`` and
  ``CreateDBSnapshot``), DynamoDB, Secrets Manager and SSM in the policy
  (``test_moto_enforces_the_policy_for`` shows moto evaluates the policy for
  each of these services). moto checks only the action named after each
  call: ``ec2:CreateTags`` (with a tagged ``CreateSnapshot``),
  ``rds:AddTagsToResource`` (with a tagged ``CreateDBSnapshot``) and
  ``kms:Decrypt`` through Secrets Manager or SSM are proven by the code
  scan only, and ``Resource`` and ``Condition`` are not evaluated;
* code scan only: Route 53 (``route53:ListHostedZones``, ``GetHostedZone``,
  ``ListResourceRecordSets``) and the EBS direct APIs (``ebs:ListSnapshotBlocks``,
  ``GetSnapshotBlock``). moto cannot check the signature of their requests,
  so every call fails with a 403 whatever the policy
  (``test_moto_cannot_check_signatures_for`` fails the day it can, to bring
  them into the runs here); the export runs below leave those two kinds out;
* ``sts:GetCallerIdentity``: moto, like AWS, allows it to everyone.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import botocore.exceptions
import pytest

from orchestrator.age import generate_identity
from orchestrator.export.exporters.rds import snapshot_identifier
from orchestrator.export.iam_policy import client_error_is_access_denied, policy_document
from orchestrator.sandbox.account import (
    DB_INSTANCE_ID,
    SANDBOX_REGION,
    SECRET_CANARIES,
    SeedSummary,
    sandbox_postgres,
    seed_microblog,
    seed_moto_random,
)
from providers.aws import AwsAccount
from tests.support.moto_iam import EnforcingMoto, Keys, enforcing_moto_server
from tests.support.postgres import require_postgres

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
#: Every kind whose calls moto can enforce (see the module doc).
ENFORCED_KINDS = "s3,ec2,rds,dynamodb,secrets"


@dataclass(frozen=True)
class Source:
    moto: EnforcingMoto
    summary: SeedSummary


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Source]:
    require_postgres()
    log = tmp_path_factory.mktemp("moto-iam") / "moto.log"
    with enforcing_moto_server(log) as moto:
        seed_moto_random(endpoint_url=moto.url)
        account = AwsAccount(regions=(SANDBOX_REGION,), endpoint_url=moto.url)
        summary = seed_microblog(account)
        with sandbox_postgres(account) as cluster:
            assert cluster is not None
            moto.enforce()
            yield Source(moto, summary)


@dataclass
class Export:
    returncode: int
    report: dict[str, Any]
    stderr: str
    workdir: Path

    def failure_text(self) -> str:
        """Everything the report says went wrong, as one text."""
        report = self.report
        return "\n".join(
            [f["error"] for f in report.get("failed", [])]
            + [s["detail"] for s in report.get("steps", []) if s["status"] == "failed"]
            + list(report.get("warnings", []))
        )


def run_export(source: Source, keys: Keys, workdir: Path, kinds: str) -> Export:
    workdir.mkdir(parents=True, exist_ok=True)
    recipient = generate_identity(workdir / "identity.age")
    config = workdir / "exitplan.yaml"
    config.write_text(
        f"""\
source:
  aws: {{regions: [{SANDBOX_REGION}], endpoint_url: "{source.moto.url}"}}
destinations:
  - name: vault
    storage: {{driver: local, path: ./vault}}
    encrypt: {{recipients: ["{recipient}"]}}
"""
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(keys.env(), PYTHONPATH=str(REPO), AWS_EC2_METADATA_DISABLED="true")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "orchestrator.cli",
            "export",
            "--config",
            str(config),
            "--only",
            kinds,
            "--output",
            "json",
        ],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    try:
        report = json.loads(result.stdout)
    except ValueError:
        pytest.fail(f"no JSON report (exit {result.returncode}):\n{result.stderr[-4000:]}")
    return Export(result.returncode, report, result.stderr, workdir)


def without(document: dict[str, Any], action: str) -> dict[str, Any]:
    """``document`` with ``action`` taken out of the read statement."""
    changed = copy.deepcopy(document)
    statement = next(s for s in changed["Statement"] if s["Sid"] == "ExitplanReadTheSource")
    assert action in statement["Action"]
    statement["Action"].remove(action)
    return changed


def assert_no_traceback(export: Export) -> None:
    assert "Traceback" not in export.stderr, export.stderr[-4000:]
    assert "internal error" not in export.stderr, export.stderr[-4000:]


def test_the_export_succeeds_as_a_user_holding_exactly_the_read_only_policy(source, tmp_path):
    """Every kind moto can enforce, as a user with `exitplan iam-policy` and nothing else.

    Proven by moto's enforcement: the S3, EC2, ELB, RDS, DynamoDB, Secrets
    Manager and SSM reads are enough, and the Deny blocks none of them. The RDS snapshot (a write) is refused and reported as a warning
    naming rds:CreateDBSnapshot; the export still succeeds.
    """
    keys = source.moto.user_with_policy(policy_document())
    export = run_export(source, keys, tmp_path / "run", ENFORCED_KINDS)
    assert_no_traceback(export)
    report = export.report
    assert export.returncode == 0, export.failure_text() or export.stderr[-4000:]
    assert report["status"] == "done"
    assert report["totals"]["failed_items"] == 0
    kinds = {k["kind"]: k for k in report["kinds"]}
    assert set(ENFORCED_KINDS.split(",")) <= set(kinds)
    for kind in ENFORCED_KINDS.split(","):
        assert kinds[kind]["complete"] and kinds[kind]["saved_items"] > 0, kinds[kind]
    vault = export.workdir / "vault"
    assert (vault / "secrets" / SANDBOX_REGION / "bundle.json.age").is_file()
    assert (vault / "rds" / SANDBOX_REGION / DB_INSTANCE_ID / "dump.tar").stat().st_size > 0
    assert (vault / "dynamodb" / SANDBOX_REGION / f"{source.summary.table_name}.jsonl.gz").is_file()
    # The one write the export tries is refused, said in plain words, and not fatal.
    [warning] = [w for w in report["warnings"] if "RDS snapshot" in w]
    assert "lack rds:CreateDBSnapshot" in warning
    assert "exitplan iam-policy --allow-snapshots" in warning
    assert f"warning: {warning}" in export.stderr
    for canary in SECRET_CANARIES:
        assert canary not in export.stderr and canary not in json.dumps(report)


@pytest.mark.parametrize(
    ("action", "kinds"),
    [
        ("s3:GetObject", "s3"),
        ("s3:ListBucketVersions", "s3"),
        ("dynamodb:Scan", "dynamodb"),
        ("secretsmanager:GetSecretValue", "secrets,rds"),
        ("ssm:GetParameters", "secrets"),
        ("ec2:DescribeInstances", "ec2"),
        ("elasticloadbalancing:DescribeTargetHealth", "ec2"),
        ("rds:DescribeDBInstances", "rds"),
    ],
)
def test_a_missing_action_fails_the_export_with_a_message_naming_it(
    source, tmp_path, action, kinds
):
    """One action taken out of the policy: exit 1, and the report says which, in plain words.

    Every action here is enforced by moto (see the module doc), so the
    refusal is real: the message comes from exitplan's table, whatever
    words the service used (S3 says only "Access Denied").
    """
    keys = source.moto.user_with_policy(without(policy_document(), action))
    export = run_export(source, keys, tmp_path / "run", kinds)
    assert_no_traceback(export)
    assert export.returncode == 1, export.stderr[-4000:]
    assert export.report["status"] == "failed"
    failures = export.failure_text()
    assert f"lack {action}" in failures, failures[-4000:]
    assert "exitplan iam-policy" in failures
    assert f"lack {action}" in export.stderr


def test_allow_snapshots_lets_the_export_take_the_rds_snapshot(source, tmp_path):
    """With ``--allow-snapshots`` the RDS snapshot is taken (rds:CreateDBSnapshot, enforced)."""
    keys = source.moto.user_with_policy(policy_document(allow_snapshots=True))
    export = run_export(source, keys, tmp_path / "run", "rds")
    assert_no_traceback(export)
    assert export.returncode == 0, export.failure_text() or export.stderr[-4000:]
    assert not [w for w in export.report["warnings"] if "RDS snapshot" in w]
    rds = source.moto.client("rds")
    snapshots = rds.describe_db_snapshots(DBInstanceIdentifier=DB_INSTANCE_ID)["DBSnapshots"]
    wanted = snapshot_identifier(DB_INSTANCE_ID, export.report["run_id"])
    assert wanted in {s["DBSnapshotIdentifier"] for s in snapshots}


def test_a_volume_without_a_snapshot_fails_plainly_without_the_snapshot_right(source, tmp_path):
    """ec2:CreateSnapshot is enforced: read-only, the volume's item fails naming it and the
    flag that grants it; with ``--allow-snapshots`` the snapshot is created."""
    ec2 = source.moto.client("ec2")
    volume = ec2.create_volume(AvailabilityZone=f"{SANDBOX_REGION}a", Size=1)["VolumeId"]
    try:
        keys = source.moto.user_with_policy(policy_document())
        export = run_export(source, keys, tmp_path / "read-only", "ebs")
        assert_no_traceback(export)
        [failure] = [f for f in export.report["failed"] if volume in f["key"]]
        assert "lack ec2:CreateSnapshot" in failure["error"]
        assert "exitplan iam-policy --allow-snapshots" in failure["error"]

        keys = source.moto.user_with_policy(policy_document(allow_snapshots=True))
        export = run_export(source, keys, tmp_path / "snapshots", "ebs")
        assert_no_traceback(export)
        created = ec2.describe_snapshots(
            Filters=[
                {"Name": "tag:volume-id", "Values": [volume]},
                {"Name": "tag:created-by", "Values": ["exitplan"]},
            ]
        )["Snapshots"]
        assert len(created) == 1
        assert "CreateSnapshot" not in json.dumps(export.report["failed"])
    finally:
        for snapshot in ec2.describe_snapshots(
            Filters=[{"Name": "tag:volume-id", "Values": [volume]}]
        )["Snapshots"]:
            ec2.delete_snapshot(SnapshotId=snapshot["SnapshotId"])
        ec2.delete_volume(VolumeId=volume)


#: One read per service, made with no arguments to look up: (method, arguments).
ENFORCED_SERVICES = {
    "s3": ("list_buckets", {}),
    "ec2": ("describe_volumes", {}),
    "elbv2": ("describe_load_balancers", {}),
    "rds": ("describe_db_instances", {}),
    "dynamodb": ("list_tables", {}),
    "secretsmanager": ("list_secrets", {}),
    "ssm": ("describe_parameters", {}),
}


@pytest.mark.parametrize("service", sorted(ENFORCED_SERVICES))
def test_moto_enforces_the_policy_for(source, service):
    """The service evaluates the caller's policy: allowed with it, refused without."""
    method, arguments = ENFORCED_SERVICES[service]
    allowed = source.moto.user_with_policy(policy_document())
    getattr(source.moto.client(service, allowed), method)(**arguments)
    nothing = source.moto.user_with_policy(
        {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "sts:GetCallerIdentity", "Resource": "*"}],
        }
    )
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        getattr(source.moto.client(service, nothing), method)(**arguments)
    assert client_error_is_access_denied(refused.value), refused.value.response


@pytest.mark.parametrize("service", ["route53", "ebs"])
def test_moto_cannot_check_signatures_for(source, service):
    """Even the admin (allowed everything) is refused: moto fails its own signature check.

    When this fails, moto has learnt to: add the kind to ENFORCED_KINDS and
    the service to ENFORCED_SERVICES, and say so in the module doc.
    """
    client = source.moto.client(service)
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        if service == "route53":
            client.list_hosted_zones()
        else:
            client.list_snapshot_blocks(SnapshotId=source.summary.snapshot_id)
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
