"""RDS PostgreSQL instances -> configuration, an RDS snapshot, and a proven logical dump.

Per instance (engine ``postgres``) in each region, three items, in this order:

* ``rds/<region>/<instance>/instance.json``: engine, version, class, storage,
  endpoint, Multi-AZ, backup retention, parameter groups with their
  parameters, and the id of the RDS snapshot this run took (never a
  password; the managed secret is named by ARN only).
* ``rds/<region>/<instance>/dump.tar``: for every database on the instance,
  a ``pg_dump --format=directory`` taken inside one exported snapshot
  (``pg_export_snapshot``), as an uncompressed tar streamed from scratch
  (sorted names, mtime 0, owner 0: equal dumps give equal bytes). Layout:
  ``databases/<url-quoted name>/toc.dat ...``.
* ``rds/<region>/<instance>/dump.sha256.json``: every dump file's sha256 and
  size, the exact row count of every user table as seen by the dump's own
  snapshot, and the outcome of the restore check. It is written only after
  the tar has been read and verified, so it describes bytes the engine
  checked (it waits for the dump item, like DynamoDB's meta file). What it
  says is kept in the journal with the verified tar, so a resume after a
  kill between the two writes it without dumping again; wherever the tar
  is copied again, so is it.

``open`` of the dump item does the expensive part once per attempt: dump
every database, hash the files, then prove the dump restores: ``pg_restore``
into a scratch database (by default a throwaway local cluster started in
``context.scratch_dir``) and compare ``count(*)`` of every user table with
the source's counts from the dump's snapshot. A mismatch fails the item
(``FatalError``, naming the table and both counts): a dump that does not load
back must not be mistaken for a backup. The tar then streams from the
scratch directory, and ``verify`` checks that what the engine read is what
was dumped. ``close`` removes the scratch files.

Credentials: the master username comes from ``describe_db_instances``; the
password from, in order, the RDS-managed ``MasterUserSecret``, a secret named
by the instance tag ``exitplan:password-secret``, ``context.env``'s
``EXITPLAN_PG_PASSWORD_<INSTANCE_ID_UPPER_SNAKE>``, then ``PGPASSWORD``. It
reaches pg_dump and psql only as ``PGPASSWORD`` in their environment, and is
redacted from every message.

The tag ``exitplan:endpoint=<host>:<port>`` replaces the instance's endpoint.
It exists for tests and the sandbox, where moto derives an endpoint from the
instance id that reaches nothing and cannot be changed; on a real instance it
can point the dump at a tunnel or a read replica.

Idempotency keys hold the instance ARN, its DbiResourceId (a re-created
instance is a new one) and ``run_id``: each run dumps afresh, a resume of the
same run skips what is verified.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import tarfile
import tempfile
import threading
import urllib.parse
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import botocore.exceptions

from orchestrator.errors import ChecksumMismatch, FatalError, RetryableError
from orchestrator.export.exporters.base import (
    BytesStream,
    ExportContext,
    Exporter,
    ExportItem,
    SourceStream,
    TierOf,
)
from orchestrator.export.iam_policy import missing_action
from orchestrator.postgres import (
    PG_INSTALL_HINT,
    ExportedSnapshot,
    LocalCluster,
    PgConn,
    PgTools,
    create_database,
    find_pg_tools,
    list_databases,
    pg_dump_directory,
    pg_restore_directory,
    redact,
    require_pg_tools,
    row_counts,
    stop_recorded_cluster,
)
from providers.aws import AwsAccount, call_aws

log = logging.getLogger(__name__)
#: Where a dump is made when the run has no scratch directory of its own (temp dir).
SCRATCH_DIR_PREFIX = "exitplan-rds-"

INSTANCE_FORMAT = "exitplan.rds.instance/1"
DUMP_FORMAT = "exitplan.rds.dump/1"
#: Instance tag: ``host:port`` to connect to instead of the RDS endpoint (tests, sandbox).
ENDPOINT_TAG = "exitplan:endpoint"
#: Instance tag: name or ARN of the Secrets Manager secret holding the master password.
PASSWORD_SECRET_TAG = "exitplan:password-secret"  # noqa: S105 - a tag name, not a value
#: Where the databases sit inside dump.tar.
TAR_ROOT = "databases"

_CHUNK = 1024 * 1024
_BLOCK = tarfile.BLOCKSIZE
_RECORD = tarfile.RECORDSIZE


def password_env_name(instance_id: str) -> str:
    """``EXITPLAN_PG_PASSWORD_<ID>``: the id upper-cased, every non-alphanumeric as ``_``."""
    return "EXITPLAN_PG_PASSWORD_" + re.sub(r"[^A-Z0-9]", "_", instance_id.upper())


def snapshot_identifier(instance_id: str, run_id: str) -> str:
    """``exitplan-<instance>-<run>`` made valid for RDS: letters, digits and single
    hyphens, starting with a letter, not ending with a hyphen, at most 255."""
    raw = f"exitplan-{instance_id}-{run_id}".lower()
    cleaned = re.sub(r"-{2,}", "-", re.sub(r"[^a-z0-9-]", "-", raw))
    return cleaned[:255].rstrip("-")


def _tags(description: Mapping[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in description.get("TagList", [])}


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class DumpedFile:
    """One file of the dump, by its path inside dump.tar."""

    path: str
    size: int
    sha256: str


@dataclass(frozen=True)
class DatabaseDump:
    name: str
    #: Directory of this database inside dump.tar.
    path: str
    row_counts: Mapping[str, int]
    restore_ignored_errors: int | None


@dataclass(frozen=True)
class DumpResult:
    """What one attempt dumped and checked; becomes dump.sha256.json once verified."""

    taken_at: str
    pg_dump_version: str
    databases: tuple[DatabaseDump, ...]
    files: tuple[DumpedFile, ...]
    restore_check: str
    tar_size: int = 0
    tar_sha256: str = ""


class _InstanceState:
    def __init__(self, region: str, description: Mapping[str, Any]) -> None:
        self.region = region
        self.description = description
        #: Set once the dump item is settled: verified, skipped or failed.
        self.verified = threading.Event()
        #: The dump as verified at every destination (or recalled from the
        #: journal, when an earlier process verified it); None if not.
        self.result: DumpResult | None = None
        #: The last dump whose tar passed its checks; becomes ``result`` once
        #: the engine says the item is verified (published everywhere).
        self.attempt: DumpResult | None = None


def dump_record(result: DumpResult) -> dict[str, Any]:
    """A DumpResult as JSON, for the journal: all dump.sha256.json needs (no secret)."""
    return {
        "taken_at": result.taken_at,
        "pg_dump_version": result.pg_dump_version,
        "databases": [
            {
                "name": db.name,
                "path": db.path,
                "row_counts": dict(db.row_counts),
                "restore_ignored_errors": db.restore_ignored_errors,
            }
            for db in result.databases
        ],
        "files": [[f.path, f.size, f.sha256] for f in result.files],
        "restore_check": result.restore_check,
        "tar_size": result.tar_size,
        "tar_sha256": result.tar_sha256,
    }


def dump_from_record(record: Mapping[str, Any]) -> DumpResult:
    """The inverse of ``dump_record``; raises KeyError/TypeError/ValueError on a bad one."""
    return DumpResult(
        taken_at=str(record["taken_at"]),
        pg_dump_version=str(record["pg_dump_version"]),
        databases=tuple(
            DatabaseDump(
                name=str(db["name"]),
                path=str(db["path"]),
                row_counts={str(k): int(v) for k, v in db["row_counts"].items()},
                restore_ignored_errors=(
                    None
                    if db.get("restore_ignored_errors") is None
                    else int(db["restore_ignored_errors"])
                ),
            )
            for db in record["databases"]
        ),
        files=tuple(DumpedFile(str(p), int(n), str(h)) for p, n, h in record["files"]),
        restore_check=str(record["restore_check"]),
        tar_size=int(record["tar_size"]),
        tar_sha256=str(record["tar_sha256"]),
    )


# --------------------------------------------------------------------------- streams


def tar_header(path: str, size: int) -> bytes:
    """The tar header of a regular file as dump.tar writes it (deterministic fields)."""
    info = tarfile.TarInfo(path)
    info.size = size
    info.mode = 0o644
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


class _DumpTarStream(SourceStream):
    """The dump directory as a tar, streamed file by file; removes the directory on close."""

    def __init__(
        self, name: str, root: Path, workdir: Path, result: DumpResult, state: _InstanceState
    ) -> None:
        self._name = name
        self._root = root
        self._workdir = workdir
        self._result = result
        self._state = state
        self._size = 0
        self._sha: Any = None
        self._complete = False
        self._verified: DumpResult | None = None

    def __iter__(self) -> Iterator[bytes]:
        self._complete = False
        self._sha = hashlib.sha256()
        self._size = 0
        for chunk in self._chunks():
            self._sha.update(chunk)
            self._size += len(chunk)
            yield chunk
        self._complete = True

    def _chunks(self) -> Iterator[bytes]:
        written = 0
        for entry in self._result.files:
            header = tar_header(entry.path, entry.size)
            written += len(header)
            yield header
            file_sha = hashlib.sha256()
            size = 0
            with (self._root / entry.path).open("rb") as handle:
                while chunk := handle.read(_CHUNK):
                    file_sha.update(chunk)
                    size += len(chunk)
                    yield chunk
            if size != entry.size or file_sha.hexdigest() != entry.sha256:
                # Something changed the scratch copy after the restore check.
                raise ChecksumMismatch(
                    f"{self._name}: dump file {entry.path} changed on scratch disk after it was "
                    f"dumped ({size} bytes, sha256 {file_sha.hexdigest()}; dumped {entry.size} "
                    f"bytes, sha256 {entry.sha256})"
                )
            padding = -size % _BLOCK
            written += size + padding
            if padding:
                yield b"\0" * padding
        # Two zero blocks end the archive; like tarfile, pad the whole to a record.
        end = 2 * _BLOCK
        yield b"\0" * (end + (-(written + end) % _RECORD))

    def verify(self, *, size: int, md5_hex: str, sha256_hex: str) -> str | None:
        if not self._complete or self._sha is None:
            raise ChecksumMismatch(f"{self._name}: the dump was not read to the end")
        digest = self._sha.hexdigest()
        if size != self._size or sha256_hex != digest:
            raise ChecksumMismatch(
                f"{self._name}: read {size} bytes (sha256 {sha256_hex}), the dump tar has "
                f"{self._size} bytes (sha256 {digest})"
            )
        result = self._result
        # Becomes the checksums' source once the engine has published the tar
        # everywhere (see RdsExporter.item_settled).
        self._verified = DumpResult(
            taken_at=result.taken_at,
            pg_dump_version=result.pg_dump_version,
            databases=result.databases,
            files=result.files,
            restore_check=result.restore_check,
            tar_size=self._size,
            tar_sha256=digest,
        )
        self._state.attempt = self._verified
        return f"sha256:{digest}"

    def record(self) -> Mapping[str, Any] | None:
        """Everything dump.sha256.json says, kept in the journal with the tar."""
        return None if self._verified is None else dump_record(self._verified)

    def close(self) -> None:
        shutil.rmtree(self._workdir, ignore_errors=True)


# --------------------------------------------------------------------------- exporter


class RdsExporter(Exporter):
    """Every RDS PostgreSQL instance in every region: config, snapshot, verified dump."""

    kind: ClassVar[str] = "rds"

    def __init__(
        self,
        account: AwsAccount,
        *,
        tier_of: TierOf,
        context: ExportContext | None = None,
        run_id: str = "",
        jobs: int = 4,
        restore_check: bool = True,
        restore_target: PgConn | None = None,
        take_snapshot: bool = True,
        sha_wait_s: float = 12 * 3600,
        dump_timeout_s: float | None = None,
    ) -> None:
        """``restore_target``: an existing server (its ``dbname`` is the maintenance
        database) to restore into instead of a throwaway local cluster; scratch
        databases are created there and left for the caller to drop.
        ``restore_check=False`` skips the restore (the row counts are still taken)."""
        super().__init__(account, tier_of=tier_of, context=context)
        if jobs < 1:
            raise ValueError("jobs must be at least 1")
        self.run_id = run_id or self.context.run_id or f"adhoc-{uuid.uuid4().hex[:12]}"
        self.jobs = jobs
        self.restore_check = restore_check
        self.restore_target = restore_target
        self.take_snapshot = take_snapshot
        self.sha_wait_s = sha_wait_s
        self.dump_timeout_s = dump_timeout_s
        self._lock = threading.Lock()
        self._instances: dict[tuple[str, str], _InstanceState] = {}
        self._skipped: list[str] = []

    def warnings(self) -> list[str]:
        return list(self._skipped)

    def _aws(self, what: str, fn: Callable[[], Any]) -> Any:
        return call_aws(what, fn)

    # -- listing -------------------------------------------------------------

    def list_items(self) -> Iterator[ExportItem]:
        """Per PostgreSQL instance: instance.json, dump.tar, dump.sha256.json."""
        for region in self.account.regions:
            client = self.account.client("rds", region)
            paginator = client.get_paginator("describe_db_instances")
            for page in self._aws(f"list RDS instances in {region}", paginator.paginate):
                for description in page.get("DBInstances", []):
                    if description.get("Engine") != "postgres":
                        continue
                    instance_id = description["DBInstanceIdentifier"]
                    with self._lock:
                        self._instances[(region, instance_id)] = _InstanceState(region, description)
                    yield from self._items(region, description)

    def _items(self, region: str, description: Mapping[str, Any]) -> Iterator[ExportItem]:
        instance_id = description["DBInstanceIdentifier"]
        arn = description.get("DBInstanceArn", f"{region}/{instance_id}")
        resource_id = description.get("DbiResourceId", "")
        parts = [
            ("instance", "instance.json"),
            ("dump", "dump.tar"),
            ("checksums", "dump.sha256.json"),
        ]
        need_server = self.restore_check and self.restore_target is None
        if self.context.sandbox and find_pg_tools(self.context.env, server=need_server) is None:
            # A new machine need not have PostgreSQL: the sandbox shows the
            # rest of the path and says what the dump would need.
            parts = parts[:1]
            self._skipped.append(
                f"the sandbox database {instance_id} was not dumped: {PG_INSTALL_HINT}"
            )
        dump_key = f"rds/{region}/{instance_id}/dump.tar"
        for part, name in parts:
            source = {
                "kind": self.kind,
                "region": region,
                "instance": instance_id,
                "instance_arn": arn,
                "engine": description.get("Engine", ""),
                "part": part,
            }
            item = self.new_item(
                idem_key=f"rds:{arn}:{resource_id}:{self.run_id}:{part}",
                dest_key=f"rds/{region}/{instance_id}/{name}",
                size=None,
                source=source,
            )
            # dump.sha256.json describes dump.tar as written: the journal keeps
            # what it says, and it is written again wherever the tar is.
            if part == "dump":
                item = replace(item, keeps_record=True)
            elif part == "checksums":
                item = replace(item, depends_on=dump_key)
            yield item

    def item_settled(self, item: ExportItem, status: str) -> None:
        """A settled dump releases its waiting checksums item: with its figures once
        verified everywhere (or recalled), without them when it failed."""
        if item.source.get("part") != "dump":
            return
        state = self._state(item)
        if status == "verified":
            state.result = state.attempt
        state.verified.set()

    def recall(self, item: ExportItem, record: Mapping[str, Any]) -> None:
        """A dump.tar verified by an earlier process of this run: dump.sha256.json
        is written from what the journal kept, without dumping again."""
        if item.source.get("part") != "dump":
            return
        try:
            result = dump_from_record(record)
        except (KeyError, TypeError, ValueError, AttributeError):
            return  # not a record of ours: the checksums item then says so
        self._state(item).result = result

    def _state(self, item: ExportItem) -> _InstanceState:
        region, instance_id = str(item.source["region"]), str(item.source["instance"])
        with self._lock:
            state = self._instances.get((region, instance_id))
        if state is None:
            description = self._describe(region, instance_id)
            with self._lock:
                state = self._instances.setdefault(
                    (region, instance_id), _InstanceState(region, description)
                )
        return state

    def _describe(self, region: str, instance_id: str) -> dict[str, Any]:
        client = self.account.client("rds", region)
        found: dict[str, Any] = self._aws(
            f"describe RDS instance {instance_id} in {region}",
            lambda: client.describe_db_instances(DBInstanceIdentifier=instance_id)["DBInstances"][
                0
            ],
        )
        return found

    # -- opening -------------------------------------------------------------

    def open(self, item: ExportItem) -> SourceStream:
        """Open one item. Retry-safe: yes.

        ``instance``: describes afresh, creates (or finds) this run's snapshot.
        ``dump``: dumps, hashes and restore-checks every database, then streams
        the tar; raises ``FatalError`` for a missing password, missing
        PostgreSQL tools or a failed restore check, ``RetryableError`` for a
        dump or connection failure. ``checksums``: waits (at most
        ``sha_wait_s``) for the dump of the same instance to be verified.
        """
        part = item.source["part"]
        if part == "instance":
            return self._open_instance(item)
        if part == "dump":
            return self._open_dump(item)
        return self._open_checksums(item)

    def _open_instance(self, item: ExportItem) -> SourceStream:
        region, instance_id = str(item.source["region"]), str(item.source["instance"])
        description = self._describe(region, instance_id)
        doc = instance_config(description, region)
        doc["parameter_groups"] = [
            self._parameter_group(region, group)
            for group in description.get("DBParameterGroups", [])
        ]
        doc["snapshot"] = self._snapshot(region, description) if self.take_snapshot else None
        data = (json.dumps(doc, sort_keys=True, indent=1, default=str) + "\n").encode()
        return BytesStream(data, item.dest_key)

    def _parameter_group(self, region: str, group: Mapping[str, Any]) -> dict[str, Any]:
        name = group["DBParameterGroupName"]
        out: dict[str, Any] = {"name": name, "apply_status": group.get("ParameterApplyStatus")}
        client = self.account.client("rds", region)
        parameters: list[dict[str, Any]] = []
        try:
            paginator = client.get_paginator("describe_db_parameters")
            pages = self._aws(
                f"describe parameters of RDS parameter group {name} in {region}",
                lambda: list(paginator.paginate(DBParameterGroupName=name)),
            )
        except botocore.exceptions.ClientError as exc:
            # A default group may be unreadable (or unknown to a mock); the name
            # still says which defaults applied.
            out["parameters"] = None
            out["error"] = exc.response.get("Error", {}).get("Code", "ClientError")
            return out
        for page in pages:
            for parameter in page.get("Parameters", []):
                if "ParameterValue" not in parameter:
                    continue  # unset: the engine default applies
                parameters.append(
                    {
                        key: parameter[key]
                        for key in (
                            "ParameterName",
                            "ParameterValue",
                            "Source",
                            "ApplyMethod",
                            "ApplyType",
                        )
                        if key in parameter
                    }
                )
        out["parameters"] = sorted(parameters, key=lambda p: p["ParameterName"])
        return out

    def _snapshot(self, region: str, description: Mapping[str, Any]) -> dict[str, Any]:
        """Create this run's snapshot, or find it when an earlier attempt did."""
        instance_id = description["DBInstanceIdentifier"]
        snapshot_id = snapshot_identifier(instance_id, self.run_id)
        client = self.account.client("rds", region)
        try:
            snap = self._aws(
                f"snapshot RDS instance {instance_id} in {region}",
                lambda: client.create_db_snapshot(
                    DBInstanceIdentifier=instance_id,
                    DBSnapshotIdentifier=snapshot_id,
                    Tags=[{"Key": "exitplan:run-id", "Value": self.run_id}],
                )["DBSnapshot"],
            )
            if self.context.record_undo is not None:
                self.context.record_undo(
                    SNAPSHOT_UNDO,
                    {"region": region, "snapshot_id": snapshot_id},
                    f"RDS snapshot {snapshot_id} of {instance_id} in {region}",
                )
        except botocore.exceptions.ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code != "DBSnapshotAlreadyExists":
                # Recorded, not raised: the configuration is worth having even
                # when the snapshot is refused (instance stopped, no permission).
                reason = f"{code}: {exc.response.get('Error', {}).get('Message', '')}"
                log.warning("RDS snapshot of %s in %s failed: %s", instance_id, region, code)
                warning = f"no RDS snapshot of {instance_id} in {region} was taken ({reason})"
                with self._lock:
                    if warning not in self._skipped:  # once, however many attempts
                        self._skipped.append(warning)
                return {"id": None, "error": reason}
            snap = self._aws(
                f"describe RDS snapshot {snapshot_id} in {region}",
                lambda: client.describe_db_snapshots(DBSnapshotIdentifier=snapshot_id)[
                    "DBSnapshots"
                ][0],
            )
        return {
            "id": snap["DBSnapshotIdentifier"],
            "arn": snap.get("DBSnapshotArn"),
            "status": snap.get("Status"),
            "created_at": snap.get("SnapshotCreateTime"),
        }

    def _open_checksums(self, item: ExportItem) -> SourceStream:
        state = self._state(item)
        region, instance_id = state.region, str(item.source["instance"])
        if not state.verified.wait(self.sha_wait_s):
            raise RetryableError(
                f"dump.sha256.json of RDS instance {instance_id} in {region} waits for its "
                f"dump.tar, which was not verified within {self.sha_wait_s:.0f}s"
            )
        result = state.result
        if result is None:
            raise FatalError(
                f"dump.sha256.json of RDS instance {instance_id} in {region} describes its "
                "dump.tar, which was not exported (see that item's error); `exitplan resume` "
                "dumps the instance and writes both"
            )
        doc = dump_checksums(result, region, instance_id, f"rds/{region}/{instance_id}/dump.tar")
        data = (json.dumps(doc, sort_keys=True, indent=1) + "\n").encode()
        return BytesStream(data, item.dest_key)

    # -- the dump ----------------------------------------------------------

    def connection(self, region: str, description: Mapping[str, Any]) -> PgConn:
        """How to reach the instance: endpoint (or the ``exitplan:endpoint`` tag),
        master user, password (see the module doc). Raises ``FatalError`` when
        no password is found, naming every place looked at."""
        host, port = self._endpoint(description)
        return PgConn(
            host=host,
            port=port,
            user=description["MasterUsername"],
            dbname=description.get("DBName") or "postgres",
            password=self._password(region, description),
        )

    def _endpoint(self, description: Mapping[str, Any]) -> tuple[str, int]:
        instance_id = description["DBInstanceIdentifier"]
        override = _tags(description).get(ENDPOINT_TAG)
        if override:
            host, _, port = override.rpartition(":")
            if not host or not port.isdigit():
                raise FatalError(
                    f"RDS instance {instance_id}: tag {ENDPOINT_TAG}={override!r} is not "
                    "<host>:<port>; fix or remove the tag"
                )
            return host, int(port)
        endpoint = description.get("Endpoint") or {}
        if not endpoint.get("Address"):
            raise RetryableError(
                f"RDS instance {instance_id} has no endpoint yet "
                f"(status {description.get('DBInstanceStatus')})"
            )
        return str(endpoint["Address"]), int(endpoint.get("Port", 5432))

    def _password(self, region: str, description: Mapping[str, Any]) -> str:
        instance_id = description["DBInstanceIdentifier"]
        managed = (description.get("MasterUserSecret") or {}).get("SecretArn")
        if managed:
            return self._secret_password(region, managed, instance_id)
        tagged = _tags(description).get(PASSWORD_SECRET_TAG)
        if tagged:
            return self._secret_password(region, tagged, instance_id)
        env_name = password_env_name(instance_id)
        for name in (env_name, "PGPASSWORD"):
            value = self.context.env.get(name)
            if value:
                return value
        raise FatalError(
            f"RDS instance {instance_id} in {region}: no password for master user "
            f"{description.get('MasterUsername')!r}. The instance has no managed MasterUserSecret "
            f"and no {PASSWORD_SECRET_TAG} tag; set {env_name} (or PGPASSWORD) in the environment, "
            f"or tag the instance {PASSWORD_SECRET_TAG}=<secret name> in Secrets Manager"
        )

    def _secret_password(self, region: str, secret_id: str, instance_id: str) -> str:
        client = self.account.client("secretsmanager", region)
        try:
            value = self._aws(
                f"read the password secret of RDS instance {instance_id}",
                lambda: client.get_secret_value(SecretId=secret_id),
            )
        except botocore.exceptions.ClientError as exc:
            error = exc.response.get("Error", {})
            if missing_action(exc):  # the message says which right and how to grant it
                raise FatalError(
                    f"RDS instance {instance_id}: cannot read its password secret {secret_id}: "
                    f"{error.get('Message')}"
                ) from None
            raise FatalError(
                f"RDS instance {instance_id}: cannot read its password secret {secret_id} "
                f"({error.get('Code', 'ClientError')}); "
                "grant secretsmanager:GetSecretValue on it or fix the tag"
            ) from None
        text = value.get("SecretString")
        if text is None:
            raise FatalError(f"RDS instance {instance_id}: secret {secret_id} holds no string")
        # RDS-managed secrets are JSON {"username", "password"}; others may be the bare value.
        try:
            parsed = json.loads(text)
        except ValueError:
            return str(text)
        if isinstance(parsed, dict) and isinstance(parsed.get("password"), str):
            return str(parsed["password"])
        return str(text)

    def _scratch_workdir(self, region: str, instance_id: str) -> Path:
        base = self.context.scratch_dir
        if base is None:
            return Path(tempfile.mkdtemp(prefix=f"{SCRATCH_DIR_PREFIX}{instance_id}-"))
        workdir = base / "rds" / region / instance_id / uuid.uuid4().hex[:12]
        workdir.mkdir(parents=True)
        return workdir

    def _open_dump(self, item: ExportItem) -> SourceStream:
        state = self._state(item)
        region, instance_id = state.region, str(item.source["instance"])
        description = self._describe(region, instance_id)
        name = f"RDS instance {instance_id} in {region}"
        conn = self.connection(region, description)
        need_server = self.restore_check and self.restore_target is None
        try:
            tools = require_pg_tools(self.context.env, server=need_server)
        except FatalError as exc:
            raise type(exc)(f"{name}: cannot dump: {exc}") from None
        workdir = self._scratch_workdir(region, instance_id)
        try:
            result = self._dump_and_check(name, tools, conn, workdir / "dump")
        except BaseException as exc:
            shutil.rmtree(workdir, ignore_errors=True)
            if isinstance(exc, RetryableError | FatalError):
                # Defence in depth: tool output should never hold the password.
                exc.args = tuple(redact(str(a), [conn.password]) for a in exc.args)
            raise
        return _DumpTarStream(item.dest_key, workdir / "dump", workdir, result, state)

    def _dump_and_check(self, name: str, tools: PgTools, conn: PgConn, root: Path) -> DumpResult:
        root.mkdir(parents=True)
        taken_at = datetime.now(UTC).isoformat(timespec="seconds")
        databases: list[DatabaseDump] = []
        for dbname in list_databases(tools, conn):
            rel = f"{TAR_ROOT}/{urllib.parse.quote(dbname, safe='')}"
            target = root / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            db_conn = conn.with_db(dbname)
            # Counts and dump share one snapshot, so they agree even while
            # the service keeps writing.
            with ExportedSnapshot(tools, db_conn) as snapshot:
                counts = row_counts(tools, db_conn, snapshot=snapshot.snapshot_id)
                pg_dump_directory(
                    tools,
                    db_conn,
                    target,
                    jobs=self.jobs,
                    snapshot=snapshot.snapshot_id,
                    timeout_s=self.dump_timeout_s,
                    cancel=self.context.cancel,
                )
            databases.append(DatabaseDump(dbname, rel, counts, None))
            log.info("%s: dumped database %s (%d tables)", name, dbname, len(counts))
        files = tuple(_hash_files(root))
        restore_check = "skipped"
        if self.restore_check:
            databases = self._restore_check(name, tools, root, databases)
            restore_check = "scratch server" if self.restore_target else "throwaway local cluster"
        return DumpResult(
            taken_at=taken_at,
            pg_dump_version=tools.version(),
            databases=tuple(databases),
            files=files,
            restore_check=restore_check,
        )

    def _restore_check(
        self, name: str, tools: PgTools, root: Path, databases: list[DatabaseDump]
    ) -> list[DatabaseDump]:
        """pg_restore every database into a scratch one and compare exact row counts."""
        cluster: LocalCluster | None = None
        if self.restore_target is None:
            cluster = LocalCluster(
                tools, parent_dir=root.parent, on_started=self.context.on_resource_started
            ).start()
            server = cluster.conn()
        else:
            server = self.restore_target
        checked: list[DatabaseDump] = []
        problems: list[str] = []
        try:
            for index, db in enumerate(databases):
                scratch = f"exitplan_check_{uuid.uuid4().hex[:8]}_{index}"
                create_database(tools, server, scratch)
                outcome = pg_restore_directory(
                    tools,
                    server.with_db(scratch),
                    root / db.path,
                    jobs=self.jobs,
                    cancel=self.context.cancel,
                )
                restored = row_counts(tools, server.with_db(scratch))
                problems += [
                    f"database {db.name}: {problem}"
                    for problem in _count_differences(db.row_counts, restored)
                ]
                if outcome.ignored_errors:
                    log.warning(
                        "%s: pg_restore of database %s skipped %d failing statements",
                        name,
                        db.name,
                        outcome.ignored_errors,
                    )
                checked.append(
                    DatabaseDump(db.name, db.path, db.row_counts, outcome.ignored_errors)
                )
        finally:
            if cluster is not None:
                cluster.stop()
        if problems:
            more = f"; and {len(problems) - 10} more" if len(problems) > 10 else ""
            raise FatalError(
                f"{name}: restore check failed: " + "; ".join(problems[:10]) + more + ". "
                "The dump does not load back as it was, so it was not exported; "
                "look for objects the scratch server already had, or failing statements "
                "in pg_restore (extensions missing there)"
            )
        return checked


def _count_differences(source: Mapping[str, int], restored: Mapping[str, int]) -> list[str]:
    problems = []
    for table in sorted(set(source) | set(restored)):
        if table not in restored:
            problems.append(f"table {table} ({source[table]} rows) is missing after pg_restore")
        elif table not in source:
            problems.append(f"table {table} appeared after pg_restore")
        elif source[table] != restored[table]:
            problems.append(
                f"table {table} has {source[table]} rows in the source and "
                f"{restored[table]} after pg_restore"
            )
    return problems


def _hash_files(root: Path) -> Iterator[DumpedFile]:
    """Every file under ``root`` in sorted path order, with size and sha256."""
    paths = [p for p in root.rglob("*") if p.is_file()]
    for path in sorted(paths, key=lambda p: p.relative_to(root).as_posix()):
        sha = hashlib.sha256()
        size = 0
        with path.open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                sha.update(chunk)
                size += len(chunk)
        yield DumpedFile(path.relative_to(root).as_posix(), size, sha.hexdigest())


# --------------------------------------------------------------------------- documents


def instance_config(description: Mapping[str, Any], region: str) -> dict[str, Any]:
    """The secret-free configuration part of instance.json, from ``describe_db_instances``."""
    endpoint = description.get("Endpoint") or {}
    tags = _tags(description)
    return {
        "format": INSTANCE_FORMAT,
        "region": region,
        "instance_id": description["DBInstanceIdentifier"],
        "instance_arn": description.get("DBInstanceArn"),
        "resource_id": description.get("DbiResourceId"),
        "engine": description.get("Engine"),
        "engine_version": description.get("EngineVersion"),
        "instance_class": description.get("DBInstanceClass"),
        "status": description.get("DBInstanceStatus"),
        "db_name": description.get("DBName"),
        "master_username": description.get("MasterUsername"),
        "master_user_secret_arn": (description.get("MasterUserSecret") or {}).get("SecretArn"),
        "endpoint": {"address": endpoint.get("Address"), "port": endpoint.get("Port")},
        "endpoint_override": tags.get(ENDPOINT_TAG),
        "storage": {
            "allocated_gib": description.get("AllocatedStorage"),
            "max_allocated_gib": description.get("MaxAllocatedStorage"),
            "type": description.get("StorageType"),
            "iops": description.get("Iops"),
            "throughput": description.get("StorageThroughput"),
            "encrypted": description.get("StorageEncrypted"),
            "kms_key_id": description.get("KmsKeyId"),
        },
        "multi_az": description.get("MultiAZ"),
        "availability_zone": description.get("AvailabilityZone"),
        "backup_retention_days": description.get("BackupRetentionPeriod"),
        "preferred_backup_window": description.get("PreferredBackupWindow"),
        "preferred_maintenance_window": description.get("PreferredMaintenanceWindow"),
        "publicly_accessible": description.get("PubliclyAccessible"),
        "deletion_protection": description.get("DeletionProtection"),
        "iam_database_authentication": description.get("IAMDatabaseAuthenticationEnabled"),
        "ca_certificate": description.get("CACertificateIdentifier"),
        "subnet_group": (description.get("DBSubnetGroup") or {}).get("DBSubnetGroupName"),
        "vpc_security_groups": [
            g.get("VpcSecurityGroupId") for g in description.get("VpcSecurityGroups", [])
        ],
        "option_groups": [
            g.get("OptionGroupName") for g in description.get("OptionGroupMemberships", [])
        ],
        "tags": tags,
    }


def dump_checksums(
    result: DumpResult, region: str, instance_id: str, tar_key: str
) -> dict[str, Any]:
    """dump.sha256.json: every file's sha256, the row counts and the restore check."""
    return {
        "format": DUMP_FORMAT,
        "region": region,
        "instance_id": instance_id,
        "taken_at": result.taken_at,
        "pg_dump_version": result.pg_dump_version,
        "tar": {"key": tar_key, "size": result.tar_size, "sha256": result.tar_sha256},
        "files": {f.path: {"sha256": f.sha256, "size": f.size} for f in result.files},
        "databases": [
            {
                "name": db.name,
                "path": db.path,
                "format": "pg_dump --format=directory",
                "row_counts": dict(sorted(db.row_counts.items())),
                "restore_ignored_errors": db.restore_ignored_errors,
            }
            for db in result.databases
        ],
        "restore_check": {
            "performed": result.restore_check != "skipped",
            "target": result.restore_check,
            "row_counts_equal": result.restore_check != "skipped",
        },
    }


#: The undo log's kind for an RDS snapshot the export created.
SNAPSHOT_UNDO = "rds-snapshot"


def undo_snapshot(resource: Mapping[str, Any], context: Any) -> str:
    """Undo handler for ``rds-snapshot``: delete the run's snapshot. Idempotent."""
    region, snapshot_id = str(resource["region"]), str(resource["snapshot_id"])
    client = context.source().client("rds", region)
    try:
        client.delete_db_snapshot(DBSnapshotIdentifier=snapshot_id)
    except botocore.exceptions.ClientError as exc:
        error = exc.response.get("Error", {})
        if error.get("Code") == "DBSnapshotNotFound":
            return f"RDS snapshot {snapshot_id} in {region} was already gone"
        raise FatalError(
            f"RDS snapshot {snapshot_id} in {region}: {error.get('Code', 'error')}; delete it by "
            "hand or grant rds:DeleteDBSnapshot and run rollback again"
        ) from None
    return f"deleted RDS snapshot {snapshot_id} in {region}"


def remove_scratch(scratch_dir: Path) -> list[str]:
    """Remove a run's scratch directory; returns what was done, for the log.

    It holds pg_dump output (database contents in clear) until the dump is
    exported, and, for a non-root run, the restore check's PostgreSQL cluster.
    A killed run leaves both: call this for the scratch of every run that is
    not running (at resume, at the next run) and when a run ends. A cluster
    found inside is stopped first (:func:`stop_recorded_cluster`, which signals
    only its own postmaster). Idempotent.
    """
    if not scratch_dir.exists():
        return []
    done = [
        stop_recorded_cluster(
            {
                "kind": "postgres-cluster",
                "workdir": str(pid_file.parent.parent),
                "datadir": str(pid_file.parent),
            }
        )
        for pid_file in sorted(scratch_dir.glob("**/exitplan-pg-*/data/postmaster.pid"))
    ]
    shutil.rmtree(scratch_dir, ignore_errors=True)
    if scratch_dir.exists():
        raise FatalError(
            f"could not remove {scratch_dir}; remove it by hand (it may hold "
            "database contents in clear)"
        )
    return [*done, f"removed {scratch_dir}"]
