"""`exitplan iam-policy`: one table of source calls -> the policy, checked against the code.

The code scan is the part of the least-privilege proof that covers every
action, including the ones moto cannot enforce (see
tests/e2e/test_iam_policy_moto.py for which those are): it finds every boto3
call the engine makes on the source account and fails when one has no row in
``SOURCE_CALLS``, or when a row names a call the code no longer makes.

How a call is found, in every engine module that can reach the source (all
of ``orchestrator/`` and ``providers/`` but the sandbox seeder and the
destination/host providers, see ``NOT_SOURCE_MODULES``):

* an attribute named like an operation of a service the code makes clients
  for (``client.scan(...)``, ``functools.partial(sm.get_secret_value, ...)``);
* a string naming an operation, passed to a call (``get_paginator("list_tables")``,
  ``self._paginate(ec2, "describe_instances", ...)``,
  ``generate_presigned_url("get_object", ...)``);
* ``get_waiter("name")``, resolved to the operation the waiter polls.

An attribute is attributed to the services the same module makes clients
for; in a module that makes none but imports boto3, botocore or
``providers.aws`` (it is handed a client), to all of them; a module that does
neither holds no client and is skipped. A call is covered when one of the
services it is attributed to has a row for it.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import botocore.exceptions
import botocore.session
import pytest
from botocore import xform_name
from botocore.awsrequest import AWSResponse

from orchestrator.cli import main
from orchestrator.export.iam_policy import (
    MANAGED_POLICY_MAX_CHARS,
    SOURCE_CALLS,
    WRITE_PATTERNS,
    denied_message,
    error_code_and_detail,
    is_access_denied,
    missing_action,
    name_missing_permission,
    policy_document,
    policy_rows,
    read_actions,
    snapshot_actions,
    source_call,
)

ROOT = Path(__file__).resolve().parents[2]
#: Engine modules that never talk to the source account, and why.
SANDBOX_SEEDER = "orchestrator/sandbox/account.py"
NOT_SOURCE_MODULES = {
    SANDBOX_SEEDER: "seeds the sandbox account; never runs against a real one",
    "providers/storage.py": "destinations, over libcloud storage drivers",
    "providers/compute.py": "candidate hosts, over libcloud compute drivers",
    "providers/dns.py": "the destination DNS, over libcloud",
    "providers/ssh.py": "hosts, over paramiko",
    "providers/local.py": "this machine as a host",
}
#: Calls the scan finds that are not made on the source: (module, top-level function, method).
NOT_SOURCE_CALLS = {
    ("orchestrator/export/exporters/dynamodb.py", "restore_table", "create_table"): (
        "restores an export into a scratch table at a target, never the source"
    ),
    ("orchestrator/export/exporters/dynamodb.py", "restore_table", "batch_write_item"): (
        "restores an export into a scratch table at a target, never the source"
    ),
    ("orchestrator/export/exporters/ebs.py", "undo_snapshot", "delete_snapshot"): (
        "rollback deletes a snapshot the export took: a rollback right, not the export's"
    ),
    ("orchestrator/export/exporters/rds.py", "undo_snapshot", "delete_db_snapshot"): (
        "rollback deletes a snapshot the export took: a rollback right, not the export's"
    ),
    ("providers/dns_route53.py", "zone_id", "list_hosted_zones_by_name"): (
        "the DNS cutover keeps the old zone in step while it accepts writes: a cutover right"
    ),
    ("providers/dns_route53.py", "apply", "change_resource_record_sets"): (
        "the DNS cutover keeps the old zone in step while it accepts writes: a cutover right"
    ),
}
#: Modules the scan must reach, so a change to its scoping cannot hide them.
MUST_SCAN = {
    "providers/aws.py",
    "providers/s3_reader.py",
    "orchestrator/inventory.py",
    *(
        f"orchestrator/export/exporters/{kind}.py"
        for kind in ("s3", "ebs", "ec2", "rds", "dynamodb", "route53", "secrets")
    ),
}
SESSION = botocore.session.get_session()


@dataclass(frozen=True)
class FoundCall:
    module: str
    function: str
    line: int
    method: str  # snake_case, as boto3 spells it
    services: tuple[str, ...]  # the services that have it, among the candidates

    def where(self) -> str:
        return f"{self.module}:{self.line} ({self.function}: {self.method})"


def _reaches_aws(module: str) -> bool:
    return module.split(".")[0] in ("boto3", "botocore") or module == "providers.aws"


class _Scanner(ast.NodeVisitor):
    def __init__(self, module: str) -> None:
        self.module = module
        self.functions: list[str] = []
        self.attributes: list[tuple[str, int, str]] = []
        self.strings: list[tuple[str, int, str]] = []
        self.waiters: list[tuple[str, int, str]] = []
        self.client_services: set[str] = set()
        #: Whether the module imports boto3, botocore or providers.aws (can hold a client).
        self.reaches_aws = False

    def visit_Import(self, node: ast.Import) -> None:
        self.reaches_aws |= any(_reaches_aws(alias.name) for alias in node.names)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        self.reaches_aws |= _reaches_aws(node.module or "")

    @property
    def function(self) -> str:
        return ".".join(self.functions) or "<module>"

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.functions.append(node.name)
        self.generic_visit(node)
        self.functions.pop()

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Attribute(self, node: ast.Attribute) -> None:
        self.attributes.append((self.function, node.lineno, node.attr))
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        literals = [
            (a.lineno, a.value)
            for a in node.args
            if isinstance(a, ast.Constant) and isinstance(a.value, str)
        ]
        name = node.func.attr if isinstance(node.func, ast.Attribute) else ""
        if name in ("client", "client_unlocked") and literals:
            self.client_services.add(literals[0][1])
        elif name == "get_waiter" and literals:
            self.waiters.append((self.function, *literals[0]))
        else:
            self.strings += [(self.function, line, value) for line, value in literals]
        self.generic_visit(node)


def source_modules(root: Path = ROOT) -> list[Path]:
    return sorted(
        path
        for package in ("orchestrator", "providers")
        for path in (root / package).rglob("*.py")
        if path.relative_to(root).as_posix() not in NOT_SOURCE_MODULES
    )


def _operations(service: str) -> dict[str, str]:
    model = SESSION.get_service_model(service)
    return {xform_name(name): name for name in model.operation_names}


def _waiter_operation(service: str, waiter: str) -> str | None:
    """The operation boto3's ``get_waiter(waiter)`` polls, or None if the service has no such waiter."""
    try:
        model = SESSION.get_waiter_model(service)
    except botocore.exceptions.DataNotFoundError:
        return None
    for name in model.waiter_names:
        if xform_name(name) == waiter:
            return str(model.get_waiter(name).operation)
    return None


def scan(paths: Iterable[Path], root: Path = ROOT) -> tuple[set[str], list[FoundCall]]:
    """(services the code makes clients for, every boto3 call found), see the module doc."""
    scanners = []
    for path in paths:
        scanner = _Scanner(path.relative_to(root).as_posix())
        scanner.visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
        scanners.append(scanner)
    services = set().union(*(s.client_services for s in scanners))
    operations = {service: _operations(service) for service in services}
    found: list[FoundCall] = []
    for scanner in scanners:
        if not (scanner.client_services or scanner.reaches_aws):
            continue  # holds no AWS client (a `.query` there is dnspython's, not DynamoDB's)
        candidates = sorted(scanner.client_services or services)

        def having(method: str, within: Iterable[str]) -> tuple[str, ...]:
            return tuple(s for s in within if method in operations[s])

        for function, line, method in scanner.attributes + scanner.strings:
            owners = having(method, candidates) or having(method, sorted(services))
            if owners:
                found.append(FoundCall(scanner.module, function, line, method, owners))
        for function, line, waiter in scanner.waiters:
            for service in candidates:
                operation = _waiter_operation(service, waiter)
                if operation is not None:
                    found.append(
                        FoundCall(scanner.module, function, line, xform_name(operation), (service,))
                    )
    return services, found


def exempt(call: FoundCall) -> bool:
    """Whether ``call`` is listed in NOT_SOURCE_CALLS (functions nested in it included)."""
    outer = call.function.split(".", 1)[0]
    return (call.module, outer, call.method) in NOT_SOURCE_CALLS


def uncovered(found: Iterable[FoundCall]) -> list[FoundCall]:
    """Calls with no row in SOURCE_CALLS for any service that has them, and not exempt."""
    missing = []
    for call in found:
        if exempt(call):
            continue
        rows = [
            source_call(service, _operations(service)[call.method]) for service in call.services
        ]
        if not any(rows):
            missing.append(call)
    return missing


@pytest.fixture(scope="module")
def scanned() -> tuple[set[str], list[FoundCall]]:
    return scan(source_modules())


# -- the scan against the table ---------------------------------------------


def test_the_scan_reaches_every_module_that_calls_aws(scanned):
    scanned_modules = {p.relative_to(ROOT).as_posix() for p in source_modules()}
    assert scanned_modules >= MUST_SCAN
    services, found = scanned
    assert {c.module for c in found} >= MUST_SCAN - {"providers/aws.py"}
    assert services >= {row.service for row in SOURCE_CALLS}


@pytest.mark.parametrize("module", sorted(set(NOT_SOURCE_MODULES) - {SANDBOX_SEEDER}))
def test_modules_left_out_of_the_scan_never_reach_the_source(module):
    tree = ast.parse((ROOT / module).read_text(encoding="utf-8"))
    imported = {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    } | {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    reaching = {m for m in imported if _reaches_aws(m)}
    assert not reaching, f"{module} imports {sorted(reaching)}: scan it for source calls"


def test_every_boto3_call_in_the_engine_has_an_iam_action(scanned):
    _, found = scanned
    missing = uncovered(found)
    assert not missing, (
        "boto3 calls with no row in orchestrator/export/iam_policy.py SOURCE_CALLS "
        "(add one naming the IAM action, or list the call in NOT_SOURCE_CALLS with why): "
        + "; ".join(c.where() for c in missing)
    )


def test_every_row_of_the_table_is_a_call_the_code_makes(scanned):
    _, found = scanned
    made = {
        (service, _operations(service)[call.method])
        for call in found
        if not exempt(call)
        for service in call.services
    }
    stale = [
        (row.service, row.operation)
        for row in SOURCE_CALLS
        if (row.service, row.operation) not in made
    ]
    assert not stale, f"rows for calls the code no longer makes (they widen the policy): {stale}"


def test_the_scan_fails_on_a_new_call_without_an_action(tmp_path):
    package = tmp_path / "orchestrator"
    package.mkdir()
    (package / "new_exporter.py").write_text(
        "def list_policies(account):\n"
        "    s3 = account.client('s3')\n"
        "    s3.get_bucket_policy(Bucket='b')\n"
        "    pages = s3.get_paginator('list_multipart_uploads')\n"
        "    return s3.list_buckets(), pages\n"
    )
    _, found = scan([package / "new_exporter.py"], root=tmp_path)
    assert sorted(c.method for c in uncovered(found)) == [
        "get_bucket_policy",
        "list_multipart_uploads",
    ]


def test_the_scan_skips_modules_that_hold_no_aws_client(tmp_path):
    package = tmp_path / "orchestrator"
    package.mkdir()
    (package / "dns_check.py").write_text(
        "import dns.query\ndef ask(q):\n    return dns.query.udp(q, '127.0.0.1'), q.query\n"
    )
    (package / "reader.py").write_text(
        "import botocore.auth\ndef read(client):\n    return client.query(TableName='t')\n"
    )
    (package / "tables.py").write_text(
        "def open(account):\n    return account.client('dynamodb')\n"
    )
    modules = [package / name for name in ("dns_check.py", "reader.py", "tables.py")]
    _, found = scan(modules, root=tmp_path)
    assert [(c.module, c.method) for c in found] == [("orchestrator/reader.py", "query")]


def test_the_scan_sees_calls_passed_around_uncalled(tmp_path):
    package = tmp_path / "orchestrator"
    package.mkdir()
    (package / "partial.py").write_text(
        "import functools\n"
        "def read(account):\n"
        "    ec2 = account.client('ec2')\n"
        "    return functools.partial(ec2.describe_addresses), ec2.get_waiter('volume_available')\n"
    )
    _, found = scan([package / "partial.py"], root=tmp_path)
    assert {c.method for c in uncovered(found)} == {"describe_addresses"}
    # The waiter polls DescribeVolumes, which has a row.
    assert "describe_volumes" in {c.method for c in found}


@pytest.mark.parametrize("row", SOURCE_CALLS, ids=lambda r: f"{r.service}.{r.operation}")
def test_each_row_names_a_real_operation_and_well_formed_actions(row):
    model = SESSION.get_service_model(row.service)
    assert row.operation in model.operation_names
    prefix = model.signing_name
    assert row.actions[0].startswith(f"{prefix}:"), (row.actions, prefix)
    for action in row.all_actions:
        assert re.fullmatch(r"[a-z0-9-]+:[A-Za-z0-9]+", action), action
    assert row.purpose


# -- the document --------------------------------------------------------------


def _statement(document, sid):
    return next(s for s in document["Statement"] if s["Sid"] == sid)


def _denied_by(document, action):
    return [
        pattern
        for s in document["Statement"]
        if s["Effect"] == "Deny"
        for pattern in s["Action"]
        if re.fullmatch(re.escape(pattern).replace(r"\*", ".*"), action, re.IGNORECASE)
    ]


def _allowed(document):
    return {a for s in document["Statement"] if s["Effect"] == "Allow" for a in s["Action"]}


@pytest.mark.parametrize("allow_snapshots", [False, True])
def test_the_document_is_a_well_formed_policy_that_fits_a_managed_policy(allow_snapshots):
    document = policy_document(allow_snapshots=allow_snapshots)
    assert document["Version"] == "2012-10-17"
    for statement in document["Statement"]:
        assert re.fullmatch(r"[A-Za-z0-9]+", statement["Sid"])
        assert statement["Effect"] in ("Allow", "Deny")
        assert statement["Resource"] == "*"
        assert statement["Action"] and len(set(statement["Action"])) == len(statement["Action"])
    minified = json.dumps(document, separators=(",", ":"))
    assert len(minified) <= MANAGED_POLICY_MAX_CHARS


def test_the_read_only_policy_allows_every_read_and_no_write():
    document = policy_document()
    allowed = _allowed(document)
    for row in SOURCE_CALLS:
        if row.optional_write:
            assert not set(row.all_actions) & allowed, row
        else:
            assert set(row.all_actions) <= allowed, row
    # Independent of the table's own flags: every action it allows only reads.
    for action in allowed:
        verb = action.split(":", 1)[1]
        assert re.match(r"(Describe|List|Get|Scan|Decrypt)", verb), action


def test_the_read_only_policy_denies_deletes_and_writes_in_every_service_it_reads():
    document = policy_document()
    services = {a.split(":")[0] for a in read_actions()} - {"sts"}
    deny = _statement(document, "ExitplanDenyDeletesAndWrites")
    assert deny["Effect"] == "Deny"
    for service in services:
        assert set(WRITE_PATTERNS[service]) <= set(deny["Action"]), service
    for action in (
        "s3:DeleteObject",
        "s3:PutObject",
        "s3:DeleteBucket",
        "ec2:TerminateInstances",
        "ec2:DeleteSnapshot",
        "ec2:CreateSnapshot",
        "rds:DeleteDBInstance",
        "rds:CreateDBSnapshot",
        "dynamodb:DeleteTable",
        "dynamodb:PutItem",
        "route53:ChangeResourceRecordSets",
        "secretsmanager:DeleteSecret",
        "secretsmanager:PutSecretValue",
        "ssm:DeleteParameter",
        "ssm:PutParameter",
        "ebs:PutSnapshotBlock",
    ):
        assert _denied_by(document, action), f"{action} is not explicitly denied"


@pytest.mark.parametrize("allow_snapshots", [False, True])
def test_no_allowed_action_is_cancelled_by_the_deny(allow_snapshots):
    document = policy_document(allow_snapshots=allow_snapshots)
    cancelled = {a: _denied_by(document, a) for a in _allowed(document) if _denied_by(document, a)}
    assert not cancelled


def test_allow_snapshots_adds_only_the_snapshot_writes_and_keeps_denying_deletes():
    read_only, with_snapshots = policy_document(), policy_document(allow_snapshots=True)
    added = _allowed(with_snapshots) - _allowed(read_only)
    assert (
        added
        == set(snapshot_actions())
        == {
            "ec2:CreateSnapshot",
            "ec2:CreateTags",
            "rds:CreateDBSnapshot",
            "rds:AddTagsToResource",
        }
    )
    assert _statement(with_snapshots, "ExitplanOptionalSnapshots")["Action"] == sorted(added)
    for action in (
        "ec2:DeleteSnapshot",
        "ec2:TerminateInstances",
        "rds:DeleteDBSnapshot",
        "rds:DeleteDBInstance",
        "ec2:DeleteVolume",
        "s3:DeleteObject",
        "dynamodb:DeleteTable",
    ):
        assert _denied_by(with_snapshots, action), action
    assert "ec2:Create*" in _statement(read_only, "ExitplanDenyDeletesAndWrites")["Action"]
    assert "ec2:Create*" not in _statement(with_snapshots, "ExitplanDenyDeletesAndWrites")["Action"]


def test_kms_decrypt_is_allowed_only_through_the_services_that_read_secrets():
    statement = _statement(policy_document(), "ExitplanDecryptSecretsItReads")
    assert statement["Action"] == ["kms:Decrypt"]
    assert statement["Condition"] == {
        "StringLike": {"kms:ViaService": ["secretsmanager.*.amazonaws.com", "ssm.*.amazonaws.com"]}
    }


# -- the CLI -------------------------------------------------------------------


def test_cli_prints_the_policy_document(capsys):
    assert main(["iam-policy"]) == 0
    assert json.loads(capsys.readouterr().out) == policy_document()
    assert main(["iam-policy", "--output", "json", "--allow-snapshots"]) == 0
    assert json.loads(capsys.readouterr().out) == policy_document(allow_snapshots=True)


def test_cli_text_output_says_what_each_action_is_for(capsys):
    assert main(["iam-policy", "--output", "text"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(policy_rows()) == len(read_actions()) + 1  # + kms:Decrypt
    scan_line = next(line for line in lines if line.startswith("dynamodb:Scan "))
    assert "read every item of a table" in scan_line
    assert not any(line.startswith("ec2:CreateSnapshot") for line in lines)
    assert main(["iam-policy", "--output", "text", "--allow-snapshots"]) == 0
    assert "optional write" in next(
        line
        for line in capsys.readouterr().out.splitlines()
        if line.startswith("ec2:CreateSnapshot")
    )


def test_cli_refuses_an_unknown_output_with_exit_2(capsys):
    assert main(["iam-policy", "--output", "yaml"]) == 2
    assert "--output" in capsys.readouterr().err


# -- naming the missing action -------------------------------------------------


def test_denied_message_names_the_action_and_the_fix():
    message = denied_message("dynamodb", "Scan", detail="User: u is not authorized")
    assert "lack dynamodb:Scan" in message
    assert "read every item of a table" in message
    assert "exitplan iam-policy" in message and "--allow-snapshots" not in message
    assert message.endswith("AWS said: User: u is not authorized")


def test_denied_message_for_an_object_version_names_get_object_version():
    assert "lack s3:GetObjectVersion," in denied_message("s3", "GetObject", versioned=True)
    assert "lack s3:GetObject," in denied_message("s3", "HeadObject")


def test_denied_message_for_a_snapshot_says_it_is_optional():
    message = denied_message(
        "ec2", "CreateSnapshot", detail="not authorized to perform: ec2:CreateTags"
    )
    assert "lack ec2:CreateTags (with ec2:CreateSnapshot)" in message
    assert "exitplan iam-policy --allow-snapshots" in message


def test_denied_message_for_an_unknown_call_still_names_an_action():
    message = denied_message("elbv2", "DescribeRules", iam_prefix="elasticloadbalancing")
    assert "lack elasticloadbalancing:DescribeRules" in message


@pytest.mark.parametrize(
    ("code", "message", "status", "denied"),
    [
        ("AccessDenied", "Access Denied", 403, True),
        ("AccessDeniedException", "User: x is not authorized", 400, True),
        ("UnauthorizedOperation", "You are not authorized", 403, True),
        ("403", "Forbidden", 403, True),  # a HEAD: no body
        ("", "", 403, True),
        (
            "403",
            "<ErrorResponse><Error><Code>AccessDenied</Code><Message>no</Message></Error>",
            403,
            True,
        ),
        (
            "403",
            "<ErrorResponse><Error><Code>SignatureDoesNotMatch</Code></Error></ErrorResponse>",
            403,
            False,
        ),
        ("InvalidClientTokenId", "The security token is invalid", 403, False),
        ("ThrottlingException", "Rate exceeded", 400, False),
        ("NoSuchKey", "gone", 404, False),
    ],
)
def test_which_errors_count_as_a_missing_right(code, message, status, denied):
    resolved, _ = error_code_and_detail(code, message)
    assert is_access_denied(resolved, status) is denied


def _after_call(service: str, operation: str, status: int, error: dict, url: str = "https://x/"):
    parsed = {"Error": dict(error), "ResponseMetadata": {"HTTPStatusCode": status}}
    model = SESSION.get_service_model(service).operation_model(operation)
    response = AWSResponse(url, status, {}, None)
    name_missing_permission(http_response=response, parsed=parsed, model=model)
    return parsed["Error"]


def test_the_botocore_hook_rewrites_a_refusal_and_keeps_its_code():
    error = _after_call(
        "dynamodb",
        "Scan",
        400,
        {
            "Code": "AccessDeniedException",
            "Message": "User: u is not authorized to perform: dynamodb:Scan",
        },
    )
    assert error["Code"] == "AccessDeniedException"
    assert error["Message"].startswith("access denied: the source credentials lack dynamodb:Scan,")
    assert "AWS said: User: u is not authorized" in error["Message"]
    raised = botocore.exceptions.ClientError({"Error": error}, "Scan")
    assert missing_action(raised) == "dynamodb:Scan"
    assert "lack dynamodb:Scan" in str(raised)


def test_a_bare_403_is_named_as_the_likely_cause_only():
    error = _after_call("route53", "ListHostedZones", 403, {"Code": "", "Message": ""})
    assert error["Message"].startswith(
        "access denied (HTTP 403, no reason given): the source credentials probably lack "
        "route53:ListHostedZones,"
    )


def test_missing_action_is_none_for_other_errors():
    other = botocore.exceptions.ClientError({"Error": {"Code": "NoSuchKey"}}, "GetObject")
    assert missing_action(other) is None
    assert missing_action(ValueError("x")) is None


def test_the_botocore_hook_reads_a_versioned_get_from_the_url():
    error = _after_call(
        "s3",
        "GetObject",
        403,
        {"Code": "AccessDenied", "Message": "Access Denied"},
        url="http://127.0.0.1/b/k?versionId=abc",
    )
    assert "lack s3:GetObjectVersion," in error["Message"]


def test_the_botocore_hook_leaves_other_errors_alone():
    error = {"Code": "NoSuchKey", "Message": "The specified key does not exist."}
    assert _after_call("s3", "GetObject", 404, error) == error
    xml = "<ErrorResponse><Error><Code>SignatureDoesNotMatch</Code></Error></ErrorResponse>"
    assert _after_call("ebs", "ListSnapshotBlocks", 403, {"Code": "403", "Message": xml}) == {
        "Code": "403",
        "Message": xml,
    }


def test_every_action_in_the_text_table_is_in_the_document():
    rows = {action for action, _, _ in policy_rows(allow_snapshots=True)}
    assert rows == _allowed(policy_document(allow_snapshots=True))
