"""Change plans: thresholds as data, ownership markers, undo, dry run, on the local DNS target."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from orchestrator.clock import FrozenClock
from orchestrator.cutover import (
    DNS_CHANGE_UNDO_KIND,
    ChangePlan,
    PlanOutcome,
    PlanOutdated,
    ThresholdExceeded,
    Thresholds,
    apply_plan,
    build_plan,
    from_json,
    plan_ttl_lowering,
    to_json,
    undo_dns_change,
)
from orchestrator.cutover.plan import is_marker, marker_name, owned_keys
from orchestrator.errors import ConfigError, FatalError
from providers.dns_local import LocalDnsProvider
from providers.interfaces.dns import RecordChange, RecordSet

ZONE = "shop.test."
CLOCK = FrozenClock(datetime(2021, 1, 9, 18, 0, tzinfo=UTC))


class UndoLog:
    """What a journal's undo log would hold: (kind, resource, description), in order."""

    def __init__(self) -> None:
        self.entries: list[tuple[str, dict[str, Any], str]] = []

    def __call__(self, kind: str, resource: dict[str, Any], description: str) -> None:
        json.dumps(resource)  # the journal keeps it as JSON
        self.entries.append((kind, resource, description))


def a(name: str, *values: str, ttl: int = 300) -> RecordSet:
    return RecordSet(f"{name}.{ZONE}" if name != "@" else ZONE, "A", ttl, tuple(values))


@pytest.fixture
def dns(tmp_path: Path) -> LocalDnsProvider:
    provider = LocalDnsProvider("local", tmp_path / "zones.json")
    provider.create_zone(ZONE, nameservers=["ns1.shop.test."])
    return provider


def body(dns: LocalDnsProvider) -> dict[tuple[str, str, str], RecordSet]:
    """The zone without its apex SOA/NS and without ownership markers."""
    return {
        rs.key: rs
        for rs in dns.list_records(ZONE)
        if not is_marker(rs) and not (rs.name == ZONE and rs.type in ("SOA", "NS"))
    }


def everything(rs: RecordSet) -> bool:
    return not (rs.name == ZONE and rs.type in ("SOA", "NS"))


def sync_plan(dns: LocalDnsProvider, desired: list[RecordSet], **kw: Any) -> ChangePlan:
    return build_plan(
        zone=ZONE,
        target=dns.describe(),
        purpose="prepare",
        owner="exitplan",
        current=dns.list_records(ZONE),
        desired=desired,
        in_scope=everything,
        **kw,
    )


def apply(dns: LocalDnsProvider, plan: ChangePlan, *, force: bool = False) -> PlanOutcome:
    return apply_plan(plan, dns, apply=True, force=force, record_undo=UndoLog(), clock=CLOCK)


def seed(dns: LocalDnsProvider, count: int) -> list[RecordSet]:
    """``count`` sets created by exitplan (so owned)."""
    sets = [a(f"h{i:02d}", f"192.0.2.{i + 1}") for i in range(count)]
    apply(dns, sync_plan(dns, sets))
    return sets


def test_creates_are_owned_and_the_table_reads_like_octodns(dns: LocalDnsProvider) -> None:
    plan = sync_plan(dns, [a("www", "192.0.2.1", "192.0.2.2"), a("api", "192.0.2.3")])
    assert plan.counts() == {"create": 2, "update": 0, "delete": 0}
    assert [(c.operation, c.name, c.marker) for c in plan.changes[:2]] == [
        ("create", f"api.{ZONE}", False),
        ("create", f"www.{ZONE}", False),
    ]
    assert {(c.operation, c.name, c.marker) for c in plan.changes[2:]} == {
        ("create", marker_name(ZONE, (f"api.{ZONE}", "A", "")), True),
        ("create", marker_name(ZONE, (f"www.{ZONE}", "A", "")), True),
    }
    lines = plan.table().splitlines()
    assert lines[0] == f"zone {ZONE} at {dns.describe()}: prepare (owner exitplan)"
    assert lines[1].split() == ["operation", "name", "type", "TTL", "value"]
    assert lines[3].split() == ["create", f"www.{ZONE}", "A", "300", "192.0.2.1,", "192.0.2.2"]
    assert any(
        line.endswith(f'"heritage=exitplan,owner=exitplan,record=api.{ZONE} A"  [ownership marker]')
        for line in lines[4:6]
    )
    assert (
        lines[-1]
        == "2 create, 0 update, 0 delete (+2 ownership marker change(s)); 0 existing record sets"
    )
    apply(dns, plan)
    assert owned_keys(ZONE, dns.list_records(ZONE), "exitplan") == {
        (f"api.{ZONE}", "A", ""),
        (f"www.{ZONE}", "A", ""),
    }
    assert owned_keys(ZONE, dns.list_records(ZONE), "someone-else") == set()


def test_more_than_thirty_percent_of_ten_or_more_needs_force(dns: LocalDnsProvider) -> None:
    sets = seed(dns, 10)
    three = [a(s.name.split(".")[0], "198.51.100.1") for s in sets[:3]]
    exactly_30 = sync_plan(dns, three + sets[3:])
    assert exactly_30.counts()["update"] == 3 and not exactly_30.needs_force

    four = [a(s.name.split(".")[0], "198.51.100.1") for s in sets[:4]]
    plan = sync_plan(dns, four + sets[4:])
    assert plan.force_reasons == ("changes 4 of the zone's 10 record sets (40%, more than 30%)",)
    before = dns.list_records(ZONE)
    undo = UndoLog()
    with pytest.raises(ThresholdExceeded, match="run again with --force") as refused:
        apply_plan(plan, dns, apply=True, force=False, record_undo=undo, clock=CLOCK)
    assert refused.value.exit_code == 2
    assert dns.list_records(ZONE) == before and undo.entries == []
    assert "needs --force: changes 4 of the zone's 10" in plan.table()

    apply_plan(plan, dns, apply=True, force=True, record_undo=undo, clock=CLOCK)
    assert body(dns)[(f"h03.{ZONE}", "A", "")].values == ("198.51.100.1",)


def test_deletes_count_and_small_zones_have_no_share_limit(dns: LocalDnsProvider) -> None:
    sets = seed(dns, 9)
    assert not sync_plan(dns, sets[:2]).needs_force  # 7 of 9 deleted, but fewer than 10 sets
    apply(dns, sync_plan(dns, [*sets, a("extra", "192.0.2.99")]))
    deleting = sync_plan(dns, sets[:6])  # 4 of 10 deleted
    assert deleting.counts()["delete"] == 4 and deleting.needs_force
    # The thresholds are data: a caller may set its own.
    relaxed = sync_plan(dns, sets[:6], thresholds=Thresholds(max_changed_share=0.5))
    assert not relaxed.needs_force


def test_ttl_only_updates_do_not_count_unless_told(dns: LocalDnsProvider) -> None:
    seed(dns, 10)
    plan = plan_ttl_lowering(ZONE, dns, lowered_ttl=60)
    assert plan.counts()["update"] == 10
    assert all(c.ttl_only for c in plan.changes) and not plan.needs_force
    strict = plan_ttl_lowering(
        ZONE, dns, lowered_ttl=60, thresholds=Thresholds(count_ttl_only_updates=True)
    )
    assert strict.needs_force


def test_any_ns_change_needs_force(dns: LocalDnsProvider) -> None:
    sub = RecordSet(f"dev.{ZONE}", "NS", 86400, ("ns1.dev.example.net.",))
    copying = sync_plan(dns, [sub])
    assert not copying.needs_force  # copying a delegation into the zone
    apply(dns, copying)
    changed = sync_plan(dns, [RecordSet(sub.name, "NS", 86400, ("ns9.dev.example.net.",))])
    assert changed.force_reasons == (f"updates the NS set of dev.{ZONE}",)
    apex = plan_ttl_lowering(ZONE, dns, lowered_ttl=60, lowered_ns_ttl=300)
    assert apex.force_reasons == (f"updates the NS set of {ZONE}",)
    assert [c.name for c in apex.changes] == [ZONE]  # the delegation below is not lowered


def test_a_set_exitplan_did_not_create_survives(dns: LocalDnsProvider) -> None:
    seed(dns, 2)
    theirs = a("theirs", "203.0.113.50")
    clash = a("h00", "203.0.113.51")
    dns.apply(ZONE, [RecordChange("create", theirs)])  # made by hand, no marker
    # A sync whose source has neither 'theirs' nor 'h01': 'h01' (ours) goes, 'theirs' stays.
    plan = sync_plan(dns, [a("h00", "192.0.2.1")])
    assert [(c.operation, c.name) for c in plan.changes if not c.marker] == [
        ("delete", f"h01.{ZONE}")
    ]
    assert [(k.name, k.reason.split(" (")[0]) for k in plan.kept] == [
        (f"theirs.{ZONE}", "not created by exitplan")
    ]
    apply(dns, plan)
    assert body(dns)[theirs.key] == theirs
    assert clash.key in body(dns) and (f"h01.{ZONE}", "A", "") not in body(dns)
    # Nor are its values changed: a different 'theirs' in the source is kept, not written.
    assert sync_plan(dns, [a("h00", "192.0.2.1"), a("theirs", "192.0.2.77")]).kept[0].name == (
        theirs.name
    )
    # Unless the caller adopts it by name (the flip's service names).
    adopted = sync_plan(dns, [a("h00", "192.0.2.1"), a("theirs", "192.0.2.77")], adopt={theirs.key})
    assert [(c.operation, c.name, c.marker) for c in adopted.changes] == [
        ("update", theirs.name, False),
        ("create", marker_name(ZONE, theirs.key), True),
    ]


def test_undo_is_recorded_before_the_change_and_restores_it(dns: LocalDnsProvider) -> None:
    seed(dns, 3)
    original = body(dns)
    plan = sync_plan(dns, [a("h00", "198.51.100.1"), a("new", "198.51.100.2")])
    seen_at_record_time: list[dict[tuple[str, str, str], RecordSet]] = []
    undo = UndoLog()

    def record_undo(kind: str, resource: dict[str, Any], description: str) -> None:
        seen_at_record_time.append(body(dns))
        undo(kind, resource, description)

    outcome = apply_plan(plan, dns, apply=True, force=True, record_undo=record_undo, clock=CLOCK)
    assert seen_at_record_time == [original]  # nothing had changed yet
    ((kind, resource, description),) = undo.entries
    assert kind == DNS_CHANGE_UNDO_KIND
    assert description.startswith(f"restore {len(plan.changes)} record set(s) of zone {ZONE}")
    assert outcome.ok and len(outcome.applied) == len(plan.changes)

    # Someone else changes one of the sets afterwards: the undo leaves that one alone.
    dns.apply(ZONE, [RecordChange("update", a("new", "203.0.113.9"))])
    message = undo_dns_change(json.loads(json.dumps(resource)), dns)
    assert message.startswith(f"zone {ZONE} at {dns.describe()}: restored ")
    assert f"1 changed since by someone else, left as they are: new.{ZONE} A" in message
    restored = body(dns)
    assert {k: v for k, v in restored.items() if k[0] != f"new.{ZONE}"} == original
    assert not any(is_marker(rs) and "new." in rs.values[0] for rs in dns.list_records(ZONE))
    # Idempotent: a second run changes nothing.
    again = undo_dns_change(resource, dns)
    assert "restored 0 record set(s)" in again and body(dns) == restored


def test_undo_refuses_another_provider(dns: LocalDnsProvider, tmp_path: Path) -> None:
    undo = UndoLog()
    apply_plan(
        sync_plan(dns, [a("x", "192.0.2.1")]),
        dns,
        apply=True,
        force=False,
        record_undo=undo,
        clock=CLOCK,
    )
    other = LocalDnsProvider("other", tmp_path / "other.json")
    with pytest.raises(FatalError, match="undo it with that provider"):
        undo_dns_change(undo.entries[0][1], other)


def test_a_plan_outdated_by_another_change_is_refused(dns: LocalDnsProvider) -> None:
    seed(dns, 1)
    plan = sync_plan(dns, [a("h00", "198.51.100.1")])
    dns.apply(ZONE, [RecordChange("update", a("h00", "203.0.113.1"))])
    undo = UndoLog()
    with pytest.raises(PlanOutdated, match=f"h00.{ZONE} A changed since the prepare plan"):
        apply_plan(plan, dns, apply=True, force=False, record_undo=undo, clock=CLOCK)
    assert undo.entries == []


def test_a_resumed_apply_does_not_redo_what_is_done(dns: LocalDnsProvider) -> None:
    plan = sync_plan(dns, [a("www", "192.0.2.1")])
    apply(dns, plan)
    undo = UndoLog()
    again = apply_plan(plan, dns, apply=True, force=False, record_undo=undo, clock=CLOCK)
    assert (again.applied, again.already_done, undo.entries) == ((), 2, [])
    assert again.ok


def test_dry_run_changes_nothing_and_records_no_undo(dns: LocalDnsProvider) -> None:
    seed(dns, 10)
    plan = sync_plan(dns, [])  # would delete all ten: needs force, but a dry run only shows it
    before = dns.list_records(ZONE)
    undo = UndoLog()
    outcome = apply_plan(plan, dns, apply=False, force=False, record_undo=undo, clock=CLOCK)
    assert outcome.dry_run and not outcome.ok
    assert dns.list_records(ZONE) == before and undo.entries == []


def test_plans_and_outcomes_round_trip_through_json(dns: LocalDnsProvider) -> None:
    plan = sync_plan(dns, [a("www", "192.0.2.1")])
    outcome = apply(dns, plan)
    assert from_json(ChangePlan, json.loads(json.dumps(to_json(plan)))) == plan
    assert from_json(PlanOutcome, json.loads(json.dumps(to_json(outcome)))) == outcome


def test_a_bad_owner_label_is_refused() -> None:
    with pytest.raises(ConfigError, match="dns owner 'Ex Plan'"):
        build_plan(
            zone=ZONE,
            target="t",
            purpose="p",
            owner="Ex Plan",
            current=[],
            desired=[],
            in_scope=everything,
        )
