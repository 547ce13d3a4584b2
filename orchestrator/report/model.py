"""The report of one run: a versioned, documented data model (docs/report-json.md).

``RunReport`` is what ``report.json`` holds, and what the JUnit and HTML
writers read. Every part a command may not produce is optional (``None`` or
an empty tuple), so the report of ``exitplan export`` is as valid as a drill's.

The model stores facts; figures that follow from them (durations, the
deadline's cutoff and margin left, RTO and RPO, per-kind totals, whether an
objective was met) are computed by properties and written to JSON as
*derived* fields, which ``from_json`` ignores and recomputes. So a report
can never disagree with itself.

Versioning: ``schema_version`` changes when a field is renamed, removed or
changes meaning. Adding an optional field does not change it; readers ignore
fields they do not know. ``from_json`` refuses a version newer than
``SCHEMA_VERSION`` (exit 2, saying which exitplan reads it).

Reports hold names, counts, times and checksums, never a secret value.
"""

from __future__ import annotations

import json
import types
from dataclasses import MISSING, dataclass, fields, is_dataclass
from datetime import datetime, timedelta
from typing import Any, Union, get_args, get_origin, get_type_hints

from orchestrator.errors import ConfigError
from orchestrator.run.deadline import format_duration

#: Bumped when a field is renamed, removed or changes meaning (not when one is added).
SCHEMA_VERSION = 1

#: What ``command`` may be.
COMMANDS = ("migrate", "export", "drill")
#: Statuses a run ends with; ``running`` while a report is written mid-run.
RUN_STATUSES = (
    "done",
    "failed",
    "cancelled",
    "deadline-missed",
    "objective-missed",
    "running",
)
#: Statuses of a step, a replay step, a DNS step or a cleanup outcome.
STEP_STATUSES = ("done", "failed", "skipped", "cancelled", "running")


# ---------------------------------------------------------------------------
# Parts of a report
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Deadline:
    """When the source goes away, and how long before it exitplan stops starting work."""

    at: datetime
    safety_margin_s: float = 0.0

    @property
    def cutoff(self) -> datetime:
        """The deadline less the safety margin: no new work starts after it."""
        return self.at - timedelta(seconds=self.safety_margin_s)


@dataclass(frozen=True)
class Step:
    """One step of the run, as the journal recorded it."""

    id: str
    name: str
    status: str
    started_at: datetime | None = None
    finished_at: datetime | None = None
    detail: str = ""

    @property
    def duration_s(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()


@dataclass(frozen=True)
class ProjectionSample:
    """What the planner projected at one moment: the finish at P50 and at P90."""

    at: datetime
    p50_finish: datetime | None = None
    p90_finish: datetime | None = None
    remaining_bytes: int | None = None


@dataclass(frozen=True)
class ThroughputSample:
    """Bytes per second saved for one kind over the interval ending at ``at``."""

    at: datetime
    kind: str
    bytes_per_s: float


@dataclass(frozen=True)
class Descoped:
    """Items of a group left out on purpose, and why (one entry per reason)."""

    reason: str
    items: int
    bytes: int = 0


@dataclass(frozen=True)
class DataGroup:
    """What happened to the items of one kind and tier (never one row per object).

    ``tier`` is None when the run did not record tiers (every tier together).
    Saved = verified this run + already verified by an earlier run; both
    mean the bytes are at the destination and their checksum was checked.
    Unverifiable items are at the destination but nothing could prove them
    (no source checksum to compare); they are not counted as saved.
    Items neither saved, failed, unchecked nor descoped were left unsaved
    (the run stopped before them).
    """

    kind: str
    tier: str | None = None
    listing_done: bool = True
    listed_items: int = 0
    listed_bytes: int = 0
    verified_items: int = 0
    verified_bytes: int = 0
    already_verified_items: int = 0
    already_verified_bytes: int = 0
    transferred_bytes: int = 0
    failed_items: int = 0
    failed_bytes: int = 0
    unchecked_items: int = 0
    unchecked_bytes: int = 0
    descoped: tuple[Descoped, ...] = ()

    @property
    def saved_items(self) -> int:
        return self.verified_items + self.already_verified_items

    @property
    def saved_bytes(self) -> int:
        return self.verified_bytes + self.already_verified_bytes

    @property
    def descoped_items(self) -> int:
        return sum(d.items for d in self.descoped)

    @property
    def descoped_bytes(self) -> int:
        return sum(d.bytes for d in self.descoped)

    @property
    def unsaved_items(self) -> int:
        """Listed items with no outcome: neither saved, failed, unchecked nor descoped."""
        accounted = (
            self.saved_items + self.failed_items + self.unchecked_items + self.descoped_items
        )
        return max(0, self.listed_items - accounted)

    @property
    def complete(self) -> bool:
        """Everything listed (and the listing finished) is saved."""
        return self.listing_done and self.saved_items == self.listed_items

    @property
    def label(self) -> str:
        """``s3`` or ``s3 [critical]``: how writers name the group."""
        return self.kind if self.tier is None else f"{self.kind} [{self.tier}]"


@dataclass(frozen=True)
class FailedItem:
    """One item given up on, with the error (a sample: the data groups hold the counts)."""

    destination: str
    key: str
    error: str
    kind: str | None = None


@dataclass(frozen=True)
class UncheckedItem:
    """Saved, but the source offered nothing to check its bytes against: never "verified"."""

    destination: str
    key: str
    why: str


@dataclass(frozen=True)
class DestinationInfo:
    """Where a copy went: the configured name and a description (never a credential)."""

    name: str
    where: str


@dataclass(frozen=True)
class PlanEntry:
    """One kind in the order the plan exports it."""

    order: int
    kind: str
    first_tier_rank: int | None = None


@dataclass(frozen=True)
class ChosenHost:
    candidate: str
    target: str
    address: str | None = None
    port: int | None = None
    transport: str | None = None
    user: str | None = None
    node_id: str | None = None
    #: The pinned host key's fingerprint (``SHA256:...``); None for this machine.
    host_key_fingerprint: str | None = None


@dataclass(frozen=True)
class PlacementAttempt:
    """One try at provisioning a candidate; ``outcome`` is ``ready`` or a refusal code."""

    candidate: str
    target: str
    outcome: str
    message: str = ""


@dataclass(frozen=True)
class CandidateRow:
    """One ranked row of the probe (``rank`` 1 is the pick)."""

    candidate: str
    target: str
    status: str
    rank: int = 0
    refusal: str | None = None
    reasons: tuple[str, ...] = ()
    size: str | None = None
    location: str | None = None
    price_hourly: float | None = None
    estimated_ready_s: float | None = None


@dataclass(frozen=True)
class Placement:
    """Where the service went: the probe's ranking, every attempt, the host chosen."""

    summary: str = ""
    chosen: ChosenHost | None = None
    attempts: tuple[PlacementAttempt, ...] = ()
    candidates: tuple[CandidateRow, ...] = ()


@dataclass(frozen=True)
class ReplayStep:
    """One playbook step on one host."""

    id: str
    name: str
    host: str
    status: str
    changed: bool | None = None
    duration_s: float | None = None
    detail: str = ""


@dataclass(frozen=True)
class ServiceCheck:
    """One thing the running service was asked and compared with the source's export."""

    kind: str  # health | rows | file
    name: str
    served: str
    source: str
    equal: bool


@dataclass(frozen=True)
class Service:
    """The service brought back up: where it answers and whether it serves the source's data."""

    url: str | None
    host: str
    playbook: str
    answering: bool | None = None
    healthy_at: datetime | None = None
    changed: int = 0
    ok: int = 0
    failed: int = 0
    checks: tuple[ServiceCheck, ...] = ()


@dataclass(frozen=True)
class DnsStep:
    """One step of the DNS cutover, when it happened, and what risk is left after it."""

    name: str
    status: str
    at: datetime | None = None
    residual_risk: str | None = None
    detail: str = ""


@dataclass(frozen=True)
class CleanupOutcome:
    """Undoing one thing a drill created; cleanup can fail, and then says why."""

    what: str
    status: str
    error: str | None = None


@dataclass(frozen=True)
class Objectives:
    """A drill's objectives from the config (``drill: {rto, rpo, every}``), in seconds."""

    rto_s: float | None = None
    rpo_s: float | None = None
    every_s: float | None = None


@dataclass(frozen=True)
class RpoFigure:
    """The newest data of one kind proven restored (the dump's snapshot time, ...)."""

    kind: str
    newest_restored_at: datetime | None = None
    evidence: str = ""


@dataclass(frozen=True)
class DrillFigures:
    """What a drill measured: when the service was healthy, data freshness, the notice."""

    service_healthy_at: datetime | None = None
    rpo: tuple[RpoFigure, ...] = ()
    notice_s: float | None = None


@dataclass(frozen=True)
class TrendPoint:
    """One earlier drill, for the trend: is the exit getting slower as data grows?"""

    run_id: str
    at: datetime
    status: str
    rto_s: float | None = None
    bytes: int | None = None


@dataclass(frozen=True)
class PredictionError:
    """How far the planner's forecast, made at ``predicted_at``, was from what happened.

    ``scope`` is ``run`` for the whole run, or a kind.
    """

    scope: str
    predicted_at: datetime
    predicted_finish: datetime
    actual_finish: datetime
    predicted_finish_p90: datetime | None = None

    @property
    def error_s(self) -> float:
        """Actual less predicted finish: positive when the run was later than forecast."""
        return (self.actual_finish - self.predicted_finish).total_seconds()

    @property
    def error_ratio(self) -> float | None:
        """The error as a share of the predicted duration (None for a zero prediction)."""
        predicted = (self.predicted_finish - self.predicted_at).total_seconds()
        return self.error_s / predicted if predicted > 0 else None


@dataclass(frozen=True)
class ObjectiveCheck:
    """Derived: one objective against what was measured (the deadline, RTO, RPO, notice)."""

    name: str
    objective: str
    measured: str
    met: bool | None
    detail: str = ""


# ---------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RunReport:
    """Everything a run reports; see docs/report-json.md for every field."""

    run_id: str
    command: str
    status: str
    started_at: datetime
    finished_at: datetime | None = None
    exit_code: int | None = None
    scenario: str | None = None
    verdict: str | None = None
    deadline: Deadline | None = None
    objectives: Objectives | None = None
    drill: DrillFigures | None = None
    steps: tuple[Step, ...] = ()
    projections: tuple[ProjectionSample, ...] = ()
    throughput: tuple[ThroughputSample, ...] = ()
    plan: tuple[PlanEntry, ...] = ()
    destinations: tuple[DestinationInfo, ...] = ()
    data: tuple[DataGroup, ...] = ()
    failed: tuple[FailedItem, ...] = ()
    unchecked: tuple[UncheckedItem, ...] = ()
    placement: Placement | None = None
    replay: tuple[ReplayStep, ...] = ()
    service: Service | None = None
    dns: tuple[DnsStep, ...] = ()
    cleanup: tuple[CleanupOutcome, ...] = ()
    trend: tuple[TrendPoint, ...] = ()
    prediction_errors: tuple[PredictionError, ...] = ()
    warnings: tuple[str, ...] = ()
    #: Why the run was stopped early (the deadline, Ctrl-C, SIGTERM), if it was.
    stopped_by: str | None = None
    #: Steps this invocation took from the journal instead of running them (a resume).
    reused_steps: tuple[str, ...] = ()
    #: What the run created outside its workspace that `exitplan rollback` would remove.
    to_roll_back: tuple[str, ...] = ()
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if self.command not in COMMANDS:
            raise ValueError(f"command {self.command!r}: expected one of {', '.join(COMMANDS)}")
        for name, value in (("started_at", self.started_at), ("finished_at", self.finished_at)):
            if value is not None and value.tzinfo is None:
                raise ValueError(f"{name} must be timezone-aware, got {value.isoformat()}")

    # -- derived figures ---------------------------------------------------

    @property
    def duration_s(self) -> float | None:
        if self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()

    @property
    def deadline_met(self) -> bool | None:
        """Finished by the cutoff (deadline less margin); None without a deadline or a finish."""
        if self.deadline is None or self.finished_at is None:
            return None
        return self.finished_at <= self.deadline.cutoff

    @property
    def margin_left_s(self) -> float | None:
        """Deadline less finish: how much time was left when the run ended."""
        if self.deadline is None or self.finished_at is None:
            return None
        return (self.deadline.at - self.finished_at).total_seconds()

    @property
    def rto_s(self) -> float | None:
        """Measured RTO: from the start until the service's health check was green."""
        if self.drill is None or self.drill.service_healthy_at is None:
            return None
        return (self.drill.service_healthy_at - self.started_at).total_seconds()

    def rpo_s(self, figure: RpoFigure) -> float | None:
        """Measured RPO of a kind: the start less the newest data proven restored."""
        if figure.newest_restored_at is None:
            return None
        return max(0.0, (self.started_at - figure.newest_restored_at).total_seconds())

    @property
    def notice_window_met(self) -> bool | None:
        """Whether the service was up again within the notice the scenario gives."""
        if self.drill is None or self.drill.notice_s is None:
            return None
        rto = self.rto_s
        return None if rto is None else rto <= self.drill.notice_s

    def kind_totals(self) -> list[dict[str, Any]]:
        """Per kind, every tier together, under the field names report.json has always had."""
        by_kind: dict[str, list[DataGroup]] = {}
        for group in self.data:
            by_kind.setdefault(group.kind, []).append(group)
        rows = []
        for kind, groups in by_kind.items():
            saved_items = sum(g.saved_items for g in groups)
            listed_items = sum(g.listed_items for g in groups)
            rows.append(
                {
                    "kind": kind,
                    "listed_items": listed_items,
                    "listed_bytes": sum(g.listed_bytes for g in groups),
                    "saved_items": saved_items,
                    "saved_bytes": sum(g.saved_bytes for g in groups),
                    "copied_this_run_items": sum(g.verified_items for g in groups),
                    "copied_this_run_bytes": sum(g.transferred_bytes for g in groups),
                    "already_verified_items": sum(g.already_verified_items for g in groups),
                    "failed_items": sum(g.failed_items for g in groups),
                    "unchecked_items": sum(g.unchecked_items for g in groups),
                    "descoped_items": sum(g.descoped_items for g in groups),
                    "descoped_bytes": sum(g.descoped_bytes for g in groups),
                    "complete": all(g.listing_done for g in groups) and saved_items == listed_items,
                }
            )
        return rows

    def totals(self) -> dict[str, int]:
        return {
            "listed_items": sum(g.listed_items for g in self.data),
            "listed_bytes": sum(g.listed_bytes for g in self.data),
            "saved_items": sum(g.saved_items for g in self.data),
            "saved_bytes": sum(g.saved_bytes for g in self.data),
            "copied_bytes": sum(g.transferred_bytes for g in self.data),
            "failed_items": sum(g.failed_items for g in self.data),
            "unchecked_items": sum(g.unchecked_items for g in self.data),
            "descoped_items": sum(g.descoped_items for g in self.data),
            "descoped_bytes": sum(g.descoped_bytes for g in self.data),
        }

    def objective_checks(self) -> tuple[ObjectiveCheck, ...]:
        """The deadline, RTO, RPO per kind and the notice window, each against its objective.

        ``met`` is None when there is nothing to judge against (no finish
        yet); a kind with no data proven restored misses its RPO objective.
        """
        checks: list[ObjectiveCheck] = []
        if self.deadline is not None:
            met = self.deadline_met
            left = self.margin_left_s
            checks.append(
                ObjectiveCheck(
                    name="deadline",
                    objective=f"finish by {self.deadline.cutoff.isoformat()} "
                    f"(deadline less {_human(self.deadline.safety_margin_s)} margin)",
                    measured="not finished"
                    if self.finished_at is None
                    else f"finished {self.finished_at.isoformat()}, "
                    f"{_human(left or 0.0)} before the deadline",
                    met=met,
                )
            )
        objectives = self.objectives or Objectives()
        if self.drill is not None or objectives.rto_s is not None:
            rto = self.rto_s
            checks.append(
                ObjectiveCheck(
                    name="rto",
                    objective="-" if objectives.rto_s is None else f"<= {_human(objectives.rto_s)}",
                    measured="service never healthy" if rto is None else _human(rto),
                    met=None
                    if objectives.rto_s is None
                    else (rto is not None and rto <= objectives.rto_s),
                    detail="from the start until the health check on the new host was green",
                )
            )
        for figure in self.drill.rpo if self.drill else ():
            rpo = self.rpo_s(figure)
            checks.append(
                ObjectiveCheck(
                    name=f"rpo {figure.kind}",
                    objective="-" if objectives.rpo_s is None else f"<= {_human(objectives.rpo_s)}",
                    measured="nothing proven restored" if rpo is None else _human(rpo),
                    met=None
                    if objectives.rpo_s is None
                    else (rpo is not None and rpo <= objectives.rpo_s),
                    detail=figure.evidence,
                )
            )
        if self.drill is not None and self.drill.notice_s is not None:
            rto = self.rto_s
            checks.append(
                ObjectiveCheck(
                    name="notice window",
                    objective=f"service up within {_human(self.drill.notice_s)} of notice",
                    measured="service never healthy" if rto is None else _human(rto),
                    met=self.notice_window_met,
                )
            )
        return tuple(checks)

    # -- JSON --------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The report as plain JSON types, stored fields and derived ones, in reading order."""
        stored = _encode(self)
        assert isinstance(stored, dict)
        duration = self.duration_s
        deadline: dict[str, Any] | None = None
        if self.deadline is not None:
            left = self.margin_left_s
            deadline = {
                **stored["deadline"],
                "safety_margin": _human(self.deadline.safety_margin_s),
                "cutoff": self.deadline.cutoff.isoformat(),
                "met": self.deadline_met,
                "margin_left_s": _rounded(left),
                "margin_left": None if left is None else _human(left),
            }
        drill: dict[str, Any] | None = None
        if self.drill is not None:
            drill = {
                **stored["drill"],
                "rto_s": _rounded(self.rto_s),
                "notice_window_met": self.notice_window_met,
                "rpo": [
                    {**row, "rpo_s": _rounded(self.rpo_s(figure))}
                    for row, figure in zip(stored["drill"]["rpo"], self.drill.rpo, strict=True)
                ],
            }
        data = [
            {
                **row,
                "saved_items": group.saved_items,
                "saved_bytes": group.saved_bytes,
                "descoped_items": group.descoped_items,
                "descoped_bytes": group.descoped_bytes,
                "unsaved_items": group.unsaved_items,
                "complete": group.complete,
            }
            for row, group in zip(stored["data"], self.data, strict=True)
        ]
        predictions = [
            {**row, "error_s": round(p.error_s, 3), "error_ratio": _rounded(p.error_ratio)}
            for row, p in zip(stored["prediction_errors"], self.prediction_errors, strict=True)
        ]
        ordered = {
            "schema_version": self.schema_version,
            "run_id": self.run_id,
            "command": self.command,
            "scenario": self.scenario,
            "status": self.status,
            "exit_code": self.exit_code,
            "verdict": self.verdict,
            "started_at": stored["started_at"],
            "finished_at": stored["finished_at"],
            "duration_s": _rounded(duration),
            "duration": None if duration is None else _human(duration),
            "deadline": deadline,
            "objectives": stored["objectives"],
            "drill": drill,
            "objective_checks": [_encode(c) for c in self.objective_checks()],
            "steps": stored["steps"],
            "projections": stored["projections"],
            "throughput": stored["throughput"],
            "plan": stored["plan"],
            "destinations": stored["destinations"],
            "data": data,
            "kinds": self.kind_totals(),
            "totals": self.totals(),
            "failed": stored["failed"],
            "unchecked": stored["unchecked"],
            "placement": stored["placement"],
            "replay": stored["replay"],
            "service": stored["service"],
            "dns": stored["dns"],
            "cleanup": stored["cleanup"],
            "trend": stored["trend"],
            "prediction_errors": predictions,
            "warnings": stored["warnings"],
            "stopped_by": stored["stopped_by"],
            "reused_steps": stored["reused_steps"],
            "to_roll_back": stored["to_roll_back"],
        }
        missing = set(stored) - set(ordered)
        assert not missing, f"to_dict forgets {sorted(missing)}"
        return ordered

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n"

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "report.json") -> RunReport:
        """Read a report written by ``to_dict`` (this or an older schema version).

        Unknown fields are ignored (a newer exitplan may add optional ones);
        derived fields are recomputed. Raises ``ConfigError`` naming the field
        when a value has the wrong type or the version is newer than this
        exitplan reads.
        """
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: expected a JSON object, got {type(data).__name__}")
        version = data.get("schema_version", 1)
        if not isinstance(version, int) or isinstance(version, bool):
            raise ConfigError(f"{source}: schema_version: expected an integer, got {version!r}")
        if version > SCHEMA_VERSION:
            raise ConfigError(
                f"{source}: schema_version {version} is newer than this exitplan reads "
                f"({SCHEMA_VERSION}); upgrade exitplan to read it"
            )
        report = _decode(cls, data, source)
        assert isinstance(report, RunReport)
        return report

    @classmethod
    def from_json(cls, text: str, *, source: str = "report.json") -> RunReport:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(
                f"{source}:{exc.lineno}:{exc.colno}: not JSON ({exc.msg}); "
                "give the report.json exitplan wrote"
            ) from None
        return cls.from_dict(data, source=source)


def _human(seconds: float) -> str:
    return format_duration(timedelta(seconds=seconds))


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


# ---------------------------------------------------------------------------
# Dataclass <-> JSON, by the type hints
# ---------------------------------------------------------------------------

_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = get_type_hints(cls)
    return _HINTS[cls]


def _encode(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _encode(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, tuple | list):
        return [_encode(v) for v in value]
    return value


def _decode(hint: Any, value: Any, where: str) -> Any:
    origin = get_origin(hint)
    if origin is Union or origin is types.UnionType:
        options = [a for a in get_args(hint) if a is not type(None)]
        if value is None:
            return None
        return _decode(options[0], value, where)
    if origin is tuple:
        if not isinstance(value, list):
            raise _wrong(where, "a list", value)
        (item_hint, _ellipsis) = get_args(hint)
        return tuple(_decode(item_hint, v, f"{where}[{i}]") for i, v in enumerate(value))
    if isinstance(hint, type) and is_dataclass(hint):
        if not isinstance(value, dict):
            raise _wrong(where, "an object", value)
        hints = _hints(hint)
        kwargs = {}
        for f in fields(hint):
            if f.name in value:
                kwargs[f.name] = _decode(hints[f.name], value[f.name], f"{where}.{f.name}")
            elif _required(f):
                raise ConfigError(f"{where}.{f.name}: missing; every report has it")
        try:
            return hint(**kwargs)
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    if hint is datetime:
        if not isinstance(value, str):
            raise _wrong(where, "an ISO 8601 time", value)
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise _wrong(where, "an ISO 8601 time", value) from None
        if moment.tzinfo is None:
            raise _wrong(where, "a time with its UTC offset", value)
        return moment
    if hint is bool:
        if not isinstance(value, bool):
            raise _wrong(where, "true or false", value)
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _wrong(where, "an integer", value)
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _wrong(where, "a number", value)
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise _wrong(where, "a string", value)
        return value
    raise TypeError(f"{where}: no decoder for {hint!r}")  # a model bug, not bad input


def _required(f: Any) -> bool:
    return f.default is MISSING and f.default_factory is MISSING


def _wrong(where: str, expected: str, value: Any) -> ConfigError:
    shown = repr(value)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return ConfigError(f"{where}: expected {expected}, got {shown}")


__all__ = [
    "COMMANDS",
    "RUN_STATUSES",
    "SCHEMA_VERSION",
    "STEP_STATUSES",
    "CandidateRow",
    "ChosenHost",
    "CleanupOutcome",
    "DataGroup",
    "Deadline",
    "Descoped",
    "DestinationInfo",
    "DnsStep",
    "DrillFigures",
    "FailedItem",
    "ObjectiveCheck",
    "Objectives",
    "Placement",
    "PlacementAttempt",
    "PlanEntry",
    "PredictionError",
    "ProjectionSample",
    "ReplayStep",
    "RpoFigure",
    "RunReport",
    "Step",
    "ThroughputSample",
    "TrendPoint",
]
