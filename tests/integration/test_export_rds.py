"""RDS PostgreSQL exports against a real PostgreSQL cluster standing in for the instance.

moto (in-process) holds the RDS instance, its parameter group and its password
secret; the instance's ``exitplan:endpoint`` tag points at a real cluster on
127.0.0.1. Everything goes through the real TransferEngine into a
LocalObjectStore, and the exported tar is restored with pg_restore into a
separate cluster to compare exact row counts.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tarfile
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.clock import SystemClock
from orchestrator.events import EventBus, ItemFinished
from orchestrator.export.exporters.base import ExportContext, load_exporter
from orchestrator.export.exporters.rds import (
    DUMP_FORMAT,
    ENDPOINT_TAG,
    INSTANCE_FORMAT,
    PASSWORD_SECRET_TAG,
    TAR_ROOT,
    RdsExporter,
    password_env_name,
    snapshot_identifier,
)
from orchestrator.export.transfer import Destination, TransferEngine, TransferSettings
from orchestrator.plan.priorities import Prioritizer
from orchestrator.postgres import (
    LocalCluster,
    PgTools,
    create_database,
    pg_restore_directory,
    psql_lines,
    row_counts,
    stop_recorded_cluster,
)
from orchestrator.run.journal import Journal
from orchestrator.run.progress import RunProgress
from providers.aws import AwsAccount
from providers.storage import LocalObjectStore
from tests.support.aws import moto_account
from tests.support.postgres import (  # noqa: F401 - fixtures
    CANARY_PASSWORD,
    module_postgres_cluster,
    pg_tools,
    postgres_cluster,
    require_postgres,
)

REGION = "us-east-1"
INSTANCE = "shop-db"
SECRET_NAME = "shop/db-master"

SHOP_SQL = """
CREATE SCHEMA app;
CREATE TABLE app.users (id integer PRIMARY KEY, name text NOT NULL);
INSERT INTO app.users SELECT g, 'user ' || g || ' é中' FROM generate_series(1, 1500) g;
CREATE TABLE app.posts (id bigint PRIMARY KEY, user_id integer REFERENCES app.users,
                        body text, posted_at timestamptz);
INSERT INTO app.posts SELECT g, 1 + g % 1500, repeat('post ', 1 + g % 9),
                             '2020-01-01'::timestamptz + g * interval '1 minute'
FROM generate_series(1, 3000) g;
CREATE TABLE public."order items" (id integer, note text);
INSERT INTO public."order items" SELECT g, E'tab\\there, newline\\nthere' FROM generate_series(1, 250) g;
CREATE TABLE public.empty (id integer);
"""
SHOP_COUNTS = {"app.users": 1500, "app.posts": 3000, "public.order items": 250, "public.empty": 0}
ANALYTICS_SQL = """
CREATE TABLE events (id bigint PRIMARY KEY, kind text);
INSERT INTO events SELECT g, 'view' FROM generate_series(1, 700) g;
"""
ANALYTICS_COUNTS = {"public.events": 700}


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def source(module_postgres_cluster: LocalCluster) -> LocalCluster:  # noqa: F811
    """The "RDS instance": a cluster with databases ``shop`` and ``analytics``."""
    tools = module_postgres_cluster.tools
    conn = module_postgres_cluster.conn()
    for name, sql in (("shop", SHOP_SQL), ("analytics", ANALYTICS_SQL)):
        create_database(tools, conn, name)
        psql_lines(tools, conn.with_db(name), sql, what=f"seed {name}")
    return module_postgres_cluster


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[AwsAccount]:
    with moto_account(monkeypatch, [REGION]) as account:
        yield account


def make_instance(
    account: AwsAccount, cluster: LocalCluster, *, secret_tag: bool = True
) -> dict[str, Any]:
    """An RDS postgres instance whose endpoint tag points at ``cluster``."""
    rds = account.client("rds", REGION)
    rds.create_db_parameter_group(
        DBParameterGroupName="shop-pg15",
        DBParameterGroupFamily="postgres15",
        Description="shop database parameters",
    )
    rds.modify_db_parameter_group(
        DBParameterGroupName="shop-pg15",
        Parameters=[
            {"ParameterName": "work_mem", "ParameterValue": "8192", "ApplyMethod": "immediate"},
            {
                "ParameterName": "log_min_duration_statement",
                "ParameterValue": "500",
                "ApplyMethod": "immediate",
            },
        ],
    )
    tags = [{"Key": ENDPOINT_TAG, "Value": f"{cluster.host}:{cluster.port}"}]
    if secret_tag:
        secret = json.dumps({"username": cluster.superuser, "password": cluster.password})
        account.client("secretsmanager", REGION).create_secret(
            Name=SECRET_NAME, SecretString=secret
        )
        tags.append({"Key": PASSWORD_SECRET_TAG, "Value": SECRET_NAME})
    instance: dict[str, Any] = rds.create_db_instance(
        DBInstanceIdentifier=INSTANCE,
        DBInstanceClass="db.m6g.large",
        Engine="postgres",
        EngineVersion="15.4",
        AllocatedStorage=100,
        StorageType="gp3",
        DBName="shop",
        MasterUsername=cluster.superuser,
        MasterUserPassword=cluster.password,
        DBParameterGroupName="shop-pg15",
        MultiAZ=True,
        BackupRetentionPeriod=7,
        Tags=tags,
    )["DBInstance"]
    # Not postgres: listed by describe_db_instances, never exported by this exporter.
    rds.create_db_instance(
        DBInstanceIdentifier="legacy-mysql",
        DBInstanceClass="db.t3.micro",
        Engine="mysql",
        AllocatedStorage=20,
        MasterUsername="root",
        MasterUserPassword="not-a-canary-1",
    )
    return instance


class Run:
    """A journal, one local destination and the real engine, as ``exitplan migrate`` wires them."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.journal_path = tmp / "journal.sqlite"
        self.journal = Journal(self.journal_path)
        self.run_id = self.journal.start_run("migrate", None, {})
        self.events = EventBus()
        self.finished: dict[str, ItemFinished] = {}
        self.events.subscribe(
            lambda e: self.finished.__setitem__(e.key, e) if isinstance(e, ItemFinished) else None
        )
        self.vault = tmp / "vault"
        self.scratch = tmp / "scratch"
        self.scratch.mkdir()
        #: What the exporter reported starting (the restore check's cluster).
        self.started: list[dict[str, Any]] = []
        progress = RunProgress(
            run_id=self.run_id,
            journal=self.journal,
            events=self.events,
            clock=SystemClock(),
            deadline=None,
        )
        self.engine = TransferEngine(
            destinations=[Destination("vault", LocalObjectStore("vault", self.vault))],
            journal=self.journal,
            run_id=self.run_id,
            events=self.events,
            progress=progress,
            settings=TransferSettings(concurrency=4, max_attempts=2, max_backoff_s=0.01),
        )

    def context(self, env: dict[str, str]) -> ExportContext:
        return ExportContext(
            run_id=self.run_id,
            scratch_dir=self.scratch,
            env=env,
            on_resource_started=self.started.append,
        )

    def export(self, account: AwsAccount, env: dict[str, str], **options: Any) -> None:
        exporter = RdsExporter(
            account, tier_of=Prioritizer([]), context=self.context(env), jobs=2, **options
        )
        try:
            self.engine.export(exporter)
        finally:
            self.engine.close()
            self.journal.close()

    def status(self, name: str) -> str:
        return self.finished[f"rds/{REGION}/{INSTANCE}/{name}"].status

    def error(self, name: str) -> str:
        return self.finished[f"rds/{REGION}/{INSTANCE}/{name}"].error

    def exported(self, name: str) -> Path:
        return self.vault / "rds" / REGION / INSTANCE / name


def base_env() -> dict[str, str]:
    """An environment with the tools on PATH and no PostgreSQL credentials."""
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith(("PG", "EXITPLAN_PG"))}


def files_containing(root: Path, needle: bytes) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


def untar(tar_path: Path, into: Path) -> list[tarfile.TarInfo]:
    with tarfile.open(tar_path) as archive:
        members = archive.getmembers()
        archive.extractall(into, filter="data")
    return members


# --------------------------------------------------------------------------- tests


def test_the_registry_knows_rds() -> None:
    assert load_exporter("rds") is RdsExporter


def test_names_are_what_rds_and_the_environment_accept() -> None:
    assert password_env_name("shop-db.v2") == "EXITPLAN_PG_PASSWORD_SHOP_DB_V2"
    assert (
        snapshot_identifier("Shop--DB", "20210110T235900Z-ab12")
        == "exitplan-shop-db-20210110t235900z-ab12"
    )
    assert not snapshot_identifier("db-", "x" * 300).endswith("-")
    assert len(snapshot_identifier("db", "x" * 300)) <= 255


def test_export_dumps_every_database_and_the_dump_restores_with_equal_row_counts(
    aws: AwsAccount,
    source: LocalCluster,
    postgres_cluster: LocalCluster,  # noqa: F811 - fixture
    pg_tools: PgTools,  # noqa: F811 - fixture
    tmp_path: Path,
) -> None:
    make_instance(aws, source)
    run = Run(tmp_path)
    run.export(aws, base_env())

    assert {key: e.status for key, e in run.finished.items()} == {
        f"rds/{REGION}/{INSTANCE}/{name}": "verified"
        for name in ("instance.json", "dump.tar", "dump.sha256.json")
    }
    # The dump's scratch copy is gone once streamed.
    assert [p for p in run.scratch.rglob("*") if p.is_file()] == []

    checksums = json.loads(run.exported("dump.sha256.json").read_text())
    assert checksums["format"] == DUMP_FORMAT
    tar_bytes = run.exported("dump.tar").read_bytes()
    assert checksums["tar"]["sha256"] == hashlib.sha256(tar_bytes).hexdigest()
    assert checksums["tar"]["size"] == len(tar_bytes)
    assert checksums["restore_check"] == {
        "performed": True,
        "target": "throwaway local cluster",
        "row_counts_equal": True,
    }
    by_name = {db["name"]: db for db in checksums["databases"]}
    assert set(by_name) == {"analytics", "postgres", "shop"}
    assert by_name["shop"]["row_counts"] == SHOP_COUNTS
    assert by_name["analytics"]["row_counts"] == ANALYTICS_COUNTS

    # The tar: deterministic headers, every file listed with its sha256.
    unpacked = tmp_path / "unpacked"
    members = untar(run.exported("dump.tar"), unpacked)
    names = [m.name for m in members]
    assert names == sorted(names)
    assert {m.mtime for m in members} == {0}
    assert set(names) == set(checksums["files"])
    for name, entry in checksums["files"].items():
        data = (unpacked / name).read_bytes()
        assert (len(data), hashlib.sha256(data).hexdigest()) == (entry["size"], entry["sha256"])

    # The proof a user relies on: the exported tar loads into another server.
    target = postgres_cluster.conn()
    for dbname, expected in (("shop", SHOP_COUNTS), ("analytics", ANALYTICS_COUNTS)):
        restored = f"restored_{dbname}"
        create_database(pg_tools, target, restored)
        dump_dir = unpacked / TAR_ROOT / urllib.parse.quote(dbname, safe="")
        outcome = pg_restore_directory(pg_tools, target.with_db(restored), dump_dir, jobs=2)
        assert outcome.ignored_errors == 0
        assert row_counts(pg_tools, target.with_db(restored)) == expected
    tricky = psql_lines(
        pg_tools,
        target.with_db("restored_shop"),
        'SELECT note FROM public."order items" WHERE id = 1;',
        what="read back",
    )
    assert tricky == ["tab\there, newline", "there"]


def test_instance_json_holds_the_configuration_and_this_runs_snapshot(
    aws: AwsAccount, source: LocalCluster, tmp_path: Path
) -> None:
    make_instance(aws, source)
    run = Run(tmp_path)
    run.export(aws, base_env(), restore_check=False)

    doc = json.loads(run.exported("instance.json").read_text())
    assert doc["format"] == INSTANCE_FORMAT
    assert (doc["engine"], doc["engine_version"], doc["instance_class"]) == (
        "postgres",
        "15.4",
        "db.m6g.large",
    )
    assert doc["storage"]["allocated_gib"] == 100
    assert doc["storage"]["type"] == "gp3"
    assert doc["multi_az"] is True
    assert doc["backup_retention_days"] == 7
    assert doc["master_username"] == source.superuser
    assert doc["endpoint"]["address"].startswith(f"{INSTANCE}.")
    assert doc["endpoint_override"] == f"{source.host}:{source.port}"
    (group,) = doc["parameter_groups"]
    assert group["name"] == "shop-pg15"
    params = {p["ParameterName"]: p["ParameterValue"] for p in group["parameters"]}
    assert params == {"work_mem": "8192", "log_min_duration_statement": "500"}

    snapshot_id = doc["snapshot"]["id"]
    assert snapshot_id == snapshot_identifier(INSTANCE, run.run_id)
    (snap,) = aws.client("rds", REGION).describe_db_snapshots(DBSnapshotIdentifier=snapshot_id)[
        "DBSnapshots"
    ]
    assert snap["DBInstanceIdentifier"] == INSTANCE
    # Only the postgres instance is exported.
    assert {p.name for p in (run.vault / "rds" / REGION).iterdir()} == {INSTANCE}
    checksums = json.loads(run.exported("dump.sha256.json").read_text())
    assert checksums["restore_check"]["performed"] is False


def test_the_password_never_reaches_the_journal_the_export_or_the_logs(
    aws: AwsAccount, source: LocalCluster, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="orchestrator")
    caplog.set_level(logging.INFO)
    make_instance(aws, source, secret_tag=False)
    env = {**base_env(), password_env_name(INSTANCE): CANARY_PASSWORD}
    run = Run(tmp_path)
    run.export(aws, env)

    assert run.status("dump.tar") == "verified"
    canary = CANARY_PASSWORD.encode()
    assert files_containing(tmp_path, canary) == []  # journal (+WAL), vault, scratch
    assert CANARY_PASSWORD not in caplog.text


def test_a_wrong_password_fails_the_dump_clearly_without_showing_it(
    aws: AwsAccount, source: LocalCluster, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="orchestrator")
    wrong = "canary-wrong-Pw4Tx9Lk2"
    make_instance(aws, source, secret_tag=False)
    run = Run(tmp_path)
    run.export(aws, {**base_env(), "PGPASSWORD": wrong})

    assert run.status("instance.json") == "verified"
    assert run.status("dump.tar") == "failed"
    assert "password authentication failed" in run.error("dump.tar")
    assert files_containing(tmp_path, wrong.encode()) == []
    assert wrong not in caplog.text


def test_a_missing_password_fails_the_dump_and_says_where_to_put_one(
    aws: AwsAccount, source: LocalCluster, tmp_path: Path
) -> None:
    make_instance(aws, source, secret_tag=False)
    run = Run(tmp_path)
    run.export(aws, base_env())

    assert run.status("instance.json") == "verified"
    assert run.status("dump.tar") == "failed"
    assert run.status("dump.sha256.json") == "failed"
    message = run.error("dump.tar")
    assert f"RDS instance {INSTANCE} in {REGION}: no password" in message
    assert password_env_name(INSTANCE) in message
    assert PASSWORD_SECRET_TAG in message
    assert not run.exported("dump.tar").exists()


def test_without_postgresql_tools_the_dump_fails_saying_what_to_install(
    aws: AwsAccount, source: LocalCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Hide Debian's versioned directories and PATH: as on a machine without postgresql.
    monkeypatch.setattr("orchestrator.postgres._DEBIAN_GLOB", str(tmp_path / "none" / "*" / "bin"))
    monkeypatch.setattr("orchestrator.postgres.embedded_pg_bindir", lambda: None)
    make_instance(aws, source)
    run = Run(tmp_path)
    run.export(aws, {"PATH": str(tmp_path / "empty-path")})

    assert run.status("instance.json") == "verified"
    assert run.status("dump.tar") == "failed"
    assert "apt-get install postgresql" in run.error("dump.tar")
    assert run.error("dump.tar").startswith(f"PostgresToolsMissing: RDS instance {INSTANCE}")


def test_a_dump_that_does_not_restore_to_the_same_row_counts_is_not_exported(
    aws: AwsAccount,
    source: LocalCluster,
    postgres_cluster: LocalCluster,  # noqa: F811 - fixture
    pg_tools: PgTools,  # noqa: F811 - fixture
    tmp_path: Path,
) -> None:
    # A restore target whose template already holds app.users with a stray row:
    # the dump's CREATE TABLE fails there and its COPY adds to that row.
    psql_lines(
        pg_tools,
        postgres_cluster.conn("template1"),
        "CREATE SCHEMA app; CREATE TABLE app.users (id integer PRIMARY KEY, name text);"
        " INSERT INTO app.users VALUES (0, 'stray');",
        what="pollute template1",
    )
    make_instance(aws, source)
    run = Run(tmp_path)
    run.export(aws, base_env(), restore_target=postgres_cluster.conn())

    assert run.status("dump.tar") == "failed"
    message = run.error("dump.tar")
    assert message.startswith(
        f"FatalError: RDS instance {INSTANCE} in {REGION}: restore check failed"
    )
    assert "database shop: table app.users has 1500 rows in the source and 1501 after" in message
    assert "database analytics: table app.users appeared after pg_restore" in message
    assert not run.exported("dump.tar").exists()
    assert run.status("dump.sha256.json") == "failed"


def test_the_sandbox_database_exports_with_its_seeded_rows(
    aws: AwsAccount, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``sandbox_postgres`` (what ``running_sandbox(postgres=True)`` adds) on an
    account holding just the sandbox's RDS instance and password secret: the
    full seeding costs seconds and shows nothing more about the database."""
    require_postgres()
    from orchestrator.sandbox import account as sb

    caplog.set_level(logging.DEBUG, logger="orchestrator")
    aws.client("secretsmanager").create_secret(
        Name=sb.DB_PASSWORD_SECRET, SecretString=sb.DB_PASSWORD
    )
    aws.client("rds").create_db_instance(
        DBInstanceIdentifier=sb.DB_INSTANCE_ID,
        DBInstanceClass="db.t3.medium",
        Engine="postgres",
        EngineVersion=sb.DB_ENGINE_VERSION,
        AllocatedStorage=20,
        DBName=sb.DB_NAME,
        MasterUsername=sb.DB_MASTER_USERNAME,
        MasterUserPassword=sb.DB_PASSWORD,
    )
    sandbox_started: list[dict[str, Any]] = []
    with sb.sandbox_postgres(aws, on_cluster_started=sandbox_started.append) as cluster:
        assert cluster is not None
        run = Run(tmp_path)
        run.export(aws, base_env())
    assert cluster.workdir is None  # stopped with the sandbox

    # Both servers were recorded as they started (for the undo log), without
    # the password, and both are gone already: undoing them is a no-op.
    for records in (sandbox_started, run.started):
        assert [r["pid"] is None for r in records] == [True, False]
        assert sb.DB_PASSWORD not in json.dumps(records)
        assert stop_recorded_cluster(records[-1]).endswith(": already gone")

    key = f"rds/{REGION}/{sb.DB_INSTANCE_ID}"
    assert {run.finished[f"{key}/{n}"].status for n in ("instance.json", "dump.tar")} == {
        "verified"
    }
    checksums = json.loads((run.vault / key / "dump.sha256.json").read_text())
    counts = {db["name"]: db["row_counts"] for db in checksums["databases"]}
    assert counts[sb.DB_NAME] == sb.SANDBOX_PG_ROW_COUNTS
    assert files_containing(tmp_path, sb.DB_PASSWORD.encode()) == []
    assert sb.DB_PASSWORD not in caplog.text
