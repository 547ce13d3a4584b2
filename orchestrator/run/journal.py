"""The journal: SQLite state for runs, steps and items; the only truth for resume.

One file per workspace, in WAL mode so ``exitplan status`` can read while a run
writes. Items are keyed by where they go (destination, destination key), not by
run, and record the idempotency key of what is stored there: a later run in
the same workspace skips what any earlier run verified. The idempotency key
names the source object *and its version* (S3 version id and ETag), so a
changed source object is copied again (and its row now speaks of the new
version) while an unchanged one never is.

Item states: in-flight -> verified, or failed; ``descoped`` when the planner
decided not to start it (the reason is kept). Only ``verified`` means the
bytes are at the destination, published and checked. ``unchecked`` items
are published but the source offered no checksum to check them against;
``damaged`` ones were verified once and a later ``exitplan verify`` found
them missing or changed (copied again on resume).

A run is a list of steps (see ``orchestrator.run.steps``): each keeps its
inputs key and its typed output as JSON, so a resumed run reuses what a
finished step found (the inventory, the chosen host) instead of doing it
again. Whatever a step creates outside the workspace is written to the undo
log the moment it exists; ``exitplan rollback`` runs that log in reverse.

Items are written by the transfer coordinator alone (workers report to it),
through one connection under a lock, and are committed in small batches: a kill -9 loses at most the last batch of state
changes, and those items are simply copied again on resume.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from orchestrator.clock import Clock, SystemClock
from orchestrator.errors import ConfigError

#: 3: the first released layout. 4: steps keep inputs key and output; the
#: undo log; replay steps and pending handlers per host.
SCHEMA_VERSION = 4

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id            TEXT PRIMARY KEY,
    command       TEXT NOT NULL,
    status        TEXT NOT NULL,
    started_at    TEXT NOT NULL,
    finished_at   TEXT,
    deadline      TEXT,
    invocation    TEXT NOT NULL      -- JSON, secret-free: what `resume` replays
);
CREATE TABLE IF NOT EXISTS steps (
    run_id        TEXT NOT NULL REFERENCES runs(id),
    name          TEXT NOT NULL,     -- the step's stable id
    status        TEXT NOT NULL,
    started_at    TEXT NOT NULL,
    finished_at   TEXT,
    detail        TEXT NOT NULL DEFAULT '',
    inputs_key    TEXT,              -- hash of what the step depends on
    output        TEXT,              -- JSON of the step's typed output, once done
    PRIMARY KEY (run_id, name)
);
CREATE TABLE IF NOT EXISTS undo (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id        TEXT NOT NULL,
    step          TEXT NOT NULL,
    kind          TEXT NOT NULL,     -- which undo handler removes it
    resource      TEXT NOT NULL,     -- JSON, secret-free: what the handler needs
    description   TEXT NOT NULL,
    state         TEXT NOT NULL DEFAULT 'pending',   -- pending | undone | failed
    created_at    TEXT NOT NULL,
    undone_at     TEXT,
    error         TEXT
);
CREATE INDEX IF NOT EXISTS undo_by_run ON undo (run_id, state);
CREATE TABLE IF NOT EXISTS replay_steps (
    run_id        TEXT NOT NULL,
    host          TEXT NOT NULL,
    step          TEXT NOT NULL,
    inputs_hash   TEXT NOT NULL,     -- hash of the step's rendered arguments
    status        TEXT NOT NULL,     -- running | changed | ok | failed | skipped
    output        TEXT,              -- JSON: what the step registered
    error         TEXT,
    started_at    TEXT NOT NULL,
    finished_at   TEXT,
    PRIMARY KEY (run_id, host, step)
);
CREATE TABLE IF NOT EXISTS drills (
    run_id        TEXT PRIMARY KEY,
    scenario      TEXT NOT NULL,
    started_at    TEXT NOT NULL,
    finished_at   TEXT NOT NULL,
    passed        INTEGER NOT NULL,
    figures       TEXT NOT NULL      -- JSON: what the drill measured (orchestrator.drill.figures)
);
CREATE TABLE IF NOT EXISTS replay_handlers (
    run_id        TEXT NOT NULL,
    host          TEXT NOT NULL,
    handler       TEXT NOT NULL,
    notified_by   TEXT NOT NULL,
    state         TEXT NOT NULL DEFAULT 'pending',   -- pending | done
    PRIMARY KEY (run_id, host, handler)
);
CREATE TABLE IF NOT EXISTS progress (
    run_id        TEXT NOT NULL REFERENCES runs(id),
    kind          TEXT NOT NULL,
    listed_items  INTEGER NOT NULL DEFAULT 0,
    listed_bytes  INTEGER NOT NULL DEFAULT 0,
    listing_done  INTEGER NOT NULL DEFAULT 0,
    done_items    INTEGER NOT NULL DEFAULT 0,
    done_bytes    INTEGER NOT NULL DEFAULT 0,
    skipped_items INTEGER NOT NULL DEFAULT 0,
    skipped_bytes INTEGER NOT NULL DEFAULT 0,
    failed_items  INTEGER NOT NULL DEFAULT 0,
    failed_bytes  INTEGER NOT NULL DEFAULT 0,
    copied_bytes  INTEGER NOT NULL DEFAULT 0,
    updated_at    TEXT NOT NULL,
    PRIMARY KEY (run_id, kind)
);
CREATE TABLE IF NOT EXISTS items (
    destination     TEXT NOT NULL,
    dest_key        TEXT NOT NULL,
    idem_key        TEXT NOT NULL,      -- what is (or is being) stored there
    kind            TEXT NOT NULL,
    state           TEXT NOT NULL,
    size            INTEGER,
    source_checksum TEXT,
    sha256          TEXT,
    attempts        INTEGER NOT NULL DEFAULT 0,
    error           TEXT,
    run_id          TEXT NOT NULL,
    tier            TEXT NOT NULL DEFAULT '',
    source          TEXT NOT NULL DEFAULT '{}',   -- JSON: where it came from (never a secret)
    updated_at      TEXT NOT NULL,
    PRIMARY KEY (destination, dest_key)
);
CREATE INDEX IF NOT EXISTS items_by_run ON items (run_id, state);
CREATE TABLE IF NOT EXISTS parts (
    destination     TEXT NOT NULL,
    idem_key        TEXT NOT NULL,
    part_index      INTEGER NOT NULL,
    done_bytes      INTEGER NOT NULL,  -- bytes of the part written in place, from its start
    PRIMARY KEY (destination, idem_key, part_index)
);
-- What items that depend on this one need once it is verified (a DynamoDB
-- table's item count and data sha256, an RDS dump's file checksums), so a
-- resume can write the dependent without reading the data again.
CREATE TABLE IF NOT EXISTS item_records (
    idem_key        TEXT PRIMARY KEY,
    record          TEXT NOT NULL      -- JSON, never a secret
);
"""

# -- the planner's block (issue 11): what the deadline scheduler keeps ---------
# Per run, what it listed per kind and tier (the report's data groups, which
# the per-kind ``progress`` rows cannot split), and the rates it measured
# (the next plan's seeds). Written from the coordinator's thread only.
_SCHEMA += """
CREATE TABLE IF NOT EXISTS plan_groups (
    run_id        TEXT NOT NULL,
    kind          TEXT NOT NULL,
    tier          TEXT NOT NULL,
    listed_items  INTEGER NOT NULL DEFAULT 0,
    listed_bytes  INTEGER NOT NULL DEFAULT 0,
    skipped_items INTEGER NOT NULL DEFAULT 0,
    skipped_bytes INTEGER NOT NULL DEFAULT 0,
    listing_done  INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (run_id, kind, tier)
);
CREATE TABLE IF NOT EXISTS plan_outlook (
    run_id        TEXT PRIMARY KEY,
    outlook       TEXT NOT NULL      -- JSON: orchestrator.plan.scheduler.Outlook, the latest
);
CREATE TABLE IF NOT EXISTS plan_rates (
    run_id        TEXT PRIMARY KEY,
    measured_at   TEXT NOT NULL,
    figures       TEXT NOT NULL      -- JSON: orchestrator.plan.cost.RateFigures
);
"""

#: ``unchecked``: stored and its sha256 recorded, but the source offered
#: nothing to check the bytes against (never called verified).
#: ``damaged``: was verified, and a later ``verify`` found it missing or
#: changed at the destination; copied again by the next resume.
#: ``descoped``: the planner left it out on purpose (the reason is in ``error``);
#: it may be re-admitted later in the run, and a later run tries it again.
ITEM_STATES = ("in-flight", "verified", "unchecked", "failed", "damaged", "descoped")
#: An item's state over all its destinations is the least advanced one.
_STATE_RANK = {
    s: i
    for i, s in enumerate(("failed", "in-flight", "descoped", "damaged", "unchecked", "verified"))
}

#: What each older layout needs to become this one. A journal newer than
#: this code is refused: reading it with an older layout would misread it.
_MIGRATIONS: dict[int, str] = {
    3: """
        ALTER TABLE steps ADD COLUMN inputs_key TEXT;
        ALTER TABLE steps ADD COLUMN output TEXT;
    """,
}


class JournalError(ConfigError):
    """The journal cannot be used: corrupt, or written by a newer exitplan.

    Exit 2, like bad input: nothing was changed, and the message says how to go on.
    """


@dataclass(frozen=True)
class RunRecord:
    id: str
    command: str
    status: str
    started_at: datetime
    finished_at: datetime | None
    deadline: datetime | None
    invocation: Mapping[str, Any]


@dataclass(frozen=True)
class StepRecord:
    """One step of a run as the journal has it."""

    step: str
    status: str  # running | done | failed | skipped | cancelled
    started_at: datetime
    finished_at: datetime | None
    detail: str
    inputs_key: str
    #: The step's output as JSON (None until it is done).
    output: Any


@dataclass(frozen=True)
class UndoEntry:
    """Something a run created outside its workspace, and how to remove it."""

    id: int
    run_id: str
    step: str
    kind: str
    resource: Mapping[str, Any]
    description: str
    state: str  # pending | undone | failed
    created_at: datetime
    undone_at: datetime | None
    error: str | None


@dataclass(frozen=True)
class DrillRecord:
    """One drill as the journal keeps it (``figures`` as written by the drill)."""

    run_id: str
    scenario: str
    started_at: datetime
    finished_at: datetime
    passed: bool
    figures: Mapping[str, Any]


@dataclass(frozen=True)
class ReplayStepRecord:
    """One playbook step on one host."""

    step: str
    host: str
    inputs_hash: str
    status: str  # running | changed | ok | failed | skipped
    output: Any
    error: str | None
    started_at: datetime
    finished_at: datetime | None


def _replay_record(row: tuple[Any, ...]) -> ReplayStepRecord:
    return ReplayStepRecord(
        step=row[0],
        host=row[1],
        inputs_hash=row[2],
        status=row[3],
        output=None if row[4] is None else json.loads(row[4]),
        error=row[5],
        started_at=datetime.fromisoformat(row[6]),
        finished_at=_parse(row[7]),
    )


@dataclass(frozen=True)
class KindProgress:
    kind: str
    listed_items: int
    listed_bytes: int
    listing_done: bool
    done_items: int
    done_bytes: int
    skipped_items: int
    skipped_bytes: int
    failed_items: int
    failed_bytes: int
    copied_bytes: int

    @property
    def remaining_bytes(self) -> int:
        """Bytes still to copy; items given up on are not waited for."""
        return max(0, self.listed_bytes - self.done_bytes - self.skipped_bytes - self.failed_bytes)


@dataclass(frozen=True)
class VerifiedItem:
    """One manifest row: what was saved where, and its checksums."""

    kind: str
    dest_key: str
    size: int
    source_checksum: str | None
    sha256: str
    source: Mapping[str, Any]


@dataclass(frozen=True)
class StoredItem(VerifiedItem):
    """A manifest row with its state: ``verified`` or ``unchecked``."""

    state: str = "verified"


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def _parse(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


class Journal:
    """SQLite-backed state of one workspace. Thread-safe."""

    #: Commit after this many pending writes, or this many seconds after the
    #: first of them, or when ``flush`` is called: a kill -9 loses little.
    BATCH = 64
    BATCH_SECONDS = 0.25

    def __init__(self, path: Path, clock: Clock | None = None) -> None:
        self.path = path
        self.clock = clock or SystemClock()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._pending = 0
        self._first_pending_at = 0.0
        #: (destination, idem_key) of items with staged parts journaled: asked
        #: for every item the coordinator starts, so kept here, not queried.
        self._with_parts: set[tuple[str, str]] = set()
        try:
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            # NORMAL is durable against a killed process (the WAL is in the OS
            # cache); only a power cut can lose the last commits, and those items
            # are copied again on resume.
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA busy_timeout=10000")
            self._open_schema()
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc):
                raise JournalError(self._unreadable(f"is not a readable journal ({exc})")) from None
            # Busy, not damaged: another process holds it past the busy timeout. The
            # copy before the last run is no remedy here; it would lose that run's work.
            raise JournalError(
                f"journal {path} is in use by another process ({exc}): another exitplan "
                "run in this workspace is still going (see `exitplan status`); wait for it "
                "to end or stop it, then run this again"
            ) from None
        except sqlite3.DatabaseError as exc:
            raise JournalError(self._unreadable(f"is not a readable journal ({exc})")) from None
        self._with_parts = {
            (row[0], row[1])
            for row in self._db.execute("SELECT DISTINCT destination, idem_key FROM parts")
        }
        self._db.execute("BEGIN")

    @property
    def backup_path(self) -> Path:
        """The copy taken before each run: the last good state if this file is damaged."""
        return self.path.with_name(self.path.name + ".bak")

    def _unreadable(self, what: str) -> str:
        if self.backup_path.exists():
            fix = (
                f"the last good copy, taken before the latest run, is {self.backup_path}: "
                f"move {self.path.name} aside and copy that file to {self.path.name}, then "
                "`exitplan resume`"
            )
        else:
            fix = f"move {self.path.name} aside to start over (objects already saved are checked again, not lost)"
        return f"journal {self.path} {what}; {fix}"

    def _open_schema(self) -> None:
        has_meta = self._db.execute(
            "SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'"
        ).fetchone()
        version = None
        if has_meta:
            row = self._db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            version = int(row[0]) if row else None
        if version is not None and version > SCHEMA_VERSION:
            raise JournalError(
                self._unreadable(
                    f"was written by a newer exitplan (layout {version}, this one reads up to "
                    f"{SCHEMA_VERSION})"
                ).replace("move", "upgrade exitplan, or move", 1)
            )
        if version is not None and version < min(_MIGRATIONS, default=SCHEMA_VERSION):
            raise JournalError(self._unreadable(f"has layout {version}, too old to carry on"))
        # One transaction: a kill half-way through a migration leaves the old layout.
        migrations = "".join(
            _MIGRATIONS[old] for old in range(version or SCHEMA_VERSION, SCHEMA_VERSION)
        )
        self._db.executescript(
            f"BEGIN; {migrations} {_SCHEMA} INSERT OR REPLACE INTO meta (key, value)"  # noqa: S608 - constants of this module only
            f" VALUES ('schema_version', '{SCHEMA_VERSION}'); COMMIT;"
        )

    def keep_backup(self) -> None:
        """Copy the journal aside (consistently, while open): taken before each run."""
        with self._lock:
            self._commit()
            target = sqlite3.connect(self.backup_path)
            try:
                self._db.execute("COMMIT")
                self._db.backup(target)
            finally:
                target.close()
                self._db.execute("BEGIN")

    # -- plumbing ----------------------------------------------------------

    def _write(self, sql: str, params: tuple[Any, ...], *, durable: bool = False) -> None:
        with self._lock:
            self._db.execute(sql, params)
            now = time.monotonic()
            if self._pending == 0:
                self._first_pending_at = now
            self._pending += 1
            if (
                durable
                or self._pending >= self.BATCH
                or now - self._first_pending_at >= self.BATCH_SECONDS
            ):
                self._commit()

    def _commit(self) -> None:
        self._db.execute("COMMIT")
        self._db.execute("BEGIN")
        self._pending = 0

    def flush(self) -> None:
        """Make every write so far durable against a killed process."""
        with self._lock:
            self._commit()

    def close(self) -> None:
        with self._lock:
            self._db.execute("COMMIT")
            self._db.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _now(self) -> str:
        return self.clock.now().isoformat()

    # -- runs and steps ----------------------------------------------------

    def start_run(
        self, command: str, deadline: datetime | None, invocation: Mapping[str, Any]
    ) -> str:
        """Record a new run and return its id (sortable by start time)."""
        started = self.clock.now()
        run_id = f"{started:%Y%m%dT%H%M%SZ}-{secrets.token_hex(2)}"
        self._write(
            "INSERT INTO runs (id, command, status, started_at, deadline, invocation)"
            " VALUES (?, ?, 'running', ?, ?, ?)",
            (run_id, command, started.isoformat(), _iso(deadline), json.dumps(invocation)),
        )
        self.flush()
        return run_id

    def reopen_run(self, run_id: str, invocation: Mapping[str, Any] | None = None) -> None:
        """Mark a run running again, with the settings it now runs with."""
        if invocation is None:
            self._write("UPDATE runs SET status='running', finished_at=NULL WHERE id=?", (run_id,))
        else:
            self._write(
                "UPDATE runs SET status='running', finished_at=NULL, invocation=?, deadline=?"
                " WHERE id=?",
                (json.dumps(invocation), invocation.get("deadline"), run_id),
            )
        self.flush()

    def finish_run(self, run_id: str, status: str) -> None:
        self._write(
            "UPDATE runs SET status=?, finished_at=? WHERE id=?", (status, self._now(), run_id)
        )
        self.flush()

    def get_run(self, run_id: str | None = None) -> RunRecord | None:
        """The named run, or the newest one when ``run_id`` is None."""
        with self._lock:
            if run_id is None:
                row = self._db.execute(
                    "SELECT * FROM runs ORDER BY started_at DESC, id DESC LIMIT 1"
                ).fetchone()
            else:
                row = self._db.execute("SELECT * FROM runs WHERE id=?", (run_id,)).fetchone()
        if row is None:
            return None
        return RunRecord(
            id=row[0],
            command=row[1],
            status=row[2],
            started_at=datetime.fromisoformat(row[3]),
            finished_at=_parse(row[4]),
            deadline=_parse(row[5]),
            invocation=json.loads(row[6]),
        )

    def start_step(self, run_id: str, step: str, inputs_key: str = "") -> None:
        """The step is running (again); its earlier output, if any, no longer counts."""
        self._write(
            "INSERT INTO steps (run_id, name, status, started_at, inputs_key)"
            " VALUES (?, ?, 'running', ?, ?) ON CONFLICT (run_id, name) DO UPDATE SET"
            " status='running', started_at=excluded.started_at, finished_at=NULL,"
            " inputs_key=excluded.inputs_key, output=NULL, detail=''",
            (run_id, step, self._now(), inputs_key),
        )
        self.flush()

    def finish_step(
        self, run_id: str, step: str, status: str, detail: str = "", output: Any = None
    ) -> None:
        """Record how the step ended and its JSON-able ``output`` (kept for resume)."""
        self._write(
            "UPDATE steps SET status=?, finished_at=?, detail=?, output=?"
            " WHERE run_id=? AND name=?",
            (
                status,
                self._now(),
                detail,
                None if output is None else json.dumps(output, sort_keys=True),
                run_id,
                step,
            ),
        )
        self.flush()

    def steps(self, run_id: str) -> list[StepRecord]:
        """The run's steps in the order they (last) started."""
        with self._lock:
            rows = self._db.execute(
                "SELECT name, status, started_at, finished_at, detail, inputs_key, output"
                " FROM steps WHERE run_id=? ORDER BY started_at, rowid",
                (run_id,),
            ).fetchall()
        return [
            StepRecord(
                step=r[0],
                status=r[1],
                started_at=datetime.fromisoformat(r[2]),
                finished_at=_parse(r[3]),
                detail=r[4],
                inputs_key=r[5] or "",
                output=None if r[6] is None else json.loads(r[6]),
            )
            for r in rows
        ]

    def step(self, run_id: str, step: str) -> StepRecord | None:
        return next((record for record in self.steps(run_id) if record.step == step), None)

    # -- the undo log ------------------------------------------------------

    def record_undo(
        self, run_id: str, step: str, kind: str, resource: Mapping[str, Any], description: str
    ) -> int:
        """Write down how to remove something just created; durable before this returns."""
        with self._lock:
            cursor = self._db.execute(
                "INSERT INTO undo (run_id, step, kind, resource, description, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (
                    run_id,
                    step,
                    kind,
                    json.dumps(resource, sort_keys=True),
                    description,
                    self._now(),
                ),
            )
            self._commit()
            return int(cursor.lastrowid or 0)

    def update_undo(self, entry_id: int, resource: Mapping[str, Any]) -> None:
        """Replace what an entry knows of its resource (a server that now has a pid); durable."""
        self._write(
            "UPDATE undo SET resource=? WHERE id=?",
            (json.dumps(resource, sort_keys=True), entry_id),
            durable=True,
        )

    def undo_entries(self, run_id: str, states: tuple[str, ...] = ("pending",)) -> list[UndoEntry]:
        """The run's undo entries in these states, newest first (the order to undo in)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, run_id, step, kind, resource, description, state, created_at,"
                " undone_at, error FROM undo WHERE run_id=?"
                " AND state IN (SELECT value FROM json_each(?)) ORDER BY id DESC",
                (run_id, json.dumps(list(states))),
            ).fetchall()
        return [
            UndoEntry(
                id=r[0],
                run_id=r[1],
                step=r[2],
                kind=r[3],
                resource=json.loads(r[4]),
                description=r[5],
                state=r[6],
                created_at=datetime.fromisoformat(r[7]),
                undone_at=_parse(r[8]),
                error=r[9],
            )
            for r in rows
        ]

    def settle_undo(self, entry_id: int, state: str, error: str | None = None) -> None:
        """Mark an undo entry ``undone`` (or ``failed``, with the secret-free error)."""
        self._write(
            "UPDATE undo SET state=?, undone_at=?, error=? WHERE id=?",
            (state, self._now(), error, entry_id),
            durable=True,
        )

    def runs_with_pending_undo(self) -> list[str]:
        with self._lock:
            rows = self._db.execute(
                "SELECT DISTINCT run_id FROM undo WHERE state IN ('pending', 'failed')"
                " ORDER BY run_id"
            ).fetchall()
        return [row[0] for row in rows]

    def verified_bytes(self, run_id: str) -> int:
        with self._lock:
            row = self._db.execute(
                "SELECT COALESCE(SUM(size), 0) FROM items WHERE run_id=? AND state='verified'",
                (run_id,),
            ).fetchone()
        return int(row[0])

    def data_as_of(self, run_id: str) -> list[tuple[str, datetime]]:
        """(kind, as of) of the run's verified items whose data says how new it is.

        An exporter puts ``as_of`` (ISO 8601) in the item's source when the
        listing knows it (an S3 object's LastModified), or in the record it
        keeps once read (a table scan's start; a dump's ``taken_at``). Drills
        measure RPO from it.
        """
        with self._lock:
            rows = self._db.execute(
                "SELECT items.kind, COALESCE(json_extract(items.source, '$.as_of'),"
                " json_extract(r.record, '$.as_of'), json_extract(r.record, '$.taken_at'))"
                " AS as_of FROM items LEFT JOIN item_records r ON r.idem_key = items.idem_key"
                " WHERE items.run_id=? AND items.state='verified' AND as_of IS NOT NULL",
                (run_id,),
            ).fetchall()
        return [(row[0], datetime.fromisoformat(row[1])) for row in rows]

    # -- drills --------------------------------------------------------------

    def record_drill(
        self,
        run_id: str,
        *,
        scenario: str,
        started_at: datetime,
        finished_at: datetime,
        passed: bool,
        figures: Mapping[str, Any],
    ) -> None:
        """Keep a drill's figures for `drill history` and the trend; durable."""
        self._write(
            "INSERT INTO drills (run_id, scenario, started_at, finished_at, passed, figures)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (run_id) DO UPDATE SET"
            " finished_at=excluded.finished_at, passed=excluded.passed, figures=excluded.figures",
            (
                run_id,
                scenario,
                started_at.isoformat(),
                finished_at.isoformat(),
                int(passed),
                json.dumps(figures, sort_keys=True),
            ),
            durable=True,
        )

    def drills(self) -> list[DrillRecord]:
        """Every drill kept, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT run_id, scenario, started_at, finished_at, passed, figures FROM drills"
                " ORDER BY started_at, run_id"
            ).fetchall()
        return [
            DrillRecord(
                run_id=r[0],
                scenario=r[1],
                started_at=datetime.fromisoformat(r[2]),
                finished_at=datetime.fromisoformat(r[3]),
                passed=bool(r[4]),
                figures=json.loads(r[5]),
            )
            for r in rows
        ]

    # -- replay steps, per host ----------------------------------------------

    def replay_step(self, run_id: str, host: str, step: str) -> ReplayStepRecord | None:
        with self._lock:
            row = self._db.execute(
                "SELECT step, host, inputs_hash, status, output, error, started_at, finished_at"
                " FROM replay_steps WHERE run_id=? AND host=? AND step=?",
                (run_id, host, step),
            ).fetchone()
        return None if row is None else _replay_record(row)

    def replay_steps(self, run_id: str, host: str | None = None) -> list[ReplayStepRecord]:
        sql = (
            "SELECT step, host, inputs_hash, status, output, error, started_at, finished_at"
            " FROM replay_steps WHERE run_id=?"
        )
        params: tuple[Any, ...] = (run_id,)
        if host is not None:
            sql += " AND host=?"
            params += (host,)
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY started_at, rowid", params).fetchall()
        return [_replay_record(row) for row in rows]

    def start_replay_step(self, run_id: str, host: str, step: str, inputs_hash: str) -> None:
        self._write(
            "INSERT INTO replay_steps (run_id, host, step, inputs_hash, status, started_at)"
            " VALUES (?, ?, ?, ?, 'running', ?) ON CONFLICT (run_id, host, step) DO UPDATE SET"
            " inputs_hash=excluded.inputs_hash, status='running', output=NULL, error=NULL,"
            " started_at=excluded.started_at, finished_at=NULL",
            (run_id, host, step, inputs_hash, self._now()),
            durable=True,
        )

    def finish_replay_step(
        self,
        run_id: str,
        host: str,
        step: str,
        status: str,
        output: Any = None,
        error: str | None = None,
    ) -> None:
        """Record a replay step's end; durable before this returns."""
        self._write(
            "UPDATE replay_steps SET status=?, output=?, error=?, finished_at=?"
            " WHERE run_id=? AND host=? AND step=?",
            (
                status,
                None if output is None else json.dumps(output, sort_keys=True),
                error,
                self._now(),
                run_id,
                host,
                step,
            ),
            durable=True,
        )

    def notify_handler(self, run_id: str, host: str, handler: str, notified_by: str) -> None:
        """A handler is owed a run; durable, and written before the notifying step is done."""
        self._write(
            "INSERT INTO replay_handlers (run_id, host, handler, notified_by) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (run_id, host, handler) DO UPDATE SET state='pending',"
            " notified_by=excluded.notified_by",
            (run_id, host, handler, notified_by),
            durable=True,
        )

    def pending_handlers(self, run_id: str, host: str) -> list[str]:
        with self._lock:
            rows = self._db.execute(
                "SELECT handler FROM replay_handlers WHERE run_id=? AND host=? AND state='pending'"
                " ORDER BY rowid",
                (run_id, host),
            ).fetchall()
        return [row[0] for row in rows]

    def handler_done(self, run_id: str, host: str, handler: str) -> None:
        self._write(
            "UPDATE replay_handlers SET state='done' WHERE run_id=? AND host=? AND handler=?",
            (run_id, host, handler),
            durable=True,
        )

    # -- progress ----------------------------------------------------------

    def save_progress(self, run_id: str, progress: KindProgress) -> None:
        self._write(
            "INSERT INTO progress (run_id, kind, listed_items, listed_bytes, listing_done,"
            " done_items, done_bytes, skipped_items, skipped_bytes, failed_items, failed_bytes,"
            " copied_bytes, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (run_id, kind) DO UPDATE SET listed_items=excluded.listed_items,"
            " listed_bytes=excluded.listed_bytes, listing_done=excluded.listing_done,"
            " done_items=excluded.done_items, done_bytes=excluded.done_bytes,"
            " skipped_items=excluded.skipped_items, skipped_bytes=excluded.skipped_bytes,"
            " failed_items=excluded.failed_items, failed_bytes=excluded.failed_bytes,"
            " copied_bytes=excluded.copied_bytes,"
            " updated_at=excluded.updated_at",
            (
                run_id,
                progress.kind,
                progress.listed_items,
                progress.listed_bytes,
                int(progress.listing_done),
                progress.done_items,
                progress.done_bytes,
                progress.skipped_items,
                progress.skipped_bytes,
                progress.failed_items,
                progress.failed_bytes,
                progress.copied_bytes,
                self._now(),
            ),
        )

    def progress(self, run_id: str) -> list[KindProgress]:
        with self._lock:
            rows = self._db.execute(
                "SELECT kind, listed_items, listed_bytes, listing_done, done_items, done_bytes,"
                " skipped_items, skipped_bytes, failed_items, failed_bytes, copied_bytes"
                " FROM progress WHERE run_id=? ORDER BY rowid",
                (run_id,),
            ).fetchall()
        return [
            KindProgress(
                kind=r[0],
                listed_items=r[1],
                listed_bytes=r[2],
                listing_done=bool(r[3]),
                done_items=r[4],
                done_bytes=r[5],
                skipped_items=r[6],
                skipped_bytes=r[7],
                failed_items=r[8],
                failed_bytes=r[9],
                copied_bytes=r[10],
            )
            for r in rows
        ]

    # -- items -------------------------------------------------------------

    def item_state(self, destination: str, dest_key: str) -> tuple[str, str] | None:
        """(idem_key, state) of what ``dest_key`` at ``destination`` holds or is
        getting, or None when the journal has no row for it."""
        with self._lock:
            row = self._db.execute(
                "SELECT idem_key, state FROM items WHERE destination=? AND dest_key=?",
                (destination, dest_key),
            ).fetchone()
        return None if row is None else (row[0], row[1])

    def mark_descoped(
        self,
        run_id: str,
        destination: str,
        idem_key: str,
        *,
        kind: str,
        dest_key: str,
        size: int | None,
        tier: str,
        source: Mapping[str, Any],
        reason: str,
    ) -> None:
        """The planner will not start this item in this run; ``reason`` says why.

        Never replaces a stored copy of the same bytes (verified or unchecked):
        what is saved stays saved.
        """
        self._write(
            "INSERT INTO items (destination, dest_key, idem_key, kind, state, size, run_id, tier,"
            " source, error, updated_at) VALUES (?, ?, ?, ?, 'descoped', ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (destination, dest_key) DO UPDATE SET state='descoped',"
            " idem_key=excluded.idem_key, kind=excluded.kind, size=excluded.size,"
            " source=excluded.source, tier=excluded.tier, sha256=NULL, source_checksum=NULL,"
            " run_id=excluded.run_id, error=excluded.error, updated_at=excluded.updated_at"
            " WHERE items.idem_key != excluded.idem_key"
            " OR items.state NOT IN ('verified', 'unchecked')",
            (
                destination,
                dest_key,
                idem_key,
                kind,
                size,
                run_id,
                tier,
                json.dumps(source, sort_keys=True),
                reason[:2000],
                self._now(),
            ),
        )

    def mark_in_flight(
        self,
        run_id: str,
        destination: str,
        idem_key: str,
        *,
        kind: str,
        dest_key: str,
        size: int | None,
        tier: str,
        source: Mapping[str, Any],
    ) -> None:
        self._write(
            "INSERT INTO items (destination, dest_key, idem_key, kind, state, size, run_id, tier,"
            " source, attempts, updated_at) VALUES (?, ?, ?, ?, 'in-flight', ?, ?, ?, ?, 1, ?)"
            " ON CONFLICT (destination, dest_key) DO UPDATE SET state='in-flight',"
            " attempts=CASE WHEN idem_key=excluded.idem_key THEN attempts+1 ELSE 1 END,"
            " idem_key=excluded.idem_key, kind=excluded.kind, size=excluded.size,"
            " source=excluded.source, tier=excluded.tier, sha256=NULL, source_checksum=NULL,"
            " run_id=excluded.run_id, error=NULL, updated_at=excluded.updated_at",
            (
                destination,
                dest_key,
                idem_key,
                kind,
                size,
                run_id,
                tier,
                json.dumps(source, sort_keys=True),
                self._now(),
            ),
        )

    def mark_verified(
        self,
        destination: str,
        dest_key: str,
        idem_key: str,
        *,
        size: int,
        sha256: str,
        source_checksum: str | None,
    ) -> None:
        """The bytes are published at the destination and their checksums agree."""
        self._write(
            "UPDATE items SET state='verified', size=?, sha256=?, source_checksum=?,"
            " error=NULL, updated_at=? WHERE destination=? AND dest_key=? AND idem_key=?",
            (size, sha256, source_checksum, self._now(), destination, dest_key, idem_key),
        )

    # -- parts of large items ----------------------------------------------

    def has_parts(self, destination: str, idem_key: str) -> bool:
        """Whether any part of the item is journaled as written at ``destination``."""
        return (destination, idem_key) in self._with_parts

    def part_progress(self, destination: str, idem_key: str) -> dict[int, int]:
        """Part index -> bytes of it already written in place at ``destination``."""
        with self._lock:
            rows = self._db.execute(
                "SELECT part_index, done_bytes FROM parts WHERE destination=? AND idem_key=?",
                (destination, idem_key),
            ).fetchall()
        return {row[0]: row[1] for row in rows}

    def mark_part_progress(
        self, destination: str, idem_key: str, part_index: int, done_bytes: int
    ) -> None:
        """Record how much of a part is written; only after those bytes reached the store.

        Committed at once: it is written every few megabytes, a commit costs
        microseconds, and it is what lets a killed run carry on mid-part.
        """
        self._write(
            "INSERT INTO parts (destination, idem_key, part_index, done_bytes)"
            " VALUES (?, ?, ?, ?) ON CONFLICT (destination, idem_key, part_index)"
            " DO UPDATE SET done_bytes=MAX(done_bytes, excluded.done_bytes)",
            (destination, idem_key, part_index, done_bytes),
            durable=True,
        )
        self._with_parts.add((destination, idem_key))

    def clear_parts(self, destination: str, idem_key: str) -> None:
        self._write("DELETE FROM parts WHERE destination=? AND idem_key=?", (destination, idem_key))
        self._with_parts.discard((destination, idem_key))

    def mark_failed(self, destination: str, dest_key: str, idem_key: str, error: str) -> None:
        self._write(
            "UPDATE items SET state='failed', error=?, updated_at=?"
            " WHERE destination=? AND dest_key=? AND idem_key=?",
            (error[:2000], self._now(), destination, dest_key, idem_key),
        )

    # -- items: integrity (stored, unchecked, damaged, records) --------------

    def is_stored(self, destination: str, dest_key: str, idem_key: str) -> bool:
        """Whether ``dest_key`` holds ``idem_key``'s bytes, published: verified, or
        stored unchecked because the source offers nothing to check them against
        (copying those again would not check them either)."""
        with self._lock:
            row = self._db.execute(
                "SELECT 1 FROM items WHERE destination=? AND dest_key=? AND idem_key=?"
                " AND state IN ('verified', 'unchecked')",
                (destination, dest_key, idem_key),
            ).fetchone()
        return row is not None

    def mark_unchecked(
        self,
        destination: str,
        dest_key: str,
        idem_key: str,
        *,
        size: int,
        sha256: str,
        source_checksum: str,
    ) -> None:
        """Published with the sha256 of what was stored; the source had nothing to
        check it against (``source_checksum`` says why). Never ``verified``."""
        self._write(
            "UPDATE items SET state='unchecked', size=?, sha256=?, source_checksum=?,"
            " error=NULL, updated_at=? WHERE destination=? AND dest_key=? AND idem_key=?",
            (size, sha256, source_checksum, self._now(), destination, dest_key, idem_key),
        )

    def mark_damaged(self, destination: str, dest_key: str, reason: str) -> bool:
        """A stored item found missing or changed at the destination: no longer
        verified, so the next resume copies it again. Durable at once. Returns
        whether the item was stored (verified or unchecked) before."""
        with self._lock:
            cursor = self._db.execute(
                "UPDATE items SET state='damaged', error=?, updated_at=?"
                " WHERE destination=? AND dest_key=? AND state IN ('verified', 'unchecked')",
                (reason[:2000], self._now(), destination, dest_key),
            )
            self._commit()
        return cursor.rowcount > 0

    def damaged_items(self, destination: str | None = None) -> list[tuple[str, str, str]]:
        """(destination, dest_key, reason) of every item a verify found damaged."""
        sql = "SELECT destination, dest_key, COALESCE(error, '') FROM items WHERE state='damaged'"
        params: tuple[Any, ...] = ()
        if destination is not None:
            sql += " AND destination=?"
            params = (destination,)
        with self._lock:
            return list(self._db.execute(sql + " ORDER BY destination, dest_key", params))

    def unchecked_by_kind(self, run_id: str) -> dict[str, tuple[int, int]]:
        """Kind -> (items, bytes) of the run's items stored unchecked."""
        with self._lock:
            rows = self._db.execute(
                "SELECT kind, COUNT(*), COALESCE(SUM(size), 0) FROM items"
                " WHERE run_id=? AND state='unchecked' GROUP BY kind",
                (run_id,),
            ).fetchall()
        return {row[0]: (int(row[1]), int(row[2])) for row in rows}

    def unchecked_items(self, run_id: str, limit: int = 20) -> list[tuple[str, str, str]]:
        """(destination, dest_key, why) of items of a run stored unchecked."""
        with self._lock:
            return list(
                self._db.execute(
                    "SELECT destination, dest_key, COALESCE(source_checksum, '') FROM items"
                    " WHERE run_id=? AND state='unchecked' ORDER BY dest_key LIMIT ?",
                    (run_id, limit),
                )
            )

    def save_record(self, idem_key: str, record: Mapping[str, Any]) -> None:
        """Keep what dependents of the item need; written before it is marked verified."""
        self._write(
            "INSERT INTO item_records (idem_key, record) VALUES (?, ?)"
            " ON CONFLICT (idem_key) DO UPDATE SET record=excluded.record",
            (idem_key, json.dumps(record, sort_keys=True)),
        )

    def record_of(self, idem_key: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute(
                "SELECT record FROM item_records WHERE idem_key=?", (idem_key,)
            ).fetchone()
        return None if row is None else dict(json.loads(row[0]))

    def stored_items(self, destination: str) -> Iterator[StoredItem]:
        """Like ``verified_items``, with the ``unchecked`` ones too, each with its state."""
        self.flush()
        reader = sqlite3.connect(self.path)
        try:
            for row in reader.execute(
                "SELECT kind, dest_key, size, source_checksum, sha256, source, state FROM items"
                " WHERE destination=? AND state IN ('verified', 'unchecked') ORDER BY dest_key",
                (destination,),
            ):
                yield StoredItem(
                    kind=row[0],
                    dest_key=row[1],
                    size=row[2],
                    source_checksum=row[3],
                    sha256=row[4],
                    source=json.loads(row[5]),
                    state=row[6],
                )
        finally:
            reader.close()

    def item_counts(self, run_id: str | None = None) -> dict[str, int]:
        """Items per state, for one run or the whole workspace."""
        with self._lock:
            if run_id is None:
                rows = self._db.execute("SELECT state, COUNT(*) FROM items GROUP BY state")
            else:
                rows = self._db.execute(
                    "SELECT state, COUNT(*) FROM items WHERE run_id=? GROUP BY state", (run_id,)
                )
            counts = dict(rows.fetchall())
        return {state: counts.get(state, 0) for state in ITEM_STATES}

    def failed_items(self, run_id: str, limit: int = 20) -> list[tuple[str, str, str]]:
        """(destination, dest_key, error) of failed items of a run."""
        with self._lock:
            return list(
                self._db.execute(
                    "SELECT destination, dest_key, COALESCE(error, '') FROM items"
                    " WHERE run_id=? AND state='failed' ORDER BY dest_key LIMIT ?",
                    (run_id, limit),
                )
            )

    def verified_items(self, destination: str, kind: str | None = None) -> Iterator[VerifiedItem]:
        """Stream the verified items at a destination, by destination key.

        Reads through a separate connection so a long manifest write neither
        holds the lock nor sees half of a batch.
        """
        self.flush()
        reader = sqlite3.connect(self.path)
        try:
            sql = (
                "SELECT kind, dest_key, size, source_checksum, sha256, source FROM items"
                " WHERE destination=? AND state='verified'"
            )
            params: tuple[Any, ...] = (destination,)
            if kind is not None:
                sql += " AND kind=?"
                params += (kind,)
            for row in reader.execute(sql + " ORDER BY dest_key", params):
                yield VerifiedItem(
                    kind=row[0],
                    dest_key=row[1],
                    size=row[2],
                    source_checksum=row[3],
                    sha256=row[4],
                    source=json.loads(row[5]),
                )
        finally:
            reader.close()

    # -- the planner's block (issue 11) ---------------------------------------

    def descoped_groups(self, run_id: str) -> list[tuple[str, str, str, int, int]]:
        """(kind, tier, reason, items, bytes) of the run's descoped items; an item
        meant for several destinations counts once."""
        with self._lock:
            rows = self._db.execute(
                "SELECT kind, tier, COALESCE(error, ''), COUNT(*), COALESCE(SUM(size), 0) FROM"
                " (SELECT kind, tier, error, dest_key, MAX(COALESCE(size, 0)) AS size FROM items"
                "  WHERE run_id=? AND state='descoped' GROUP BY kind, tier, error, dest_key)"
                " GROUP BY kind, tier, error ORDER BY kind, tier, error",
                (run_id,),
            ).fetchall()
        return [(r[0], r[1], r[2], int(r[3]), int(r[4])) for r in rows]

    def item_groups(
        self, run_id: str, *, since: str | None = None
    ) -> dict[tuple[str, str, str], tuple[int, int]]:
        """(kind, tier, state) -> (items, bytes) of the run's items, each counted once,
        at its least advanced destination (failed anywhere counts as failed); with
        ``since`` (an ISO time), only the items written at or after it."""
        with self._lock:
            rows = self._db.execute(
                "SELECT kind, tier, dest_key, state, COALESCE(size, 0) FROM items WHERE run_id=?"
                " AND updated_at >= ?",
                (run_id, since or ""),
            ).fetchall()
        worst: dict[tuple[str, str, str], tuple[int, int]] = {}
        for kind, tier, dest_key, state, size in rows:
            rank = _STATE_RANK.get(state, len(_STATE_RANK))
            key = (kind, tier, dest_key)
            if key not in worst or rank < worst[key][0]:
                worst[key] = (rank, max(int(size), worst.get(key, (0, 0))[1]))
        groups: dict[tuple[str, str, str], tuple[int, int]] = {}
        states = list(_STATE_RANK)
        for (kind, tier, _key), (rank, size) in worst.items():
            state = states[rank] if rank < len(states) else "verified"
            items, nbytes = groups.get((kind, tier, state), (0, 0))
            groups[(kind, tier, state)] = (items + 1, nbytes + size)
        return groups

    def save_plan_group(
        self,
        run_id: str,
        kind: str,
        tier: str,
        *,
        listed_items: int,
        listed_bytes: int,
        skipped_items: int,
        skipped_bytes: int,
        listing_done: bool,
    ) -> None:
        self._write(
            "INSERT INTO plan_groups (run_id, kind, tier, listed_items, listed_bytes,"
            " skipped_items, skipped_bytes, listing_done) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (run_id, kind, tier) DO UPDATE SET listed_items=excluded.listed_items,"
            " listed_bytes=excluded.listed_bytes, skipped_items=excluded.skipped_items,"
            " skipped_bytes=excluded.skipped_bytes, listing_done=excluded.listing_done",
            (
                run_id,
                kind,
                tier,
                listed_items,
                listed_bytes,
                skipped_items,
                skipped_bytes,
                int(listing_done),
            ),
        )

    def plan_groups(self, run_id: str) -> list[tuple[str, str, int, int, int, int, bool]]:
        """(kind, tier, listed items, listed bytes, skipped items, skipped bytes, listing
        done) per kind and tier, as the scheduler listed them; empty without one."""
        with self._lock:
            rows = self._db.execute(
                "SELECT kind, tier, listed_items, listed_bytes, skipped_items, skipped_bytes,"
                " listing_done FROM plan_groups WHERE run_id=? ORDER BY rowid",
                (run_id,),
            ).fetchall()
        return [(r[0], r[1], r[2], r[3], r[4], r[5], bool(r[6])) for r in rows]

    def save_plan_rates(self, run_id: str, figures: Mapping[str, Any]) -> None:
        """The rates a run measured: the next plan's seeds. Durable."""
        self._write(
            "INSERT INTO plan_rates (run_id, measured_at, figures) VALUES (?, ?, ?)"
            " ON CONFLICT (run_id) DO UPDATE SET measured_at=excluded.measured_at,"
            " figures=excluded.figures",
            (run_id, self._now(), json.dumps(figures, sort_keys=True)),
            durable=True,
        )

    def plan_rates(self, run_id: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute(
                "SELECT figures FROM plan_rates WHERE run_id=?", (run_id,)
            ).fetchone()
        return None if row is None else dict(json.loads(row[0]))

    def latest_plan_rates(self) -> tuple[str, dict[str, Any]] | None:
        """(run id, figures) of the newest run that measured rates."""
        with self._lock:
            row = self._db.execute(
                "SELECT run_id, figures FROM plan_rates ORDER BY measured_at DESC, run_id DESC"
                " LIMIT 1"
            ).fetchone()
        return None if row is None else (row[0], dict(json.loads(row[1])))

    def known_sizes(self) -> dict[str, int]:
        """dest_key -> size of stored RDS and DynamoDB items (whose size the source
        cannot tell before they are made): what the plan sizes them by."""
        with self._lock:
            rows = self._db.execute(
                "SELECT dest_key, MAX(size) FROM items WHERE kind IN ('rds', 'dynamodb')"
                " AND state IN ('verified', 'unchecked') AND size IS NOT NULL GROUP BY dest_key"
            ).fetchall()
        return {row[0]: int(row[1]) for row in rows}

    def save_plan_outlook(self, run_id: str, outlook: Mapping[str, Any]) -> None:
        """The scheduler's latest projection (P50/P90, margin, verdict): what `status` shows."""
        self._write(
            "INSERT INTO plan_outlook (run_id, outlook) VALUES (?, ?)"
            " ON CONFLICT (run_id) DO UPDATE SET outlook=excluded.outlook",
            (run_id, json.dumps(outlook, sort_keys=True)),
        )

    def plan_outlook(self, run_id: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute(
                "SELECT outlook FROM plan_outlook WHERE run_id=?", (run_id,)
            ).fetchone()
        return None if row is None else dict(json.loads(row[0]))
