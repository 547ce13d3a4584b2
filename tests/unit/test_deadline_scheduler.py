"""The deadline scheduler in simulation: a throttled source on an injected clock.

Each scenario runs the real ``DeadlineScheduler`` (the ``WorkSource`` the
export's coordinator pulls from) against a simulated source whose bandwidth
halves, that throttles with 503 SlowDown, that cannot carry the critical
tier in time, or whose large critical object comes last in the listing. The
journal is a real one; the report's data groups are read back from it.
Each asserts: the critical tier is saved before every feasible cutoff,
infeasibility is flagged within the first 5% of the window, nothing starts
after the cutoff, and the report lists exactly what was left and why.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from orchestrator.clock import FrozenClock
from orchestrator.events import EventBus
from orchestrator.export.exporters.base import ExportItem
from orchestrator.plan import live
from orchestrator.plan.cost import CostModel
from orchestrator.plan.forecast import INFEASIBLE, DeadlinePlan, plan_deadline
from orchestrator.plan.priorities import Prioritizer, Rule
from orchestrator.plan.scheduler import DeadlineScheduler
from orchestrator.plan.workload import WorkUnit, by_tier_and_kind
from orchestrator.report.run_report import data_groups_by_tier
from orchestrator.run.deadline import Deadline
from orchestrator.run.journal import Journal
from orchestrator.run.progress import RunProgress
from tests.support.simulated_source import (
    MIB,
    Network,
    SimExporter,
    SimResult,
    sim_item,
    simulate,
)

START = datetime(2026, 1, 10, 12, 0, tzinfo=UTC)
KIB = 1024

PRIORITIES = Prioritizer(
    [
        Rule("critical", {"bucket": ("crit",)}),
        Rule("important", {"bucket": ("media",)}),
        Rule("best-effort", {"bucket": ("bulk",)}),
    ]
)


def items(bucket: str, count: int, size: int, prefix: str = "") -> list[ExportItem]:
    return [
        sim_item("s3", f"{prefix}{n:04d}", size, PRIORITIES, bucket=bucket) for n in range(count)
    ]


@dataclass
class Scenario:
    listing: list[ExportItem]
    network: Network
    window_s: float
    margin_s: float
    concurrency: int = 8
    #: The model's prior egress (what a calibration at the start measured).
    calibrated_egress: float | None = None
    listing_batch: int = 256


@dataclass
class Outcome:
    result: SimResult
    deadline: Deadline
    plan: DeadlinePlan
    journal: Journal
    run_id: str


def run(tmp_path: Path, scenario: Scenario) -> Outcome:
    clock = FrozenClock(START)
    journal = Journal(tmp_path / "journal.sqlite", clock=clock)
    deadline_at = START + timedelta(seconds=scenario.window_s)
    deadline = Deadline(deadline_at, timedelta(seconds=scenario.margin_s))
    run_id = journal.start_run("export", deadline_at, {})
    events = EventBus()
    model = CostModel(concurrency=scenario.concurrency)
    if scenario.calibrated_egress:
        model.calibrate(
            egress_bytes_per_s=scenario.calibrated_egress,
            request_s={"s3": scenario.network.latency_s},
        )
    # What the plan step knows before listing: sizes per bucket (the inventory).
    units: dict[str, list[ExportItem]] = {}
    for item in scenario.listing:
        units.setdefault(str(item.source["bucket"]), []).append(item)
    plan = plan_deadline(
        by_tier_and_kind(
            [
                WorkUnit(
                    PRIORITIES({"bucket": bucket}),
                    PRIORITIES.rank({"bucket": bucket}),
                    "s3",
                    bucket,
                    len(members),
                    sum(i.size or 0 for i in members),
                    requests=len(members),
                )
                for bucket, members in units.items()
            ],
            ["s3"],
        ),
        model,
        now=clock.now(),
        deadline=deadline,
    )
    progress = RunProgress(
        run_id=run_id, journal=journal, events=events, clock=clock, deadline=deadline
    )
    scheduler = DeadlineScheduler(
        run_id=run_id,
        exporters=[SimExporter("s3", scenario.listing, PRIORITIES)],
        deadline=deadline,
        clock=clock,
        model=model,
        events=events,
        plan=plan,
        journal=journal,
        listing_batch=scenario.listing_batch,
    )
    try:
        result = simulate(
            scheduler,
            clock=clock,
            network=scenario.network,
            deadline=deadline,
            journal=journal,
            run_id=run_id,
            events=events,
            progress=progress,
            concurrency=scenario.concurrency,
        )
    finally:
        live.forget(run_id)
    return Outcome(result, deadline, plan, journal, run_id)


def assert_accounted_for(outcome: Outcome, listing: list[ExportItem]) -> None:
    """Every item is saved, descoped with a reason, or was stopped running at the deadline;
    the report's data groups list exactly the descoped ones, with their reasons."""
    result = outcome.result
    keys = {i.dest_key for i in listing}
    assert set(result.saved) | set(result.descoped) | set(result.stopped) == keys
    assert not set(result.saved) & set(result.descoped)
    assert all(reason for reason in result.descoped.values())
    groups = data_groups_by_tier(outcome.journal, outcome.run_id)
    reported = sum(g.descoped_items for g in groups)
    assert reported == len(result.descoped)
    by_tier: dict[str, int] = {}
    for item in listing:
        if item.dest_key in result.descoped:
            by_tier[item.tier] = by_tier.get(item.tier, 0) + 1
    assert {g.tier: g.descoped_items for g in groups if g.descoped_items} == by_tier
    for group in groups:
        assert group.listed_items == sum(1 for i in listing if i.tier == group.tier)
        assert group.verified_items == sum(
            1 for i in listing if i.tier == group.tier and i.dest_key in result.saved
        )
        for descoped in group.descoped:
            assert descoped.reason and descoped.items > 0


def assert_nothing_started_after_the_cutoff(outcome: Outcome) -> None:
    late = [k for k, at in outcome.result.started_at.items() if at > outcome.deadline.cutoff]
    assert not late, f"started after the cutoff: {late[:5]}"


def assert_critical_saved_in_time(outcome: Outcome, listing: list[ExportItem]) -> None:
    critical = [i.dest_key for i in listing if i.tier == "critical"]
    missing = [k for k in critical if k not in outcome.result.saved]
    assert not missing, f"critical items not saved: {missing[:5]}"
    last = max(outcome.result.saved[k] for k in critical)
    assert last <= outcome.deadline.cutoff, (
        f"critical tier done at {last}, cutoff {outcome.deadline.cutoff}"
    )


def first_warning(outcome: Outcome, word: str) -> datetime | None:
    return next((at for at, message in outcome.result.warnings if word in message), None)


def step_bandwidth(before: float, after: float, at_s: float) -> Callable[[float], float]:
    return lambda t: before if t < at_s else after


def mixed_listing() -> list[ExportItem]:
    return items("crit", 40, 256 * KIB) + items("media", 120, 1 * MIB) + items("bulk", 30, 16 * MIB)


def test_throughput_halving_mid_run_descopes_best_effort_and_saves_the_critical_tier(tmp_path):
    # 10 + 120 + 480 MiB: 153 s at 4 MiB/s, fits a 240 s cutoff; after the halving
    # at 40 s the rest takes twice as long and the bulk no longer fits.
    listing = mixed_listing()
    scenario = Scenario(
        listing,
        Network(bandwidth=step_bandwidth(4 * MIB, 2 * MIB, 40.0)),
        window_s=260,
        margin_s=20,
        calibrated_egress=4 * MIB,
    )
    outcome = run(tmp_path, scenario)
    assert outcome.plan.verdict == "fits"
    assert_critical_saved_in_time(outcome, listing)
    assert_nothing_started_after_the_cutoff(outcome)
    assert_accounted_for(outcome, listing)
    descoped_tiers = {i.tier for i in listing if i.dest_key in outcome.result.descoped}
    assert descoped_tiers == {"best-effort"}
    # Said within seconds of the halving, not at the end.
    said = first_warning(outcome, "descoping")
    assert said is not None and said <= START + timedelta(seconds=40 + 20)
    # Everything important was saved too: only bulk was given up.
    assert all(i.dest_key in outcome.result.saved for i in listing if i.tier == "important")
    # Every item started before the cutoff ended by the hard deadline.
    assert not outcome.result.stopped


def test_slowdown_throttling_descopes_what_no_longer_fits_and_readmits_after(tmp_path):
    listing = mixed_listing()
    network = Network(
        bandwidth=lambda t: 4 * MIB,
        throttle=(20.0, 140.0),
        throttled_share=0.8,
        retry_after_s=1.0,
    )
    scenario = Scenario(listing, network, window_s=260, margin_s=20, calibrated_egress=4 * MIB)
    outcome = run(tmp_path, scenario)
    assert_critical_saved_in_time(outcome, listing)
    assert_nothing_started_after_the_cutoff(outcome)
    assert_accounted_for(outcome, listing)
    held = first_warning(outcome, "descoping")
    assert held is not None and held <= START + timedelta(seconds=20 + 20)
    # As rates recover, held work comes back: most of what was held is saved.
    assert first_warning(outcome, "re-admitting") is not None
    held_most = max(
        int(m.split()[1]) for _at, m in outcome.result.warnings if m.startswith("descoping")
    )
    assert len(outcome.result.descoped) < held_most
    # Descoping is an edit, not a verdict: only lower tiers, never the critical one.
    assert all(i.tier != "critical" for i in listing if i.dest_key in outcome.result.descoped)


def test_held_work_is_started_when_the_pipe_goes_idle_before_the_cutoff(tmp_path):
    # A deep dip (0.25 MiB/s from 30 s to 50 s) drags the pessimistic bound down, so
    # the bulk is held; when the rest is done the pipe is idle with two minutes left.
    # What fits that time at the measured rate is started, not left behind.
    listing = mixed_listing()
    full = 4 * MIB
    scenario = Scenario(
        listing,
        Network(bandwidth=lambda t: full if t < 30 or t > 50 else 0.25 * MIB),
        window_s=180,
        margin_s=20,
        calibrated_egress=full,
    )
    outcome = run(tmp_path, scenario)
    assert_critical_saved_in_time(outcome, listing)
    assert_nothing_started_after_the_cutoff(outcome)
    assert_accounted_for(outcome, listing)
    left_s = (outcome.deadline.cutoff - outcome.result.ended).total_seconds()
    descoped_bytes = sum(i.size or 0 for i in listing if i.dest_key in outcome.result.descoped)
    assert left_s < 0.1 * scenario.window_s, f"idle for {left_s:.0f} s before the cutoff"
    assert descoped_bytes > left_s * full  # what is left behind would not have fit
    assert first_warning(outcome, "nothing else is running") is not None


def test_infeasible_from_the_start_is_flagged_at_once_with_the_numbers(tmp_path):
    # The critical tier alone is 400 MiB; at 1 MiB/s a 5-minute window cannot carry it.
    listing = items("crit", 50, 8 * MIB) + items("media", 40, 1 * MIB)
    scenario = Scenario(
        listing,
        Network(bandwidth=lambda t: 1 * MIB),
        window_s=300,
        margin_s=30,
        calibrated_egress=1 * MIB,
    )
    outcome = run(tmp_path, scenario)
    assert outcome.plan.verdict == INFEASIBLE
    assert outcome.plan.needed_rate is not None and outcome.plan.needed_rate > 1 * MIB
    assert any("physical media" in o for o in outcome.plan.options)
    said = first_warning(outcome, "infeasible")
    assert said is not None and said <= START + timedelta(seconds=0.05 * 300)
    message = next(m for _at, m in outcome.result.warnings if "infeasible" in m)
    assert "MiB" in message and "cutoff" in message
    # Nothing of a lower tier took the critical tier's time.
    assert all(i.tier == "critical" for i in listing if i.dest_key in outcome.result.started_at)
    assert all(i.dest_key in outcome.result.descoped for i in listing if i.tier == "important")
    assert_nothing_started_after_the_cutoff(outcome)
    assert_accounted_for(outcome, listing)


def test_infeasible_is_flagged_within_five_percent_even_from_optimistic_priors(tmp_path):
    # No calibration: the model starts from its default 50 MiB/s; the source gives
    # 1 MiB/s, and the critical tier's 1.9 GiB needs 32 minutes of a 19-minute cutoff.
    listing = items("crit", 60, 32 * MIB)
    scenario = Scenario(listing, Network(bandwidth=lambda t: 1 * MIB), window_s=1200, margin_s=60)
    outcome = run(tmp_path, scenario)
    assert outcome.plan.verdict == "fits"  # the priors were wrong ...
    said = first_warning(outcome, "infeasible")
    # ... and measurement says so within 5% of the window.
    assert said is not None and said <= START + timedelta(seconds=0.05 * 1200)


def test_a_large_critical_object_late_in_the_listing_is_saved_before_the_cutoff(tmp_path):
    # 100 bulk objects listed first, the 150 MiB critical one last; the listing is
    # read a few items at a time, so bulk starts before the critical object is seen.
    listing = [
        *items("bulk", 100, 5 * MIB),
        sim_item("s3", "zz-database-dump", 150 * MIB, PRIORITIES, bucket="crit"),
    ]
    scenario = Scenario(
        listing,
        Network(bandwidth=lambda t: 2 * MIB),
        window_s=200,
        margin_s=20,
        calibrated_egress=2 * MIB,
        listing_batch=4,
    )
    outcome = run(tmp_path, scenario)
    assert_critical_saved_in_time(outcome, listing)
    assert_nothing_started_after_the_cutoff(outcome)
    assert_accounted_for(outcome, listing)
    # Bulk work did fill the time the critical object left.
    assert any(i.tier == "best-effort" and i.dest_key in outcome.result.saved for i in listing)


@pytest.mark.parametrize("window_s", [120, 180, 300, 600])
def test_the_critical_tier_completes_before_every_feasible_deadline(tmp_path, window_s):
    # The critical tier (10 MiB) fits every window; the rest fits none of the short ones.
    listing = mixed_listing()
    scenario = Scenario(
        listing,
        Network(bandwidth=step_bandwidth(4 * MIB, 2 * MIB, window_s / 3)),
        window_s=window_s,
        margin_s=window_s / 10,
        calibrated_egress=4 * MIB,
    )
    outcome = run(tmp_path, scenario)
    assert_critical_saved_in_time(outcome, listing)
    assert_nothing_started_after_the_cutoff(outcome)
    assert_accounted_for(outcome, listing)


def test_the_report_lists_what_was_descoped_per_tier_in_json_junit_and_html(tmp_path):
    from orchestrator.report.html_report import render_html
    from orchestrator.report.junit import render_junit
    from orchestrator.report.run_report import report_from_journal

    listing = mixed_listing()
    scenario = Scenario(
        listing,
        Network(bandwidth=step_bandwidth(4 * MIB, 2 * MIB, 40.0)),
        window_s=260,
        margin_s=20,
        calibrated_egress=4 * MIB,
    )
    outcome = run(tmp_path, scenario)
    report = report_from_journal(
        outcome.journal,
        outcome.run_id,
        finished_at=outcome.result.ended,
        status="deadline-missed",
        safety_margin=timedelta(seconds=20),
        destinations=[{"name": "vault", "where": "simulated"}],
        plan=[],
        exit_code=3,
    )
    groups = {g.label: g for g in report.data}
    assert set(groups) == {"s3 [critical]", "s3 [important]", "s3 [best-effort]"}
    assert groups["s3 [critical]"].complete and not groups["s3 [critical]"].descoped
    bulk = groups["s3 [best-effort]"]
    assert bulk.descoped_items == len(outcome.result.descoped) > 0
    assert bulk.saved_items + bulk.descoped_items == bulk.listed_items
    data = report.to_dict()
    assert data["totals"]["descoped_items"] == len(outcome.result.descoped)
    reasons = [d["reason"] for g in data["data"] for d in g["descoped"]]
    assert reasons and all("cutoff" in r for r in reasons)
    junit = render_junit(report)
    assert 'name="export s3 [best-effort] descoped"' in junit and "<skipped" in junit
    assert "Descoped, and why" in render_html(report)


def test_status_shows_the_outlook_and_what_was_descoped_and_why(tmp_path):
    from orchestrator.cli import _outlook_text
    from orchestrator.run.commands import run_status

    listing = mixed_listing()
    scenario = Scenario(
        listing,
        Network(bandwidth=step_bandwidth(4 * MIB, 2 * MIB, 40.0)),
        window_s=260,
        margin_s=20,
        calibrated_egress=4 * MIB,
    )
    outcome = run(tmp_path, scenario)
    view = run_status(outcome.journal, outcome.run_id, FrozenClock(outcome.result.ended))
    assert view.outlook is not None
    line = _outlook_text(view.outlook)
    assert "P50" in line and "P90" in line and "cutoff 12:04:00" in line and "margin" in line
    assert view.descoped and sum(d[3] for d in view.descoped) == len(outcome.result.descoped)
    assert all(tier == "best-effort" and reason for _k, tier, reason, _n, _b in view.descoped)
