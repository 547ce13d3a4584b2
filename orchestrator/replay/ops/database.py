"""PostgreSQL ops on the host: ``postgres_db`` and ``pg_restore``.

Both run the host's own ``psql``/``pg_restore`` (``bindir``) against a
server on the host, the password only in ``PGPASSWORD`` of the command's
environment. ``pg_restore`` loads the exported dump (its tar checked against
the manifest on the host first), in parallel, and counts as done only when
every table's row count equals the count the export recorded from the
source's own snapshot (``dump.sha256.json``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, ClassVar

from orchestrator.replay.ops.base import Arg, Check, Op, OpContext, OpFailed

_CONNECTION: dict[str, Arg] = {
    "bindir": Arg("path", required=True, doc="directory of psql and pg_restore on the host"),
    "host": Arg("str", default="127.0.0.1", doc="server address (default 127.0.0.1)"),
    "port": Arg("int", required=True, doc="server port"),
    "login": Arg("str", required=True, doc="role to connect as"),
    "password": Arg("str", secret_ok=True, doc="its password: a secret reference"),
}

#: Every user table of the database, one JSON array [schema.table, count] per line.
_COUNT_TABLES = r"""
SELECT format('SELECT json_build_array(%L, count(*)) FROM %I.%I',
              n.nspname || '.' || c.relname, n.nspname, c.relname)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\_toast%' AND n.nspname NOT LIKE 'pg\_temp%'
ORDER BY n.nspname, c.relname
\gexec
"""


def _env(args: Mapping[str, Any]) -> dict[str, str]:
    env = {"PGCONNECT_TIMEOUT": "10", "PGAPPNAME": "exitplan-replay", "PGSSLMODE": "disable"}
    if args.get("password"):
        env["PGPASSWORD"] = args["password"]
    return env


def psql(
    ctx: OpContext,
    args: Mapping[str, Any],
    database: str,
    script: str,
    what: str,
    variables: Mapping[str, str] | None = None,
) -> list[str]:
    """Run ``script`` through the host's psql; its unaligned output lines.

    ``variables`` reach the script as psql variables (``:'name'`` quotes one as
    a literal), so values never have to be pasted into SQL text.
    """
    argv = [
        f"{args['bindir']}/psql",
        f"--host={args['host']}",
        f"--port={args['port']}",
        f"--username={args['login']}",
        f"--dbname={database}",
        "--no-psqlrc",
        "--no-align",
        "--tuples-only",
        "--quiet",
        "--no-password",
        "--set=ON_ERROR_STOP=1",
        *(f"--set={key}={value}" for key, value in (variables or {}).items()),
        "--file=-",
    ]
    result = ctx.run(argv, env=_env(args), input=script.encode())
    if not result.ok:
        tail = result.stderr[-800:].decode("utf-8", "replace").strip()
        raise OpFailed(f"{what}: psql exited with status {result.exit_status}: {tail}")
    return [line for line in result.stdout.decode("utf-8").splitlines() if line]


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(name: str) -> str:
    return "'" + name.replace("'", "''") + "'"


def database_exists(ctx: OpContext, args: Mapping[str, Any], name: str) -> bool:
    lines = psql(
        ctx,
        args,
        "postgres",
        "SELECT 1 FROM pg_database WHERE datname = :'name';\n",
        f"look for database {name}",
        variables={"name": name},
    )
    return bool(lines)


class PostgresDbOp(Op):
    name: ClassVar[str] = "postgres_db"
    summary: ClassVar[str] = "a database exists on a PostgreSQL server on the host"
    args: ClassVar[dict[str, Arg]] = {
        "name": Arg("str", required=True, doc="database name"),
        "owner": Arg("str", doc="owning role (default: the login role)"),
        **_CONNECTION,
    }

    def check(self, ctx: OpContext, args: Mapping[str, Any]) -> Check:
        if database_exists(ctx, args, args["name"]):
            return Check(True, f"database {args['name']} exists", output={"name": args["name"]})
        return Check(False, f"create database {args['name']}")

    def apply(self, ctx: OpContext, args: Mapping[str, Any], check: Check) -> dict[str, Any]:
        owner = f" OWNER {_quoted(args['owner'])}" if args.get("owner") else ""
        psql(
            ctx,
            args,
            "postgres",
            f"CREATE DATABASE {_quoted(args['name'])}{owner};\n",
            f"create database {args['name']}",
        )
        return {"name": args["name"]}

    def describe(self, args: Mapping[str, Any]) -> str:
        return f"database {args['name']} on {args['host']}:{args['port']}"


class PgRestoreOp(Op):
    name: ClassVar[str] = "pg_restore"
    summary: ClassVar[str] = (
        "load an exported dump in parallel; done when row counts equal the export's"
    )
    args: ClassVar[dict[str, Arg]] = {
        "artifact": Arg("artifact", required=True, doc="the dump tar (rds/<region>/<db>/dump.tar)"),
        "checksums": Arg("artifact", required=True, doc="its dump.sha256.json (row counts)"),
        "database": Arg("str", required=True, doc="the database inside the dump"),
        "into": Arg("str", doc="database to load into (default: the same name)"),
        "workdir": Arg("path", required=True, doc="where the dump is unpacked on the host"),
        "jobs": Arg("int", default=4, doc="parallel restore jobs"),
        **_CONNECTION,
    }

    def _expected(self, ctx: OpContext, args: Mapping[str, Any]) -> tuple[dict[str, int], str]:
        from orchestrator.replay.ops.files import artifact_key

        assert ctx.artifacts is not None
        path = ctx.artifacts.fetch(artifact_key(ctx, args["checksums"]), ctx.scratch)
        document = json.loads(path.read_text(encoding="utf-8"))
        for database in document.get("databases", []):
            if database.get("name") == args["database"]:
                counts = {str(k): int(v) for k, v in database.get("row_counts", {}).items()}
                return counts, str(database["path"])
        raise OpFailed(f"the dump holds no database {args['database']!r}")

    def _counts(self, ctx: OpContext, args: Mapping[str, Any]) -> dict[str, int] | None:
        into = args.get("into") or args["database"]
        if not database_exists(ctx, args, into):
            return None
        counts = {}
        for line in psql(ctx, args, into, _COUNT_TABLES, f"count rows in {into}"):
            name, count = json.loads(line)
            counts[str(name)] = int(count)
        return counts

    def check(self, ctx: OpContext, args: Mapping[str, Any]) -> Check:
        if ctx.artifacts is None:
            raise OpFailed("pg_restore: needs an export to read from")
        expected, path = self._expected(ctx, args)
        found = self._counts(ctx, args)
        into = args.get("into") or args["database"]
        output = {"database": into, "row_counts": expected, "rows": sum(expected.values())}
        if found is not None and found == expected and expected:
            return Check(
                True,
                f"{into}: row counts equal the export's ({len(expected)} tables, {sum(expected.values())} rows)",
                output=output,
            )
        why = "no such database" if found is None else "row counts differ from the export's"
        return Check(
            False,
            f"restore {args['database']} into {into} ({why})",
            state={"path": path, "output": output},
        )

    def apply(self, ctx: OpContext, args: Mapping[str, Any], check: Check) -> dict[str, Any]:
        from orchestrator.replay.ops.files import artifact_key

        assert ctx.artifacts is not None
        key = artifact_key(ctx, args["artifact"])
        entry = ctx.artifacts.entry(key)
        workdir = args["workdir"].rstrip("/")
        tar = f"{workdir}/dump.tar"
        ctx.must(["mkdir", "-p", "--", workdir], f"mkdir {workdir}")
        current = ctx.run(["sha256sum", "--", tar])
        if not (current.ok and current.stdout.split()[0].decode() == entry.sha256):
            ctx.host.put_file(ctx.artifacts.fetch(key, ctx.scratch), tar, mode=0o600)
            current = ctx.must(["sha256sum", "--", tar], f"hash {tar}")
        if current.stdout.split()[0].decode() != entry.sha256:
            raise OpFailed(
                f"{tar} on the host has sha256 {current.stdout.split()[0].decode()}, the manifest says {entry.sha256}"
            )
        unpacked = f"{workdir}/dump"
        ctx.must(["rm", "-rf", "--", unpacked], f"clear {unpacked}")
        ctx.must(["mkdir", "-p", "--", unpacked], f"mkdir {unpacked}")
        ctx.must(["tar", "-xf", tar, "-C", unpacked], f"unpack {tar}")
        into = args.get("into") or args["database"]
        argv = [
            f"{args['bindir']}/pg_restore",
            f"--host={args['host']}",
            f"--port={args['port']}",
            f"--username={args['login']}",
            f"--dbname={into}",
            "--no-owner",
            "--no-privileges",
            "--clean",
            "--if-exists",
            f"--jobs={max(1, args['jobs'])}",
            "--no-password",
            f"{unpacked}/{check.state['path']}",
        ]
        result = ctx.run(argv, env=_env(args))
        # pg_restore goes on past a statement it cannot run (an RDS-only
        # extension) and exits 1; the row counts below decide.
        if not result.ok and b"errors ignored on restore" not in result.stderr:
            tail = result.stderr[-1500:].decode("utf-8", "replace").strip()
            raise OpFailed(
                f"pg_restore into {into} exited with status {result.exit_status}: {tail}"
            )
        ctx.run(["rm", "-rf", "--", unpacked])
        return dict(check.state["output"])

    def verify(self, ctx: OpContext, args: Mapping[str, Any], check: Check) -> None:
        expected, _ = self._expected(ctx, args)
        found = self._counts(ctx, args) or {}
        differ = sorted(t for t in set(expected) | set(found) if expected.get(t) != found.get(t))
        if differ:
            detail = ", ".join(
                f"{t}: {found.get(t)} restored, {expected.get(t)} exported" for t in differ[:5]
            )
            raise OpFailed(f"row counts differ after the restore ({detail})")

    def describe(self, args: Mapping[str, Any]) -> str:
        return f"restore {args['database']} from {args['artifact']}"
