"""The report as JUnit XML, the dialect Ant's junitreport and Jenkins read (GitLab and
GitHub annotators read it too).

One ``testsuite`` per phase (export, replay, verify, dns, objectives, and
cleanup when a drill cleaned up), test cases aggregated per kind and tier and
per step, never one per object: GitLab refuses reports over 30 MB and keeps
only the first of test cases with the same name, so every name here is
unique. Descoped work is ``skipped`` with its reason; a failed item group,
a failed step or a missed objective is a ``failure``. Every suite carries
the run id in its properties.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from orchestrator.report.model import DataGroup, RunReport, Step
from orchestrator.run.deadline import format_duration

#: The suites every report has, in order; ``cleanup`` is added when there is cleanup.
PHASES = ("export", "replay", "verify", "dns", "objectives")
#: Longest message attribute and system-out text kept per test case.
MAX_MESSAGE = 1000
MAX_OUTPUT = 8000
#: Failed items listed by name in a group's output (the journal has them all).
MAX_LISTED_FAILURES = 20

#: Which suite a step of the run belongs to, by the start of its id.
_STEP_PHASES = (
    (("inventory", "plan", "export", "manifest"), "export"),
    (("probe", "placement", "provision", "replay"), "replay"),
    (("verify", "health"), "verify"),
    (("dns", "cutover"), "dns"),
    (("cleanup", "rollback", "undo"), "cleanup"),
    (("objective", "drill"), "objectives"),
)

# XML 1.0 cannot carry most control characters, even escaped.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


@dataclass
class _Case:
    name: str
    classname: str
    time_s: float | None = None
    failure: str | None = None
    failure_type: str = "failure"
    skipped: str | None = None
    output: str = ""


@dataclass
class _Suite:
    name: str
    cases: list[_Case] = field(default_factory=list)
    time_s: float = 0.0
    output: str = ""


def step_phase(step_id: str) -> str:
    """The suite a step goes in: ``export:s3`` -> export, ``verify-target`` -> verify."""
    lowered = step_id.lower()
    for prefixes, phase in _STEP_PHASES:
        if lowered.startswith(prefixes):
            return phase
    return "run"


def render_junit(report: RunReport) -> str:
    """The report as a JUnit XML document (UTF-8 text with its declaration)."""
    suites = {name: _Suite(name) for name in PHASES}
    for step in report.steps:
        suite = suites.setdefault(step_phase(step.id), _Suite(step_phase(step.id)))
        suite.cases.append(_step_case(step, suite.name))
        suite.time_s += step.duration_s or 0.0
    for group in report.data:
        suites["export"].cases.extend(_export_cases(report, group))
        suites["verify"].cases.extend(_verify_cases(group))
    unattributed = [f for f in report.failed if f.kind is None]
    if unattributed:
        suites["export"].output = "failed items (first of them):\n" + "\n".join(
            f"{f.destination}:{f.key}: {f.error}" for f in unattributed[:MAX_LISTED_FAILURES]
        )
    for replay in report.replay:
        suites["replay"].cases.append(
            _status_case(
                f"replay {replay.host}: {replay.name}",
                f"exitplan.replay.{replay.host}",
                replay.status,
                replay.detail,
                time_s=replay.duration_s,
                output=_changed_text(replay.changed),
            )
        )
    for dns in report.dns:
        suites["dns"].cases.append(
            _status_case(
                f"dns {dns.name}",
                "exitplan.dns",
                dns.status,
                dns.detail,
                output="\n".join(
                    part
                    for part in (
                        f"at {dns.at.isoformat()}" if dns.at else "",
                        f"residual risk: {dns.residual_risk}" if dns.residual_risk else "",
                    )
                    if part
                ),
            )
        )
    for check in report.objective_checks():
        case = _Case(
            name=f"objective {check.name}",
            classname="exitplan.objectives",
            output=f"objective: {check.objective}\nmeasured: {check.measured}"
            + (f"\n{check.detail}" if check.detail else ""),
        )
        if check.met is False:
            case.failure = (
                f"{check.name} missed: measured {check.measured}, objective {check.objective}"
            )
        elif check.met is None:
            case.skipped = (
                f"{check.name}: nothing to judge ({check.measured}; objective {check.objective})"
            )
        suites["objectives"].cases.append(case)
    if report.prediction_errors:
        suites["objectives"].output = "planner prediction error:\n" + "\n".join(
            f"{p.scope}: finished {_span(p.error_s)} "
            f"{'after' if p.error_s >= 0 else 'before'} the forecast"
            + (
                f" ({p.error_ratio:+.1%} of the predicted duration)"
                if p.error_ratio is not None
                else ""
            )
            for p in report.prediction_errors
        )
    for outcome in report.cleanup:
        suite = suites.setdefault("cleanup", _Suite("cleanup"))
        suite.cases.append(
            _status_case(
                f"cleanup {outcome.what}", "exitplan.cleanup", outcome.status, outcome.error or ""
            )
        )
    for name in PHASES:
        if not suites[name].cases:
            suites[name].cases.append(
                _Case(
                    name=name,
                    classname=f"exitplan.{name}",
                    skipped=f"no {name} in this run (exitplan {report.command})",
                )
            )
    return _serialise(report, [s for s in suites.values() if s.cases])


def _span(seconds: float) -> str:
    return format_duration(timedelta(seconds=abs(seconds)))


def _changed_text(changed: bool | None) -> str:
    if changed is None:
        return ""
    return "changed" if changed else "no change"


def _step_case(step: Step, phase: str) -> _Case:
    case = _status_case(
        f"step {step.id}", f"exitplan.{phase}.steps", step.status, step.detail, step.duration_s
    )
    if step.name != step.id:
        case.output = step.name + ("\n" + case.output if case.output else "")
    return case


def _status_case(
    name: str,
    classname: str,
    status: str,
    detail: str,
    time_s: float | None = None,
    output: str = "",
) -> _Case:
    case = _Case(name=name, classname=classname, time_s=time_s, output=output)
    if status == "skipped":
        case.skipped = detail or "skipped"
    elif status in ("failed", "cancelled", "running"):
        why = {"failed": "failed", "cancelled": "cancelled", "running": "did not finish"}[status]
        case.failure = f"{why}: {detail}" if detail else why
        case.failure_type = status
    elif detail:
        case.output = (case.output + "\n" + detail).strip()
    return case


def _export_cases(report: RunReport, group: DataGroup) -> list[_Case]:
    cases = []
    classname = f"exitplan.export.{group.kind}"
    if group.listed_items > group.descoped_items or not group.descoped:
        case = _Case(
            name=f"export {group.label}",
            classname=classname,
            output=(
                f"listed {group.listed_items} items ({group.listed_bytes} bytes)"
                + ("" if group.listing_done else ", listing not finished")
                + f"; saved {group.saved_items} ({group.saved_bytes} bytes), of which "
                f"{group.already_verified_items} already verified by an earlier run; "
                f"{group.transferred_bytes} bytes transferred"
            ),
        )
        problems = []
        if group.failed_items:
            problems.append(f"{group.failed_items} of {group.listed_items} items failed")
        if group.unsaved_items:
            problems.append(f"{group.unsaved_items} items not saved (the run stopped first)")
        if not group.listing_done:
            problems.append("the listing did not finish")
        if problems:
            case.failure = "; ".join(problems)
            failures = [f for f in report.failed if f.kind == group.kind][:MAX_LISTED_FAILURES]
            if failures:
                case.output += "\nfailed items (first of them):\n" + "\n".join(
                    f"{f.destination}:{f.key}: {f.error}" for f in failures
                )
        cases.append(case)
    if group.descoped:
        reasons = "; ".join(
            f"{d.items} items ({d.bytes} bytes): {d.reason}" for d in group.descoped
        )
        cases.append(
            _Case(
                name=f"export {group.label} descoped",
                classname=classname,
                skipped=f"descoped {reasons}",
            )
        )
    return cases


def _verify_cases(group: DataGroup) -> list[_Case]:
    cases = []
    classname = f"exitplan.verify.{group.kind}"
    if group.saved_items:
        cases.append(
            _Case(
                name=f"verify {group.label}",
                classname=classname,
                output=f"{group.saved_items} items ({group.saved_bytes} bytes) at the destination, "
                "checksums read back and compared",
            )
        )
    if group.unchecked_items:
        cases.append(
            _Case(
                name=f"verify {group.label} unchecked",
                classname=classname,
                skipped=f"{group.unchecked_items} items ({group.unchecked_bytes} bytes) "
                "at the destination could not be proven: the source gave no checksum",
            )
        )
    return cases


def _clean(text: str, limit: int) -> str:
    text = _NOT_XML.sub("\ufffd", text)
    return text if len(text) <= limit else text[: limit - 15] + " ...[truncated]"


def _ant_time(moment: datetime) -> str:
    """Ant's timestamp form: UTC, to the second, without a zone suffix."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")


def _unique(name: str, seen: set[str]) -> str:
    candidate, n = name, 1
    while candidate in seen:
        n += 1
        candidate = f"{name} #{n}"
    seen.add(candidate)
    return candidate


def _serialise(report: RunReport, suites: list[_Suite]) -> str:
    properties = {
        "run_id": report.run_id,
        "command": report.command,
        "scenario": report.scenario or "",
        "status": report.status,
        "exit_code": "" if report.exit_code is None else str(report.exit_code),
        "started_at": report.started_at.isoformat(),
        "report_schema_version": str(report.schema_version),
    }
    seen: set[str] = set()
    root = ET.Element("testsuites", name=_clean(f"exitplan {report.command} {report.run_id}", 200))
    totals = {"tests": 0, "failures": 0, "skipped": 0}
    total_time = 0.0
    for index, suite in enumerate(suites):
        failures = sum(1 for c in suite.cases if c.failure is not None)
        skipped = sum(1 for c in suite.cases if c.skipped is not None)
        time_s = suite.time_s or sum(c.time_s or 0.0 for c in suite.cases)
        element = ET.SubElement(
            root,
            "testsuite",
            name=suite.name,
            tests=str(len(suite.cases)),
            failures=str(failures),
            errors="0",
            skipped=str(skipped),
            time=f"{max(0.0, time_s):.3f}",
            timestamp=_ant_time(report.started_at),
            id=str(index),
            package=f"exitplan.{suite.name}",
        )
        props = ET.SubElement(element, "properties")
        for name, value in properties.items():
            ET.SubElement(props, "property", name=name, value=_clean(value, 200))
        for case in suite.cases:
            attributes = {
                "name": _clean(_unique(case.name, seen), 500),
                "classname": _clean(case.classname, 200),
            }
            if case.time_s is not None:
                attributes["time"] = f"{max(0.0, case.time_s):.3f}"
            testcase = ET.SubElement(element, "testcase", attributes)
            if case.failure is not None:
                failure = ET.SubElement(
                    testcase,
                    "failure",
                    message=_clean(case.failure, MAX_MESSAGE),
                    type=case.failure_type,
                )
                failure.text = _clean(case.failure, MAX_MESSAGE)
            elif case.skipped is not None:
                ET.SubElement(testcase, "skipped", message=_clean(case.skipped, MAX_MESSAGE))
            if case.output:
                ET.SubElement(testcase, "system-out").text = _clean(case.output, MAX_OUTPUT)
        if suite.output:
            ET.SubElement(element, "system-out").text = _clean(suite.output, MAX_OUTPUT)
        totals["tests"] += len(suite.cases)
        totals["failures"] += failures
        totals["skipped"] += skipped
        total_time += max(0.0, time_s)
    root.set("tests", str(totals["tests"]))
    root.set("failures", str(totals["failures"]))
    root.set("errors", "0")
    root.set("skipped", str(totals["skipped"]))
    root.set("time", f"{total_time:.3f}")
    root.set("timestamp", _ant_time(report.started_at))
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
