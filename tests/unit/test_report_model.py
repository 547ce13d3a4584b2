"""report.json: the versioned model, its JSON round trip, derived figures, and bad input."""

from __future__ import annotations

import dataclasses
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from orchestrator.cli import _print_summary
from orchestrator.clock import FrozenClock
from orchestrator.errors import ConfigError
from orchestrator.placement.probe import ProbeReport, ProbeResult, Requirements
from orchestrator.placement.provision import Placement, ProvisionAttempt
from orchestrator.placement.steps import PlaceOutput
from orchestrator.report.model import (
    SCHEMA_VERSION,
    DataGroup,
    Deadline,
    Descoped,
    DrillFigures,
    Objectives,
    RpoFigure,
    RunReport,
)
from orchestrator.report.run_report import (
    placement_for_report,
    report_from_journal,
    write_reports,
)
from orchestrator.run.journal import Journal, KindProgress
from tests.support.report_samples import drill_report, empty_report, export_report

START = datetime(2025, 3, 14, 9, 0, tzinfo=UTC)


@pytest.mark.parametrize("make", [drill_report, export_report, empty_report])
def test_a_report_survives_the_json_round_trip_unchanged(make):
    report = make()
    text = report.to_json()
    assert RunReport.from_json(text) == report
    # Derived fields are written for readers but never trusted on the way back in.
    assert json.loads(RunReport.from_json(text).to_json()) == json.loads(text)


def test_an_export_only_report_leaves_every_drill_part_empty_and_is_valid():
    data = json.loads(export_report().to_json())
    assert data["schema_version"] == SCHEMA_VERSION
    assert data["drill"] is None and data["objectives"] is None and data["placement"] is None
    assert data["replay"] == [] and data["dns"] == [] and data["cleanup"] == []
    assert data["trend"] == [] and data["prediction_errors"] == []
    # The smallest report there is: four fields.
    minimal = RunReport.from_dict(
        {"run_id": "r", "command": "export", "status": "done", "started_at": START.isoformat()}
    )
    assert minimal.data == () and minimal.deadline is None


def test_the_deadline_has_its_cutoff_margin_left_and_verdict():
    report = RunReport(
        run_id="r",
        command="migrate",
        status="done",
        started_at=START,
        finished_at=START + timedelta(hours=27),
        deadline=Deadline(at=START + timedelta(hours=30), safety_margin_s=2 * 3600),
    )
    deadline = report.to_dict()["deadline"]
    assert deadline["at"] == "2025-03-15T15:00:00+00:00"
    assert deadline["cutoff"] == "2025-03-15T13:00:00+00:00"
    assert deadline["margin_left_s"] == 3 * 3600 and deadline["margin_left"] == "3h 00m"
    assert deadline["safety_margin"] == "2h 00m" and deadline["met"] is True
    # Finishing inside the safety margin is a miss, though the deadline itself is not passed.
    late = dataclasses.replace(report, finished_at=START + timedelta(hours=29))
    assert late.to_dict()["deadline"]["met"] is False
    check = next(c for c in late.objective_checks() if c.name == "deadline")
    assert check.met is False
    assert dataclasses.replace(report, deadline=None).to_dict()["deadline"] is None


def test_kinds_and_totals_keep_the_fields_report_json_always_had():
    report = RunReport(
        run_id="r",
        command="migrate",
        status="done",
        started_at=START,
        data=(
            DataGroup("s3", "critical", True, 10, 100, 6, 60, 4, 40, 55),
            DataGroup(
                "s3",
                "archive",
                True,
                5,
                500,
                descoped=(Descoped("P90 finish past the cutoff", 5, 500),),
            ),
            DataGroup("rds", None, False, 1, 7, failed_items=1, failed_bytes=7),
        ),
    )
    kinds = {k["kind"]: k for k in report.to_dict()["kinds"]}
    assert kinds["s3"] == {
        "kind": "s3",
        "listed_items": 15,
        "listed_bytes": 600,
        "saved_items": 10,
        "saved_bytes": 100,
        "copied_this_run_items": 6,
        "copied_this_run_bytes": 55,
        "already_verified_items": 4,
        "failed_items": 0,
        "unchecked_items": 0,
        "descoped_items": 5,
        "descoped_bytes": 500,
        "complete": False,
    }
    assert kinds["rds"]["complete"] is False and kinds["rds"]["failed_items"] == 1
    totals = report.to_dict()["totals"]
    assert totals["saved_items"] == 10 and totals["copied_bytes"] == 55
    assert totals["failed_items"] == 1 and totals["descoped_items"] == 5
    groups = report.to_dict()["data"]
    assert groups[1]["descoped"] == [
        {"reason": "P90 finish past the cutoff", "items": 5, "bytes": 500}
    ]
    assert groups[2]["unsaved_items"] == 0 and groups[0]["complete"] is True


def test_rto_and_rpo_are_measured_from_the_start_never_configured():
    report = RunReport(
        run_id="d",
        command="drill",
        status="objective-missed",
        started_at=START,
        finished_at=START + timedelta(hours=5),
        objectives=Objectives(rto_s=4 * 3600, rpo_s=3600),
        drill=DrillFigures(
            service_healthy_at=START + timedelta(hours=4, minutes=30),
            rpo=(
                RpoFigure("rds", START - timedelta(minutes=20), "dump snapshot time"),
                RpoFigure("s3", START - timedelta(hours=2)),
                RpoFigure("dynamodb", None),
            ),
            notice_s=30 * 3600,
        ),
    )
    checks = {c.name: c for c in report.objective_checks()}
    assert checks["rto"].met is False and checks["rto"].measured == "4h 30m"
    assert checks["rpo rds"].met is True and checks["rpo rds"].measured == "20m 00s"
    assert checks["rpo s3"].met is False
    assert checks["rpo dynamodb"].met is False
    assert checks["rpo dynamodb"].measured == "nothing proven restored"
    assert checks["notice window"].met is True
    drill = report.to_dict()["drill"]
    assert drill["rto_s"] == 4.5 * 3600 and drill["notice_window_met"] is True
    assert [r["rpo_s"] for r in drill["rpo"]] == [1200, 7200, None]


def test_a_newer_schema_is_refused_with_what_to_do():
    data = json.loads(export_report().to_json())
    data["schema_version"] = SCHEMA_VERSION + 1
    with pytest.raises(ConfigError, match=r"newer than this exitplan reads.*upgrade exitplan"):
        RunReport.from_dict(data)


def test_unknown_fields_are_ignored_so_additions_stay_compatible():
    data = json.loads(drill_report().to_json())
    data["added_later"] = {"anything": 1}
    data["data"][0]["added_later_too"] = 3
    assert RunReport.from_dict(data) == drill_report()


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (
            ("data", 0, "listed_items"),
            "12",
            r"report\.json\.data\[0\]\.listed_items: expected an integer",
        ),
        (("data", 0, "listing_done"), 1, r"listing_done: expected true or false"),
        (
            ("started_at",),
            "2025-03-14T09:00:00",
            r"started_at: expected a time with its UTC offset",
        ),
        (("deadline", "at"), "tomorrow", r"deadline\.at: expected an ISO 8601 time"),
        (("command",), "destroy", r"command 'destroy': expected one of migrate, export, drill"),
        (("steps",), {"id": "x"}, r"steps: expected a list"),
    ],
)
def test_a_bad_value_is_refused_naming_the_field(path, value, message):
    data = json.loads(drill_report().to_json())
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(ConfigError, match=message):
        RunReport.from_dict(data)


def test_a_missing_required_field_and_broken_json_are_named():
    data = json.loads(export_report().to_json())
    del data["run_id"]
    with pytest.raises(ConfigError, match=r"report\.json\.run_id: missing"):
        RunReport.from_dict(data)
    with pytest.raises(ConfigError, match=r"runs/x/report\.json:1:\d+: not JSON"):
        RunReport.from_json("{not json", source="runs/x/report.json")


def test_a_naive_time_cannot_enter_a_report():
    with pytest.raises(ValueError, match="timezone-aware"):
        RunReport(
            run_id="r", command="export", status="done", started_at=START.replace(tzinfo=None)
        )


# ---------------------------------------------------------------------------
# From the journal, as the runner builds it today
# ---------------------------------------------------------------------------


@pytest.fixture
def journal_run(tmp_path):
    clock = FrozenClock(START)
    journal = Journal(tmp_path / "journal.sqlite", clock=clock)
    run_id = journal.start_run("migrate", START + timedelta(hours=2), {"command": "migrate"})
    journal.start_step(run_id, "inventory")
    clock.advance(timedelta(seconds=5))
    journal.finish_step(run_id, "inventory", "done", "s3: 1")
    journal.start_step(run_id, "export:s3")
    journal.save_progress(run_id, KindProgress("s3", 3, 300, True, 1, 100, 1, 100, 1, 100, 120))
    journal.mark_in_flight(
        run_id, "vault", "idem-1", kind="s3", dest_key="s3/b/bad", size=100, tier="", source={}
    )
    journal.mark_failed("vault", "s3/b/bad", "idem-1", "ChecksumMismatch: sha256 differs")
    clock.advance(timedelta(seconds=50))
    journal.finish_step(run_id, "export:s3", "done")
    journal.flush()
    yield journal, run_id, clock
    journal.close()


def test_the_journal_becomes_a_report_with_every_field_the_cli_reads(journal_run, capsys):
    journal, run_id, clock = journal_run
    report = report_from_journal(
        journal,
        run_id,
        finished_at=clock.now(),
        status="failed",
        safety_margin=timedelta(minutes=10),
        destinations=[{"name": "vault", "where": "local:/tmp/vault"}],
        plan=[{"order": 1, "kind": "s3", "first_tier_rank": 0}],
    ).to_dict()
    assert report["run_id"] == run_id and report["status"] == "failed"
    assert report["duration"] == "55s" and report["duration_s"] == 55
    assert report["deadline"]["met"] is True
    [s3] = report["kinds"]
    assert (s3["saved_items"], s3["already_verified_items"], s3["failed_items"]) == (2, 1, 1)
    assert s3["copied_this_run_items"] == 1 and s3["copied_this_run_bytes"] == 120
    assert report["failed"] == [
        {
            "destination": "vault",
            "key": "s3/b/bad",
            "error": "ChecksumMismatch: sha256 differs",
            "kind": None,
        }
    ]
    assert [(s["id"], s["status"]) for s in report["steps"]] == [
        ("inventory", "done"),
        ("export:s3", "done"),
    ]
    # What `exitplan migrate` prints at the end reads the same dict.
    _print_summary(report, journal.path)
    out = capsys.readouterr().out
    assert f"run {run_id}: failed in 55s" in out
    assert "deadline 2025-03-14T11:00:00+00:00: met, margin left 1h 59m" in out
    assert "failed vault:s3/b/bad: ChecksumMismatch" in out


def test_write_reports_publishes_all_three_files(journal_run, tmp_path):
    journal, run_id, clock = journal_run
    report = report_from_journal(
        journal,
        run_id,
        finished_at=clock.now(),
        status="failed",
        safety_margin=timedelta(0),
        destinations=[],
        plan=[],
        exit_code=1,
    )
    files = write_reports(tmp_path / "runs" / run_id, report)
    assert RunReport.from_json(files.json.read_text()) == report
    assert files.junit.read_text().startswith('<?xml version="1.0" encoding="UTF-8"?>')
    assert files.html.read_text().startswith("<!DOCTYPE html>")
    assert sorted(p.name for p in files.json.parent.iterdir()) == [
        "junit.xml",
        "report.html",
        "report.json",
    ]


def test_the_placement_steps_outputs_become_the_placement_part():
    probe = ProbeReport(
        requirements=Requirements(),
        probed_at=START,
        budget_s=120,
        elapsed_s=3.2,
        results=[
            ProbeResult("b-cloud", "s-4vcpu-8gb", "fit", rank=1, estimated_ready_s=60.0),
            ProbeResult(
                "a-cloud", "s-4vcpu-8gb", "refused", ["no capacity"], "no_capacity", rank=2
            ),
        ],
    )
    place = PlaceOutput(
        Placement(
            candidate="b-cloud",
            target="s-4vcpu-8gb",
            provider="digitalocean",
            node_id="3000001",
            node_name="exitplan-r1",
            address="127.0.0.5",
            port=2222,
            user="root",
            host_key="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl",
            host_key_fingerprint="SHA256:abc",
            key_file=None,
            transport="ssh",
        ),
        (
            ProvisionAttempt("a-cloud", "s-4vcpu-8gb", "no_capacity", "full"),
            ProvisionAttempt("b-cloud", "s-4vcpu-8gb", "ready"),
        ),
    )
    placement = placement_for_report(probe, place)
    assert placement is not None and placement.chosen is not None
    assert placement.chosen.address == "127.0.0.5" and placement.chosen.port == 2222
    assert placement.chosen.host_key_fingerprint == "SHA256:abc"
    assert [(a.candidate, a.outcome) for a in placement.attempts] == [
        ("a-cloud", "no_capacity"),
        ("b-cloud", "ready"),
    ]
    assert [(c.rank, c.candidate, c.status) for c in placement.candidates] == [
        (1, "b-cloud", "fit"),
        (2, "a-cloud", "refused"),
    ]
    assert placement.candidates[1].reasons == ("no capacity",)
    report = dataclasses.replace(export_report(), placement=placement)
    assert RunReport.from_json(report.to_json()) == report
    assert placement_for_report(None, None) is None


def test_every_field_report_json_holds_is_documented():
    doc = (Path(__file__).resolve().parents[2] / "docs" / "report-json.md").read_text()
    documented = {
        word for quoted in re.findall(r"`([^`]+)`", doc) for word in re.findall(r"\w+", quoted)
    }

    def keys(value, into):
        if isinstance(value, dict):
            for key, inner in value.items():
                into.add(key)
                keys(inner, into)
        elif isinstance(value, list):
            for inner in value:
                keys(inner, into)
        return into

    written = keys(json.loads(drill_report().to_json()), set())
    written |= keys(json.loads(export_report().to_json()), set())
    assert written - documented == set()


def test_the_summary_names_the_largest_descoping_reasons_and_counts_the_rest(journal_run, capsys):
    # Each item's reason carries its own figures: the summary must not print one line
    # per item, yet every item and byte is counted in the group's line.
    journal, run_id, clock = journal_run
    report = report_from_journal(
        journal,
        run_id,
        finished_at=clock.now(),
        status="deadline-missed",
        safety_margin=timedelta(minutes=10),
        destinations=[],
        plan=[],
    ).to_dict()
    report["data"][0]["descoped"] = [
        {"reason": f"reason {n}", "items": 1, "bytes": n * 1024} for n in range(1, 6)
    ]
    _print_summary(report, journal.path)
    out = capsys.readouterr().out
    assert "descoped s3: 5 items, 15.0 KiB:" in out
    shown = [line.strip() for line in out.splitlines() if ": reason " in line]
    assert shown == [
        "1 items, 5.0 KiB: reason 5",
        "1 items, 4.0 KiB: reason 4",
        "1 items, 3.0 KiB: reason 3",
    ]
    assert "and 2 more reasons (report.json lists them)" in out
