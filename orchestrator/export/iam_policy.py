"""The AWS rights the export needs, derived from one table of the calls it makes.

:data:`SOURCE_CALLS` names every AWS API operation that the inventory and the
exporters make on the source account, and the IAM action(s) each one needs.
Everything here is derived from it:

* :func:`policy_document` is the identity policy ``exitplan iam-policy``
  prints: the read-only actions, ``kms:Decrypt`` limited to reads made through
  Secrets Manager and SSM, the optional snapshot rights when asked for, and
  an explicit Deny on deletes and writes in every service the export reads;
* :func:`name_missing_permission`, registered on every boto3 client of the
  source account (``providers.aws``), rewrites an access-denied error so it
  names the IAM action that was missing, what exitplan needed it for and how
  to grant it; the S3 direct reader does the same for its GETs.

``tests/unit/test_iam_policy.py`` scans the engine's code for boto3 calls and
fails when a call has no row here, so a new call cannot widen or break the
policy unnoticed.

This lives beside the exporters, not in ``drill/``: the exporters and the
inventory consult it when a call is refused, and ``drill --evaluate`` (which
builds on the export) can import it from here, never the other way round.
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

#: Error codes AWS answers when an identity's policies refuse a call.
ACCESS_DENIED_CODES = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "UnauthorizedOperation",
        "AuthorizationError",
        "UnauthorizedAccess",
    }
)
_XML_CODE = re.compile(r"<Code>([^<]*)</Code>")
_XML_MESSAGE = re.compile(r"<Message>([^<]*)</Message>")

#: Where the hook leaves the missing action in a refused call's error (see missing_action).
MISSING_ACTION_KEY = "ExitplanMissingAction"

POLICY_VERSION = "2012-10-17"
#: AWS's limit on a managed policy document, counted without whitespace.
MANAGED_POLICY_MAX_CHARS = 6144


@dataclass(frozen=True)
class SourceCall:
    """One API operation exitplan makes on the source account, and the rights it needs.

    ``service`` is the boto3 client name (``elbv2``), ``operation`` the API
    operation as botocore names it (``DescribeLoadBalancers``), ``actions``
    the IAM actions AWS checks for it, the first being the one the call is
    named after. ``version_action`` replaces it when the request names an
    object version (S3 checks ``s3:GetObjectVersion`` then). A call with
    ``optional_write`` changes the source account (it takes a snapshot) and
    is left out of the read-only policy; the export goes on without it.
    ``decrypts``: the value read may be protected by a customer-managed KMS
    key, so ``kms:Decrypt`` through this service is needed too.
    """

    service: str
    operation: str
    actions: tuple[str, ...]
    purpose: str
    version_action: str | None = None
    optional_write: bool = False
    decrypts: bool = False

    @property
    def all_actions(self) -> tuple[str, ...]:
        extra = (self.version_action,) if self.version_action else ()
        return (*self.actions, *extra)


def _read(service: str, operation: str, action: str, purpose: str, **extra: Any) -> SourceCall:
    return SourceCall(service, operation, (action,), purpose, **extra)


#: Every call the inventory and the exporters make on the source, one row each.
SOURCE_CALLS: tuple[SourceCall, ...] = (
    # S3
    _read("s3", "ListBuckets", "s3:ListAllMyBuckets", "list the buckets (inventory, S3 export)"),
    _read(
        "s3", "GetBucketLocation", "s3:GetBucketLocation", "find each bucket's region (inventory)"
    ),
    _read(
        "s3",
        "GetBucketVersioning",
        "s3:GetBucketVersioning",
        "tell versioned buckets apart (inventory, S3 export)",
    ),
    _read(
        "s3",
        "GetBucketWebsite",
        "s3:GetBucketWebsite",
        "see which buckets serve a website (inventory)",
    ),
    _read(
        "s3",
        "ListObjectsV2",
        "s3:ListBucket",
        "list the objects of a bucket (inventory, S3 export)",
    ),
    _read(
        "s3",
        "ListObjectVersions",
        "s3:ListBucketVersions",
        "list every version in a versioned bucket (inventory, S3 export)",
    ),
    _read(
        "s3",
        "GetObject",
        "s3:GetObject",
        "read an object's bytes (S3 export)",
        version_action="s3:GetObjectVersion",
    ),
    _read(
        "s3",
        "HeadObject",
        "s3:GetObject",
        "read an object's checksum and part size (S3 export)",
        version_action="s3:GetObjectVersion",
    ),
    _read(
        "s3",
        "GetObjectAttributes",
        "s3:GetObjectAttributes",
        "read a multipart object's part sizes and checksums (S3 export); without it, one "
        "HeadObject per part",
        version_action="s3:GetObjectVersionAttributes",
    ),
    # EC2 and EBS
    _read(
        "ec2",
        "DescribeInstances",
        "ec2:DescribeInstances",
        "describe the instances (inventory, EC2 and EBS export)",
    ),
    _read(
        "ec2",
        "DescribeInstanceAttribute",
        "ec2:DescribeInstanceAttribute",
        "read the instances' start-up scripts (inventory, EC2 export)",
    ),
    _read(
        "ec2",
        "DescribeInstanceTypes",
        "ec2:DescribeInstanceTypes",
        "size the instances (EC2 export)",
    ),
    _read("ec2", "DescribeImages", "ec2:DescribeImages", "name the instances' images (EC2 export)"),
    _read(
        "ec2",
        "DescribeSecurityGroups",
        "ec2:DescribeSecurityGroups",
        "read the open ports (inventory, EC2 export)",
    ),
    _read(
        "ec2",
        "DescribeVolumes",
        "ec2:DescribeVolumes",
        "list the EBS volumes (inventory, EC2 and EBS export)",
    ),
    _read(
        "ec2",
        "DescribeSnapshots",
        "ec2:DescribeSnapshots",
        "find each volume's newest snapshot (inventory, EBS export)",
    ),
    _read(
        "ebs",
        "ListSnapshotBlocks",
        "ebs:ListSnapshotBlocks",
        "list a snapshot's blocks (EBS export)",
    ),
    _read(
        "ebs", "GetSnapshotBlock", "ebs:GetSnapshotBlock", "read a snapshot's blocks (EBS export)"
    ),
    SourceCall(
        "ec2",
        "CreateSnapshot",
        ("ec2:CreateSnapshot", "ec2:CreateTags"),
        "snapshot a volume that has no snapshot yet, tagged created-by=exitplan (EBS export)",
        optional_write=True,
    ),
    # Load balancers
    _read(
        "elbv2",
        "DescribeLoadBalancers",
        "elasticloadbalancing:DescribeLoadBalancers",
        "describe the load balancers (inventory, EC2 export)",
    ),
    _read(
        "elbv2",
        "DescribeListeners",
        "elasticloadbalancing:DescribeListeners",
        "read the load balancers' listeners (inventory, EC2 export)",
    ),
    _read(
        "elbv2",
        "DescribeTargetGroups",
        "elasticloadbalancing:DescribeTargetGroups",
        "read the load balancers' target groups (EC2 export)",
    ),
    _read(
        "elbv2",
        "DescribeTargetHealth",
        "elasticloadbalancing:DescribeTargetHealth",
        "read which instances a load balancer sends to (EC2 export)",
    ),
    # RDS
    _read(
        "rds",
        "DescribeDBInstances",
        "rds:DescribeDBInstances",
        "describe the databases and their endpoints (inventory, RDS export)",
    ),
    _read(
        "rds",
        "DescribeDBParameters",
        "rds:DescribeDBParameters",
        "read the databases' parameter groups (RDS export)",
    ),
    _read(
        "rds",
        "DescribeDBSnapshots",
        "rds:DescribeDBSnapshots",
        "find the snapshot an earlier attempt of the run took (RDS export)",
    ),
    SourceCall(
        "rds",
        "CreateDBSnapshot",
        ("rds:CreateDBSnapshot", "rds:AddTagsToResource"),
        "take an RDS snapshot of each database, tagged with the run (RDS export)",
        optional_write=True,
    ),
    # DynamoDB
    _read(
        "dynamodb",
        "ListTables",
        "dynamodb:ListTables",
        "list the tables (inventory, DynamoDB export)",
    ),
    _read(
        "dynamodb",
        "DescribeTable",
        "dynamodb:DescribeTable",
        "read each table's keys and indexes (inventory, DynamoDB export)",
    ),
    _read("dynamodb", "Scan", "dynamodb:Scan", "read every item of a table (DynamoDB export)"),
    # Route 53
    _read(
        "route53",
        "ListHostedZones",
        "route53:ListHostedZones",
        "list the zones (inventory, Route53 export)",
    ),
    _read(
        "route53",
        "GetHostedZone",
        "route53:GetHostedZone",
        "read a zone again when it was not listed (Route53 export)",
    ),
    _read(
        "route53",
        "ListResourceRecordSets",
        "route53:ListResourceRecordSets",
        "read every record of a zone (inventory, Route53 export)",
    ),
    # Secrets Manager and SSM Parameter Store
    _read(
        "secretsmanager",
        "ListSecrets",
        "secretsmanager:ListSecrets",
        "list the secrets, names only (inventory, secrets export)",
    ),
    _read(
        "secretsmanager",
        "GetSecretValue",
        "secretsmanager:GetSecretValue",
        "read secret values into the encrypted bundle, and the RDS password (secrets and RDS export)",
        decrypts=True,
    ),
    _read(
        "ssm",
        "DescribeParameters",
        "ssm:DescribeParameters",
        "list the SSM parameters, names only (inventory, secrets export)",
    ),
    _read(
        "ssm",
        "GetParameters",
        "ssm:GetParameters",
        "read parameter values into the encrypted bundle (secrets export)",
        decrypts=True,
    ),
    # STS
    _read(
        "sts",
        "GetCallerIdentity",
        "sts:GetCallerIdentity",
        "learn the account id, to keep only its own snapshots (inventory)",
    ),
)

_BY_CALL: dict[tuple[str, str], SourceCall] = {(c.service, c.operation): c for c in SOURCE_CALLS}

#: What the explicit Deny covers, per IAM service prefix: deletes, overwrites,
#: changes and creations. A pattern that would also match an action the same
#: policy allows is left out (an explicit Deny always wins over an Allow).
WRITE_PATTERNS: Mapping[str, tuple[str, ...]] = {
    "s3": (
        "s3:Delete*",
        "s3:Put*",
        "s3:Create*",
        "s3:Abort*",
        "s3:Replicate*",
        "s3:Restore*",
        "s3:Bypass*",
    ),
    "ec2": (
        "ec2:Delete*",
        "ec2:Terminate*",
        "ec2:Stop*",
        "ec2:Reboot*",
        "ec2:Modify*",
        "ec2:Create*",
        "ec2:Run*",
        "ec2:Attach*",
        "ec2:Detach*",
        "ec2:Associate*",
        "ec2:Disassociate*",
        "ec2:Authorize*",
        "ec2:Revoke*",
        "ec2:Replace*",
        "ec2:Deregister*",
    ),
    "ebs": ("ebs:StartSnapshot", "ebs:PutSnapshotBlock", "ebs:CompleteSnapshot"),
    "elasticloadbalancing": (
        "elasticloadbalancing:Delete*",
        "elasticloadbalancing:Modify*",
        "elasticloadbalancing:Create*",
        "elasticloadbalancing:Set*",
        "elasticloadbalancing:Register*",
        "elasticloadbalancing:Deregister*",
        "elasticloadbalancing:AddTags",
        "elasticloadbalancing:RemoveTags",
    ),
    "rds": (
        "rds:Delete*",
        "rds:Modify*",
        "rds:Create*",
        "rds:Stop*",
        "rds:Reboot*",
        "rds:Restore*",
        "rds:Failover*",
        "rds:Promote*",
        "rds:AddTagsToResource",
        "rds:RemoveTagsFromResource",
    ),
    "dynamodb": (
        "dynamodb:Delete*",
        "dynamodb:Put*",
        "dynamodb:Update*",
        "dynamodb:BatchWriteItem",
        "dynamodb:Create*",
        "dynamodb:Restore*",
        "dynamodb:PartiQLDelete",
        "dynamodb:PartiQLInsert",
        "dynamodb:PartiQLUpdate",
    ),
    "route53": (
        "route53:Delete*",
        "route53:Change*",
        "route53:Create*",
        "route53:Update*",
        "route53:Associate*",
        "route53:Disassociate*",
    ),
    "secretsmanager": (
        "secretsmanager:Delete*",
        "secretsmanager:Put*",
        "secretsmanager:Update*",
        "secretsmanager:Create*",
        "secretsmanager:Rotate*",
        "secretsmanager:Restore*",
        "secretsmanager:Cancel*",
        "secretsmanager:Remove*",
        "secretsmanager:Replicate*",
        "secretsmanager:TagResource",
        "secretsmanager:UntagResource",
    ),
    "ssm": (
        "ssm:Delete*",
        "ssm:Put*",
        "ssm:LabelParameterVersion",
        "ssm:UnlabelParameterVersion",
        "ssm:AddTagsToResource",
        "ssm:RemoveTagsFromResource",
    ),
}


def source_call(service: str, operation: str) -> SourceCall | None:
    """The row of ``SOURCE_CALLS`` for a boto3 service and API operation, or None."""
    return _BY_CALL.get((service, operation))


def _prefix(action: str) -> str:
    return action.split(":", 1)[0]


def read_actions() -> list[str]:
    """Every action the read-only policy allows, sorted."""
    return sorted({a for c in SOURCE_CALLS if not c.optional_write for a in c.all_actions})


def snapshot_actions() -> list[str]:
    """The actions of the optional writes (snapshots), sorted."""
    return sorted({a for c in SOURCE_CALLS if c.optional_write for a in c.all_actions})


def _matches(pattern: str, action: str) -> bool:
    # IAM matches action names case-insensitively, with * and ? as wildcards.
    return fnmatch.fnmatchcase(action.lower(), pattern.lower())


def deny_patterns(allowed: Iterable[str]) -> list[str]:
    """The Deny statement's actions: writes of every service read, none that hits ``allowed``."""
    allowed = list(allowed)
    services = {_prefix(a) for a in allowed}
    return [
        pattern
        for service in sorted(services)
        for pattern in WRITE_PATTERNS.get(service, ())
        if not any(_matches(pattern, action) for action in allowed)
    ]


def policy_document(*, allow_snapshots: bool = False) -> dict[str, Any]:
    """The IAM identity policy the export needs, as a JSON-able dict.

    Read-only by default. ``allow_snapshots`` adds the statement that lets
    the export take EBS and RDS snapshots (its only writes) and drops the
    Deny patterns that would cancel it. Pure: the same document every call.
    """
    reads = read_actions()
    decrypt_services = sorted({c.service for c in SOURCE_CALLS if c.decrypts})
    statements: list[dict[str, Any]] = [
        {"Sid": "ExitplanReadTheSource", "Effect": "Allow", "Action": reads, "Resource": "*"},
        {
            # Only where a secret or SecureString is encrypted with a
            # customer-managed key; AWS-managed keys need no grant.
            "Sid": "ExitplanDecryptSecretsItReads",
            "Effect": "Allow",
            "Action": ["kms:Decrypt"],
            "Resource": "*",
            "Condition": {
                "StringLike": {
                    "kms:ViaService": [f"{service}.*.amazonaws.com" for service in decrypt_services]
                }
            },
        },
    ]
    allowed = list(reads)
    if allow_snapshots:
        snapshots = snapshot_actions()
        statements.append(
            {
                "Sid": "ExitplanOptionalSnapshots",
                "Effect": "Allow",
                "Action": snapshots,
                "Resource": "*",
            }
        )
        allowed += snapshots
    statements.append(
        {
            "Sid": "ExitplanDenyDeletesAndWrites",
            "Effect": "Deny",
            "Action": deny_patterns(allowed),
            "Resource": "*",
        }
    )
    return {"Version": POLICY_VERSION, "Statement": statements}


def policy_json(*, allow_snapshots: bool = False) -> str:
    """:func:`policy_document` as indented JSON, ready for ``aws iam create-policy``."""
    return json.dumps(policy_document(allow_snapshots=allow_snapshots), indent=2) + "\n"


def policy_rows(*, allow_snapshots: bool = False) -> list[tuple[str, str, str]]:
    """(action, "read" | "optional write", what exitplan needs it for), one row per action."""
    rows: dict[str, tuple[str, str, list[str]]] = {}
    for call in SOURCE_CALLS:
        if call.optional_write and not allow_snapshots:
            continue
        access = "optional write" if call.optional_write else "read"
        for action in call.all_actions:
            row = rows.setdefault(action, (action, access, []))
            if call.purpose not in row[2]:
                row[2].append(call.purpose)
    rows["kms:Decrypt"] = (
        "kms:Decrypt",
        "read",
        ["decrypt what Secrets Manager and SSM return, when a customer-managed key protects it"],
    )
    return [(a, access, "; ".join(p)) for a, access, p in sorted(rows.values())]


# -- naming a missing permission ---------------------------------------------


def missing_action(exc: BaseException) -> str | None:
    """The IAM action a refused boto3 call lacked, as :func:`name_missing_permission` found it.

    None for any other error, and for calls made on clients without the hook.
    """
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return None
    action = response.get("Error", {}).get(MISSING_ACTION_KEY)
    return str(action) if action else None


def _missing_action(call: SourceCall, versioned: bool, detail: str) -> str:
    if versioned and call.version_action:
        return call.version_action
    # AWS names the refused action in most messages: prefer it when it is one of ours.
    lowered = detail.lower()
    for action in call.actions:
        if action.lower() in lowered:
            return action
    return call.actions[0]


def denied_message(
    service: str,
    operation: str,
    *,
    versioned: bool = False,
    detail: str = "",
    iam_prefix: str | None = None,
    reason_given: bool = True,
) -> str:
    """Plain words for a refused call: the missing IAM action, why it is needed, the fix.

    ``detail`` is what AWS said (kept, shortened, at the end).
    ``reason_given=False`` for a bare 403 (no error code: a HEAD, or an
    endpoint that says nothing), where a missing right is only the likely
    cause, and the words say so. Never raises.
    """
    call = source_call(service, operation)
    detail = " ".join(detail.split())[:300]
    said = f" AWS said: {detail}" if detail else ""
    head = (
        "access denied: the source credentials lack"
        if reason_given
        else "access denied (HTTP 403, no reason given): the source credentials probably lack"
    )
    if call is None:
        action = f"{iam_prefix or service}:{operation}"
        return f"{head} {action}; grant it and run again.{said}"
    action = _missing_action(call, versioned, detail)
    # The version action replaces the plain one; the others are needed together.
    others = [a for a in call.actions if a != action] if action in call.actions else []
    needs = action + (f" (with {', '.join(others)})" if others else "")
    if call.optional_write:
        fix = (
            "it is a write, so the read-only policy leaves it out: grant it with the policy "
            "`exitplan iam-policy --allow-snapshots` prints, or take the snapshot yourself"
        )
    else:
        fix = "grant it (`exitplan iam-policy` prints the whole read-only policy) and run again"
    return f"{head} {needs}, which exitplan needs to {call.purpose}; {fix}.{said}"


def error_code_and_detail(code: str, message: str) -> tuple[str, str]:
    """The real error code and message of an error botocore could not parse.

    Some endpoints answer a JSON-protocol call with an XML error body; botocore
    then reports the HTTP status as the code and the whole body as the message.
    """
    if code and not code.isdigit():
        return code, message
    found = _XML_CODE.search(message)
    said = _XML_MESSAGE.search(message)
    return (found.group(1) if found else code), (said.group(1) if said else message)


def is_access_denied(code: str, status: int) -> bool:
    """Whether an error (its code as :func:`error_code_and_detail` gives it) means a right is missing.

    A 403 without a readable code counts (a HEAD has no body to say more);
    a 403 whose code blames the signature or the key does not.
    """
    if code in ACCESS_DENIED_CODES:
        return True
    return status == 403 and (not code or code.isdigit())


def client_error_is_access_denied(exc: BaseException) -> bool:
    """Whether ``exc`` is a botocore ``ClientError`` refusing a call for a missing right."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return False
    error = response.get("Error", {})
    code, _ = error_code_and_detail(str(error.get("Code") or ""), str(error.get("Message") or ""))
    return is_access_denied(
        code, int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
    )


def name_missing_permission(
    http_response: Any = None, parsed: Any = None, model: Any = None, **_: Any
) -> None:
    """botocore ``after-call`` handler: an access-denied error names the missing action.

    Rewrites ``parsed["Error"]["Message"]`` in place (the code is kept, so
    callers that branch on it still do) and records the action under
    :data:`MISSING_ACTION_KEY`, before botocore raises the error. Does
    nothing for any other response.
    """
    if not isinstance(parsed, dict) or model is None:
        return
    error = parsed.get("Error")
    if not isinstance(error, dict):
        return
    status = int(getattr(http_response, "status_code", 0) or 0)
    code, detail = error_code_and_detail(
        str(error.get("Code") or ""), str(error.get("Message") or "")
    )
    if not is_access_denied(code, status):
        return
    service_model = model.service_model
    versioned = "versionId=" in str(getattr(http_response, "url", "") or "")
    call = source_call(service_model.service_name, model.name)
    error[MISSING_ACTION_KEY] = (
        _missing_action(call, versioned, detail)
        if call
        else f"{service_model.signing_name}:{model.name}"
    )
    error["Message"] = denied_message(
        service_model.service_name,
        model.name,
        versioned=versioned,
        detail=detail,
        iam_prefix=service_model.signing_name,
        reason_given=code in ACCESS_DENIED_CODES,
    )
