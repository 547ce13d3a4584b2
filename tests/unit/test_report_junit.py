"""junit.xml: valid against the Ant/Jenkins JUnit schema, aggregated, unique, and honest."""

from __future__ import annotations

import dataclasses
import xml.etree.ElementTree as ET
from datetime import timedelta
from pathlib import Path

import pytest
import xmlschema

from orchestrator.report.junit import PHASES, render_junit, step_phase
from orchestrator.report.model import (
    CleanupOutcome,
    DataGroup,
    Descoped,
    FailedItem,
    ReplayStep,
    RunReport,
    Step,
)
from tests.support.report_samples import START, drill_report, empty_report, export_report

SCHEMA = xmlschema.XMLSchema(Path(__file__).resolve().parents[1] / "support" / "junit.xsd")


def parse(report: RunReport) -> ET.Element:
    text = render_junit(report)
    SCHEMA.validate(text)
    return ET.fromstring(text)


def cases(root: ET.Element, suite: str) -> dict[str, ET.Element]:
    [element] = root.findall(f"testsuite[@name='{suite}']")
    return {case.get("name"): case for case in element.findall("testcase")}


def large_report(objects: int = 10_000) -> RunReport:
    """An export of ``objects`` items over three kinds and tiers, with failures."""
    per_group = objects // 6
    groups = tuple(
        DataGroup(
            kind=kind,
            tier=tier,
            listed_items=per_group,
            listed_bytes=per_group * 4096,
            verified_items=per_group - 50,
            verified_bytes=(per_group - 50) * 4096,
            failed_items=50,
            failed_bytes=50 * 4096,
        )
        for kind in ("s3", "dynamodb", "ebs")
        for tier in ("critical", "bulk")
    )
    failed = tuple(
        FailedItem("vault", f"s3/bucket/key-{i:05d}", "SlowDown: reduce your request rate", "s3")
        for i in range(300)
    )
    return RunReport(
        run_id="big",
        command="export",
        status="failed",
        started_at=START,
        finished_at=START + timedelta(hours=3),
        data=groups,
        failed=failed,
    )


@pytest.mark.parametrize("make", [drill_report, export_report, empty_report, large_report])
def test_every_report_is_valid_junit_with_consistent_counts(make):
    root = parse(make())
    assert [s.get("name") for s in root.findall("testsuite")][:5] == list(PHASES)
    total = 0
    for suite in root.findall("testsuite"):
        testcases = suite.findall("testcase")
        assert int(suite.get("tests")) == len(testcases) > 0
        assert int(suite.get("failures")) == sum(
            1 for c in testcases if c.find("failure") is not None
        )
        assert int(suite.get("skipped")) == sum(
            1 for c in testcases if c.find("skipped") is not None
        )
        total += len(testcases)
    assert int(root.get("tests")) == total


def test_the_run_id_and_command_are_properties_of_every_suite():
    root = parse(drill_report())
    for suite in root.findall("testsuite"):
        props = {p.get("name"): p.get("value") for p in suite.iter("property")}
        assert props["run_id"] == "20250314T090000Z-7f3a"
        assert props["command"] == "drill" and props["scenario"] == "stressed-exit"


def test_descoped_work_is_skipped_with_its_reason_and_saved_work_passes():
    export = cases(parse(drill_report()), "export")
    skipped = export["export s3 [archive] descoped"].find("skipped")
    assert skipped is not None
    assert "1380 items" in skipped.get("message")
    assert "P90 finish 31h 05m would pass the cutoff" in skipped.get("message")
    # The archive tier was wholly descoped: there is no passing case pretending it was saved.
    assert "export s3 [archive]" not in export
    critical = export["export s3 [critical]"]
    assert critical.find("failure") is None and critical.find("skipped") is None


def test_a_failed_item_group_is_a_failure_naming_the_items():
    export = cases(parse(export_report()), "export")
    failure = export["export s3"].find("failure")
    assert failure is not None and failure.get("message") == "1 of 120 items failed"
    assert (
        "vault:s3/bucket/bad.bin: ChecksumMismatch" in export["export s3"].find("system-out").text
    )


def test_a_missed_objective_is_a_failure_and_a_met_one_passes():
    drill = drill_report()
    met = cases(parse(drill), "objectives")
    assert met["objective rto"].find("failure") is None
    assert met["objective deadline"].find("failure") is None
    slow = dataclasses.replace(
        drill,
        status="objective-missed",
        drill=dataclasses.replace(
            drill.drill, service_healthy_at=drill.started_at + timedelta(hours=5)
        ),
    )
    missed = cases(parse(slow), "objectives")
    failure = missed["objective rto"].find("failure")
    assert failure is not None
    assert failure.get("message") == "rto missed: measured 5h 00m, objective <= 4h 00m"


def test_a_failed_cleanup_fails_the_cleanup_suite():
    drill = drill_report()
    broken = dataclasses.replace(
        drill,
        cleanup=(*drill.cleanup, CleanupOutcome("server web-1", "failed", "API timeout")),
    )
    cleanup = cases(parse(broken), "cleanup")
    failure = cleanup["cleanup server web-1"].find("failure")
    assert failure is not None and "API timeout" in failure.get("message")


def test_phases_a_command_does_not_have_say_so_as_skipped():
    root = parse(export_report())
    replay = cases(root, "replay")
    assert list(replay) == ["replay"]
    assert (
        replay["replay"].find("skipped").get("message") == "no replay in this run (exitplan export)"
    )


def test_names_stay_unique_when_steps_and_replay_steps_repeat():
    report = dataclasses.replace(
        drill_report(),
        steps=(
            Step("export:s3", "export:s3", "done", START, START),
            Step("export:s3", "export:s3", "failed", START, START, "again"),
        ),
        replay=(
            ReplayStep("1", "restart app", "web-1", "done"),
            ReplayStep("2", "restart app", "web-1", "done"),
        ),
    )
    root = parse(report)  # the schema's uniqueness constraint checks this too
    names = [c.get("name") for c in root.iter("testcase")]
    assert len(names) == len(set(names))
    assert "replay web-1: restart app #2" in names


def test_ten_thousand_objects_make_a_few_aggregated_cases_not_one_each():
    text = render_junit(large_report(10_000))
    root = ET.fromstring(text)
    assert len(list(root.iter("testcase"))) < 30
    assert len(text) < 40_000
    export = cases(root, "export")
    assert (
        export["export s3 [critical]"].find("failure").get("message") == "50 of 1666 items failed"
    )
    # Only the first failures are named; the journal has the rest.
    assert export["export s3 [critical]"].find("system-out").text.count("SlowDown") == 20


def test_text_xml_cannot_carry_is_replaced_and_markup_is_escaped():
    report = dataclasses.replace(
        export_report(),
        failed=(FailedItem("vault", 's3/b/<k>&"', "bad byte \x00\x1b here ]]>", "s3"),),
    )
    text = render_junit(report)
    SCHEMA.validate(text)
    out = cases(ET.fromstring(text), "export")["export s3"].find("system-out").text
    assert 's3/b/<k>&"' in out and "bad byte \ufffd\ufffd here ]]>" in out


def test_the_schema_rejects_what_readers_would_mishandle():
    valid = render_junit(drill_report())
    assert SCHEMA.is_valid(valid)
    duplicate = valid.replace('name="step plan"', 'name="step inventory"')
    assert not SCHEMA.is_valid(duplicate)
    two_outcomes = valid.replace(
        '<skipped message="descoped', '<failure message="x" /><skipped message="descoped', 1
    )
    assert not SCHEMA.is_valid(two_outcomes)
    assert not SCHEMA.is_valid(valid.replace('tests="15"', 'tests="-1"', 1))
    assert not SCHEMA.is_valid(
        valid.replace('timestamp="2025-03-14T09:00:00"', 'timestamp="soon"', 1)
    )


@pytest.mark.parametrize(
    ("step_id", "phase"),
    [
        ("inventory", "export"),
        ("export:s3", "export"),
        ("manifest", "export"),
        ("probe", "replay"),
        ("replay", "replay"),
        ("verify-target", "verify"),
        ("dns:flip", "dns"),
        ("cutover", "dns"),
        ("cleanup", "cleanup"),
        ("something-new", "run"),
    ],
)
def test_each_step_goes_in_its_phase(step_id, phase):
    assert step_phase(step_id) == phase


def test_descoped_reason_and_counts_reach_the_skip_message():
    report = dataclasses.replace(
        empty_report(),
        data=(
            DataGroup(
                "s3",
                "bulk",
                listed_items=10,
                listed_bytes=1000,
                verified_items=4,
                verified_bytes=400,
                descoped=(
                    Descoped("P90 finish past the cutoff", 5, 500),
                    Descoped("cutoff reached", 1, 100),
                ),
            ),
        ),
    )
    export = cases(parse(report), "export")
    assert export["export s3 [bulk]"].find("failure") is None
    message = export["export s3 [bulk] descoped"].find("skipped").get("message")
    assert message == (
        "descoped 5 items (500 bytes): P90 finish past the cutoff; "
        "1 items (100 bytes): cutoff reached"
    )
