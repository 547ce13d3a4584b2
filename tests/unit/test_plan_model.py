"""The cost model, the deadline plan and the egress price: figures a person plans by."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from orchestrator.inventory import Fact
from orchestrator.plan.cost import CostModel, Estimate, Work
from orchestrator.plan.egress import egress_cost
from orchestrator.plan.forecast import DESCOPES, FITS, INFEASIBLE, plan_deadline, plan_lines
from orchestrator.plan.priorities import Prioritizer, Rule
from orchestrator.plan.workload import WorkUnit, by_tier_and_kind, units_from_facts
from orchestrator.run.deadline import Deadline

NOW = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
MIB = 1024 * 1024
GIB = 1024 * MIB


def test_kinds_running_together_share_the_egress_rather_than_add_their_rates():
    model = CostModel(concurrency=16, egress_bytes_per_s=10 * MIB)
    s3 = Work("s3", 100 * MIB, 10)
    ebs = Work("ebs", 100 * MIB, 200, 0)
    both = model.cost_s(s3, pessimistic=False) + model.cost_s(ebs, pessimistic=False)
    # 200 MiB through a 10 MiB/s pipe: 20 s, whichever kinds the bytes belong to.
    assert both == pytest.approx(20.0, rel=0.01)


def test_the_ebs_ceiling_bounds_blocks_however_many_slots_run():
    model = CostModel(concurrency=512, egress_bytes_per_s=10 * GIB)
    # 100,000 blocks at about 1,000 GetSnapshotBlock/s per snapshot: at least 100 s.
    blocks = Work("ebs", 1 * MIB, 100_000)
    assert model.cost_s(blocks, pessimistic=False) >= 100.0
    assert model.bound_by(blocks) == "ceiling"
    # S3's ceiling is 5,500 GETs per second per prefix.
    gets = Work("s3", 0, 55_000)
    assert model.cost_s(gets, pessimistic=False) >= 10.0


def test_small_objects_are_bound_by_request_latency_not_bytes():
    model = CostModel(concurrency=4, egress_bytes_per_s=100 * MIB)
    model.calibrate(request_s={"s3": 0.05})
    small = Work("s3", 4 * MIB, 1000)  # 1000 objects of 4 KiB
    assert model.bound_by(small) == "requests"
    assert model.cost_s(small, pessimistic=False) == pytest.approx(1000 * 0.05 / 4)


def test_the_pessimistic_bound_narrows_as_measurements_agree():
    estimate = Estimate(10.0, spread=0.5)
    wide = estimate.mean - estimate.low()
    for _ in range(20):
        estimate.update(8.0)
    assert estimate.mean == pytest.approx(8.0, rel=0.01)
    assert estimate.mean - estimate.low() < wide / 5
    # A noisy source keeps a wide bound.
    noisy = Estimate(10.0)
    for value in (2.0, 18.0) * 10:
        noisy.update(value)
    assert noisy.low() < 5.0 < noisy.mean


def test_the_bwlimit_caps_the_egress_at_p50_and_p90():
    model = CostModel(concurrency=8, bwlimit=1 * MIB, egress_bytes_per_s=200 * MIB)
    assert model.egress_rate(False) == model.egress_rate(True) == 1 * MIB
    assert "--bwlimit" in model.describe_rates()


def test_request_times_come_from_the_flow_and_setups_from_items():
    model = CostModel(concurrency=16, egress_bytes_per_s=10 * MIB)
    # 400 requests done in 5 s on 16 slots: each held a slot for 0.2 s.
    for _ in range(10):
        model.observe_requests(["s3"], requests=400, seconds=5.0)
        model.observe_item("rds", bytes_read=0, requests=1, seconds=30.0, setups=1)
    assert model.kind("s3").request_s.mean == pytest.approx(0.2, rel=0.05)
    assert model.kind("rds").setup_s.mean == pytest.approx(30.0, rel=0.1)
    # One item's time in a slot says nothing of its requests (it may have waited for the pipe).
    before = model.kind("s3").request_s.mean
    model.observe_item("s3", bytes_read=0, requests=1, seconds=9.0)
    assert model.kind("s3").request_s.mean == before


def test_figures_round_trip_as_the_next_plans_seeds():
    measured = CostModel(concurrency=8, egress_bytes_per_s=3 * MIB)
    measured.observe_egress(5 * MIB)
    measured.observe_requests(["s3"], requests=200, seconds=1.0)
    from dataclasses import asdict

    seeded = CostModel(concurrency=8)
    assert seeded.seed_from(asdict(measured.figures()), "drill X")
    assert seeded.egress.mean == pytest.approx(5 * MIB)
    assert seeded.kind("s3").request_s.mean == pytest.approx(8 * 1.0 / 200)
    assert "drill X" in seeded.sources and "defaults" not in seeded.sources
    assert not CostModel(concurrency=1).seed_from({"nonsense": 1}, "bad")


# -- the plan ------------------------------------------------------------------


def rows(*units: WorkUnit) -> list:
    return by_tier_and_kind(list(units), ["rds", "s3", "ebs"])


def test_a_plan_that_fits_has_per_tier_finishes_and_a_positive_margin():
    model = CostModel(concurrency=8, egress_bytes_per_s=10 * MIB, egress_spread=0.1)
    plan = plan_deadline(
        rows(
            WorkUnit("critical", 0, "s3", "config", 100, 10 * MIB, 100),
            WorkUnit("bulk", 2, "s3", "media", 1000, 500 * MIB, 1000),
        ),
        model,
        now=NOW,
        deadline=Deadline(NOW + timedelta(hours=1), timedelta(minutes=10)),
    )
    assert plan.verdict == FITS and not plan.descoped
    assert [r.tier for r in plan.rows] == ["critical", "bulk"]
    assert plan.rows[0].finish_p90 < plan.rows[1].finish_p90 == plan.finish_p90
    assert plan.finish_p50 <= plan.finish_p90 < plan.cutoff
    assert plan.margin_p90_s and plan.margin_p90_s > 0


def test_what_does_not_fit_is_descoped_with_the_reason_and_the_critical_tier_kept():
    model = CostModel(concurrency=8, egress_bytes_per_s=1 * MIB, egress_spread=0.05)
    plan = plan_deadline(
        rows(
            WorkUnit("critical", 0, "s3", "config", 10, 30 * MIB, 10),
            WorkUnit("important", 1, "s3", "media", 100, 100 * MIB, 100),
            WorkUnit("bulk", 2, "ebs", "vol-1", 1, 600 * MIB, 1200, setups=1),
        ),
        model,
        now=NOW,
        deadline=Deadline(NOW + timedelta(minutes=2), timedelta(seconds=10)),
    )
    assert plan.verdict == DESCOPES
    descoped = {(d.tier, d.kind): d for d in plan.descoped}
    assert set(descoped) == {("important", "s3"), ("bulk", "ebs")}
    assert descoped[("bulk", "ebs")].items == 1 and "cutoff" in descoped[("bulk", "ebs")].reason
    # About 80 of the 110 seconds are left after the critical tier: part of "important" fits.
    important = next(r for r in plan.rows if r.tier == "important")
    assert 0 < important.admitted_items < important.items
    assert plan.rows[0].admitted_items == plan.rows[0].items
    text = "\n".join(plan_lines(plan))
    assert "descoped: bulk/ebs" in text and "option: descope tiers" in text


def test_infeasible_when_even_the_critical_tier_cannot_fit_with_the_rate_it_needs():
    model = CostModel(concurrency=8, egress_bytes_per_s=1 * MIB, egress_spread=0.05)
    plan = plan_deadline(
        rows(WorkUnit("critical", 0, "rds", "db", 3, 600 * MIB, 3, setups=1)),
        model,
        now=NOW,
        deadline=Deadline(NOW + timedelta(minutes=5), timedelta(minutes=1)),
    )
    assert plan.verdict == INFEASIBLE
    # 600 MiB in (240 s less the setup) needs about 2.5 MiB/s.
    assert plan.needed_rate is not None and 2.4 * MIB < plan.needed_rate < 3.0 * MIB
    assert any(o.startswith("physical media") for o in plan.options)
    assert any("another destination" in o for o in plan.options)
    assert "INFEASIBLE" in "\n".join(plan_lines(plan))


def test_stages_come_from_the_last_drill_or_are_stated_unknown():
    model = CostModel(concurrency=8, egress_bytes_per_s=10 * MIB)
    work = rows(WorkUnit("critical", 0, "s3", "config", 10, 10 * MIB, 10))
    deadline = Deadline(NOW + timedelta(hours=1))
    unknown = plan_deadline(work, model, now=NOW, deadline=deadline)
    assert unknown.service_up_by is None
    assert all(s.at is None for s in unknown.stages if s.stage != "export")
    assert "service up by: unknown" in plan_lines(unknown)
    known = plan_deadline(
        work,
        model,
        now=NOW,
        deadline=deadline,
        stages={"place": 30.0, "replay": 60.0, "verify-service": 5.0, "dns": 120.0},
        stages_basis="measured by drill D1",
    )
    # The host is placed while the data moves; replay starts when both are done.
    placed_or_exported = max(NOW + timedelta(seconds=30), known.finish_p90)
    assert known.service_up_by == placed_or_exported + timedelta(seconds=65)
    dns = next(s for s in known.stages if s.stage == "dns")
    assert dns.at == known.service_up_by + timedelta(seconds=120)


# -- egress --------------------------------------------------------------------


def test_egress_cost_follows_the_published_tiers():
    assert egress_cost(50 * 1000**3).usd == 0.0  # within the free 100 GB
    assert egress_cost(1100 * 1000**3).usd == pytest.approx(1000 * 0.09)
    # 20 TB: 9,900 GB at $0.09 and 10,000 GB at $0.085.
    assert egress_cost(20_000 * 1000**3).usd == pytest.approx(9_900 * 0.09 + 10_000 * 0.085)
    cost = egress_cost(1)
    assert "checked 2026-11" in cost.basis and "leaving AWS" in cost.waiver


# -- sizing ----------------------------------------------------------------------


def test_ebs_is_sized_by_the_blocks_its_snapshot_holds_not_the_volume():
    prioritizer = Prioritizer([Rule("best-effort", {"kind": ("ebs",)})])
    facts = [
        Fact("ebs-volume", "eu-west-1", "vol-1", {"size_gib": 500, "provisioned_bytes": 500 * GIB}),
        Fact(
            "ebs-snapshot",
            "eu-west-1",
            "snap-1",
            {"source_volume_id": "vol-1", "state": "completed", "provisioned_bytes": 500 * GIB},
        ),
    ]
    units = units_from_facts(
        facts,
        prioritizer,
        kinds=["ebs"],
        part_size=16 * MIB,
        ebs_data_bytes=lambda region, snapshot: (300 * MIB, 600),
    )
    [unit] = units
    assert unit.bytes == 300 * MIB and unit.requests == 601 and unit.size_known
    assert "600 blocks" in unit.note
    unsized = units_from_facts(facts, prioritizer, kinds=["ebs"], part_size=16 * MIB)
    assert unsized[0].bytes == 500 * GIB and not unsized[0].size_known


def test_rds_dumps_are_sized_from_earlier_runs_or_stated_unknown():
    prioritizer = Prioritizer([Rule("critical", {"kind": ("rds",)})])
    facts = [Fact("rds", "us-east-1", "db", {"storage_gb": 20})]
    [unknown] = units_from_facts(facts, prioritizer, kinds=["rds"], part_size=MIB)
    assert not unknown.size_known and "unknown" in unknown.note and unknown.setups == 1
    [known] = units_from_facts(
        facts,
        prioritizer,
        kinds=["rds"],
        part_size=MIB,
        known_sizes={"rds/us-east-1/db/dump.tar": 5 * MIB, "rds/us-east-1/db/x.json": 10},
    )
    assert known.size_known and known.bytes == 5 * MIB + 10
