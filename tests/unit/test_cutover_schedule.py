"""The cutover schedule on an injected clock: TTLs first, the delegation in the first hour, the flip."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from orchestrator.clock import FrozenClock
from orchestrator.cutover import (
    CutoverSchedule,
    ScheduleInputs,
    ZoneTtls,
    compute_schedule,
    from_json,
    share_on_old_delegation,
    to_json,
)
from orchestrator.errors import ConfigError

NOTICE = datetime(2021, 1, 9, 18, 0, tzinfo=UTC)
H = timedelta(hours=1)
NEW_NS = ("ns1.new-dns.example.net", "ns2.new-dns.example.net.")

#: Route53's defaults: NS 172800 s, SOA TTL 900 with minimum 86400 (so 900 s negative caching).
TTLS = ZoneTtls(
    zone="microblog.example.",
    max_service_ttl=300,
    max_record_ttl=86400,
    ns_ttl=172800,
    negative_ttl=900,
)


def inputs(**overrides: object) -> ScheduleInputs:
    base = ScheduleInputs(
        zone="microblog.example",
        notice=NOTICE,
        deadline=NOTICE + 30 * H,
        safety_margin=timedelta(minutes=30),
        ttls=TTLS,
        new_nameservers=NEW_NS,
    )
    return replace(base, **overrides)  # type: ignore[arg-type]


def test_the_model_shares_are_uniform_over_the_ttl() -> None:
    change = NOTICE
    assert share_on_old_delegation(change - H, change_at=change, parent_ns_ttl=172800) == 1.0
    assert share_on_old_delegation(change, change_at=change, parent_ns_ttl=172800) == 1.0
    assert share_on_old_delegation(change + 24 * H, change_at=change, parent_ns_ttl=172800) == 0.5
    assert share_on_old_delegation(change + 48 * H, change_at=change, parent_ns_ttl=172800) == 0.0
    # A child NS copy fetched later than the change keeps the share up: the larger counts.
    later = share_on_old_delegation(
        change + 24 * H,
        change_at=change,
        parent_ns_ttl=172800,
        child_ns_ttl=172800,
        child_ns_reference=change + 12 * H,
    )
    assert later == 0.75


def test_thirty_hours_of_notice_leave_eighteen_of_forty_eight_hours_on_the_old_delegation() -> None:
    """The story: 30 h notice, the change made at once: 18 h / 48 h = 37.5% at the deadline."""
    clock = FrozenClock(NOTICE)
    schedule = compute_schedule(inputs(delegation_changed_at=NOTICE, ttls_lowered_at=NOTICE), clock)
    assert schedule.delegation.share_at_deadline == pytest.approx(18 / 48)
    assert schedule.delegation.all_moved_by == NOTICE + 48 * H
    assert not schedule.delegation.fits


def test_schedule_steps_from_the_notice() -> None:
    now = NOTICE + timedelta(minutes=10)
    schedule = compute_schedule(inputs(), FrozenClock(now))
    assert schedule.computed_at == now
    assert [s.step for s in schedule.steps] == [
        "lower-ttls",
        "lower-ns-ttl",
        "delegation",
        "flip",
        "keep-zones-identical",
        "old-zone-gone",
    ]

    lower = schedule.step("lower-ttls")
    assert lower is not None
    assert (lower.start_at, lower.due_by, lower.done) == (now, now, False)
    assert lower.effective_at == now + timedelta(seconds=86400)
    assert "to 60 s in the new zone and the old zone" in lower.action

    ns = schedule.step("lower-ns-ttl")
    assert ns is not None and ns.needs == ("--force",)
    assert ns.effective_at == now + timedelta(seconds=172800)

    delegation = schedule.step("delegation")
    assert delegation is not None
    assert delegation.critical and delegation.needs == ("approval",)
    assert delegation.due_by == NOTICE + H  # the first hour
    assert (
        "with exactly ns1.new-dns.example.net., ns2.new-dns.example.net. (remove every other)"
        in delegation.action
    )

    # Taken at its due time: 1 - 29/48 of the parent's copies, and the old zone's own NS
    # copies (lowered 10 minutes after the notice) 1 - (29 h 50 min)/48 h: the larger counts.
    assert schedule.delegation.change_at == NOTICE + H
    assert schedule.delegation.share_at_deadline == pytest.approx(1 - 29 / 48)
    assert schedule.delegation.all_moved_by == NOTICE + 49 * H

    flip = schedule.step("flip")
    assert flip is not None
    assert flip.start_at == now + timedelta(seconds=300)  # the service TTL cached before lowering
    assert flip.due_by == NOTICE + 30 * H - timedelta(minutes=30)
    assert flip.needs == ("health-green",)
    assert (schedule.flip_window_start, schedule.flip_window_end) == (flip.start_at, flip.due_by)

    (risk,) = schedule.residual_risks
    assert risk.startswith("deadline too close for the delegation: resolvers keep a delegation")
    assert "about 40% of resolvers will still ask the old name servers at the deadline" in risk
    assert "for up to 19 h after it (until 2021-01-11T19:00:00+00:00)" in risk
    assert schedule.warnings == ()
    text = schedule.text()
    assert (
        "delegation" in text and "CRITICAL" in text and "residual risk: deadline too close" in text
    )


def test_a_registrar_hook_replaces_the_approval() -> None:
    schedule = compute_schedule(inputs(registrar_hook="gandi"), FrozenClock(NOTICE))
    delegation = schedule.step("delegation")
    assert delegation is not None and delegation.needs == ("registrar-api",)
    assert "through the registrar API hook 'gandi'" in delegation.action


def test_enough_notice_leaves_no_delegation_risk() -> None:
    schedule = compute_schedule(inputs(deadline=NOTICE + 72 * H), FrozenClock(NOTICE))
    assert schedule.delegation.fits
    assert schedule.delegation.share_at_deadline == 0.0
    assert schedule.residual_risks == ()


def test_a_deadline_inside_the_first_hour_is_too_close_for_the_delegation() -> None:
    clock = FrozenClock(NOTICE)
    schedule = compute_schedule(
        inputs(deadline=NOTICE + timedelta(minutes=40), safety_margin=timedelta(minutes=10)),
        clock,
    )
    assert schedule.delegation.share_at_deadline == 1.0
    assert not schedule.delegation.fits
    assert any(
        r.startswith(
            "deadline too close for the delegation: the change cannot reach the parent zone "
            "before the deadline (2021-01-09T18:40:00+00:00)"
        )
        for r in schedule.residual_risks
    )


def test_after_the_first_hour_the_delegation_is_due_now_and_late() -> None:
    now = NOTICE + 3 * H
    schedule = compute_schedule(inputs(), FrozenClock(now))
    assert schedule.delegation.change_at == now
    assert schedule.delegation.share_at_deadline == pytest.approx(1 - 27 / 48)
    assert any("the first hour after the notice ended" in w for w in schedule.warnings)


def test_a_read_only_old_zone_keeps_its_ttls_and_cannot_be_flipped() -> None:
    schedule = compute_schedule(inputs(old_zone_writable=False), FrozenClock(NOTICE))
    assert schedule.step("lower-ns-ttl") is None
    lower = schedule.step("lower-ttls")
    assert lower is not None and "in the new zone (" in lower.action
    assert any("the old zone no longer accepts changes" in r for r in schedule.residual_risks)
    assert any("the old zone cannot be flipped" in r for r in schedule.residual_risks)


def test_a_long_service_ttl_that_outlasts_the_margin_is_a_residual_risk() -> None:
    ttls = replace(TTLS, max_service_ttl=86400)
    schedule = compute_schedule(
        inputs(ttls=ttls, deadline=NOTICE + 6 * H, safety_margin=H), FrozenClock(NOTICE)
    )
    assert schedule.flip_window_start == NOTICE + 24 * H
    assert schedule.flip_window_end == NOTICE + 5 * H
    assert any(
        "flipped then, resolvers that cached the old addresses keep them for up to 19 h" in r
        for r in schedule.residual_risks
    )


def test_new_names_are_created_at_once_for_negative_caching() -> None:
    schedule = compute_schedule(inputs(new_names=("new.microblog.example",)), FrozenClock(NOTICE))
    step = schedule.step("create-new-names")
    assert step is not None
    assert step.start_at == NOTICE and step.effective_at == NOTICE + timedelta(seconds=900)
    assert "new.microblog.example." in step.action and "900 s" in step.action


def test_steps_already_done_are_marked_and_times_kept() -> None:
    lowered = NOTICE + timedelta(minutes=5)
    changed = NOTICE + timedelta(minutes=20)
    now = NOTICE + 2 * H
    schedule = compute_schedule(
        inputs(ttls_lowered_at=lowered, delegation_changed_at=changed), FrozenClock(now)
    )
    lower, delegation = schedule.step("lower-ttls"), schedule.step("delegation")
    assert lower is not None and lower.done and lower.start_at == lowered
    assert delegation is not None and delegation.done and delegation.due_by == changed
    assert schedule.warnings == ()  # done in time: nothing late
    assert schedule.flip_window_start == now  # lowered + 300 s is long past


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"deadline": NOTICE - H}, "is not after the notice"),
        ({"new_nameservers": ()}, "needs the new zone's name servers"),
        ({"safety_margin": timedelta(minutes=-1)}, "safety margin is negative"),
        ({"lowered_ttl": 0}, "lowered TTL must be a positive number"),
        ({"deadline": datetime(2021, 1, 11)}, "has no timezone"),
    ],
)
def test_inputs_that_cannot_describe_a_cutover_are_refused(
    overrides: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        compute_schedule(inputs(**overrides), FrozenClock(NOTICE))


def test_the_schedule_round_trips_through_json() -> None:
    schedule = compute_schedule(inputs(new_names=("x.microblog.example",)), FrozenClock(NOTICE))
    data = json.loads(json.dumps(to_json(schedule)))
    assert from_json(CutoverSchedule, data) == schedule
    assert data["delegation"]["share_at_deadline"] == pytest.approx(1 - 29 / 48)
