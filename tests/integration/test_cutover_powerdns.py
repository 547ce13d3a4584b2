"""The DNS cutover against real parts: moto's Route53 as the old zone, PowerDNS as the new one.

moto's Route53 is an API, not a DNS server, so the old zone's answers come
from a reference server: ``LocalDnsServer`` loaded with the zone as read
live from Route53. The new zone is asked on PowerDNS's own DNS port. Every
DNS question goes over UDP and TCP on 127.0.0.1.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from orchestrator.clock import FrozenClock
from orchestrator.cutover import (
    AuthoritativeEndpoint,
    FlipOutcome,
    FlipTooEarly,
    HealthNotGreen,
    HealthVerdict,
    ThresholdExceeded,
    ZonePrepared,
    ZoneTarget,
    apply_plan,
    flip_service_records,
    from_json,
    load_reference_zone,
    plan_ttl_lowering,
    prepare_new_zone,
    query_authoritative,
    to_json,
    undo_dns_change,
    verify_zone_equivalence,
    zone_from_provider,
)
from orchestrator.cutover.plan import is_marker, owned_keys
from providers.dns import LibcloudDnsProvider
from providers.dns_local import LocalDnsProvider, LocalDnsServer
from providers.dns_route53 import Route53DnsProvider
from providers.interfaces.dns import DnsProvider, RecordChange, RecordSet, absolute_name
from tests.support.aws import moto_account
from tests.support.powerdns import PowerDnsServer
from tests.support.powerdns import powerdns as powerdns  # the fixture
from tests.unit.test_export_route53 import PLAIN_SETS, make_zone

ZONE = "shop.example.com."
NEW_NS = ["ns1.exitplan.test.", "ns2.exitplan.test."]
NEW_HOST = "198.51.100.80"
SERVICES = [ZONE, f"www.{ZONE}", f"api.{ZONE}"]


class UndoLog:
    """Stands in for the journal's undo log: keeps what it is given, as JSON, in order."""

    def __init__(self) -> None:
        self.entries: list[tuple[str, dict[str, Any], str]] = []

    def __call__(self, kind: str, resource: dict[str, Any], description: str) -> None:
        self.entries.append((kind, json.loads(json.dumps(resource)), description))


@dataclass
class World:
    clock: FrozenClock
    old: Route53DnsProvider
    new: LibcloudDnsProvider
    new_endpoint: AuthoritativeEndpoint
    reference: LocalDnsProvider
    reference_endpoint: AuthoritativeEndpoint

    def refresh_reference(self) -> None:
        """Reload the stand-in for the old zone's servers from Route53 as it is now."""
        load_reference_zone(zone_from_provider(self.old, ZONE), self.reference)

    def prepare(self, undo: UndoLog, **kw: Any) -> ZonePrepared:
        options: dict[str, Any] = {"apply": True, "force": False} | kw
        return prepare_new_zone(
            zone_from_provider(self.old, ZONE),
            self.new,
            nameservers=NEW_NS,
            record_undo=undo,
            clock=self.clock,
            new_endpoint=self.new_endpoint,
            old_endpoint=self.reference_endpoint,
            **options,
        )

    def targets(self) -> list[ZoneTarget]:
        return [ZoneTarget("new", self.new, self.new_endpoint), ZoneTarget("old", self.old)]


@pytest.fixture
def world(
    monkeypatch: pytest.MonkeyPatch, powerdns: PowerDnsServer, tmp_path: Path
) -> Iterator[World]:
    with moto_account(monkeypatch, ["us-east-1"]) as account:
        make_zone(account.client("route53"))
        reference = LocalDnsProvider("reference", tmp_path / "reference" / "zones.json")
        with LocalDnsServer(reference.path) as reference_server:
            built = World(
                clock=FrozenClock(datetime(2021, 1, 9, 18, 0, tzinfo=UTC)),
                old=Route53DnsProvider("old", account.client("route53")),
                new=LibcloudDnsProvider(
                    "new", host=powerdns.host, port=powerdns.api_port, key=powerdns.api_key
                ),
                new_endpoint=AuthoritativeEndpoint("127.0.0.1", powerdns.dns_port, "powerdns"),
                reference=reference,
                reference_endpoint=AuthoritativeEndpoint(
                    "127.0.0.1", reference_server.port, "reference (Route53 as read)"
                ),
            )
            built.refresh_reference()
            yield built


def body(provider: DnsProvider) -> dict[tuple[str, str, str], RecordSet]:
    """The zone's content: no apex SOA/NS, no ownership markers, canonical values."""
    return {
        rs.key: rs.canonical()
        for rs in provider.list_records(ZONE)
        if not is_marker(rs) and not (rs.name == ZONE and rs.type in ("SOA", "NS"))
    }


def answer(
    endpoint: AuthoritativeEndpoint, name: str, rtype: str, transport: str
) -> tuple[Any, ...]:
    got = query_authoritative(endpoint, name, rtype, transport=transport)  # type: ignore[arg-type]
    return (got.rcode, got.values)


def test_a_dry_run_prepare_creates_nothing(world: World) -> None:
    undo = UndoLog()
    dry = world.prepare(undo, apply=False)
    assert dry.outcome.dry_run and not dry.zone_created and dry.equivalence is None
    assert dry.plan.counts()["create"] == len(PLAIN_SETS) + 1  # and the flattened alias
    assert world.new.list_zones() == [] and undo.entries == []


def test_the_new_zone_answers_like_the_old_one_record_by_record(world: World) -> None:
    undo = UndoLog()
    powerdns_at_undo_time: list[list[str]] = []

    def record_undo(kind: str, resource: dict[str, Any], description: str) -> None:
        powerdns_at_undo_time.append(
            sorted(f"{rs.name} {rs.type}" for rs in world.new.list_records(ZONE))
        )
        undo(kind, resource, description)

    prepared = world.prepare(record_undo)  # type: ignore[arg-type]
    assert prepared.zone_created and prepared.outcome.ok
    report = prepared.equivalence
    assert report is not None
    assert report.identical, report.summary()
    assert report.old_endpoint.startswith("reference (Route53 as read)")
    assert report.new_endpoint.startswith("powerdns")

    compared = {(c.name, c.type) for c in report.comparisons}
    plain = {(absolute_name(n), t) for n, t, _, _ in PLAIN_SETS}
    assert plain | {(f"alias.{ZONE}", "A")} <= compared  # the in-zone alias, flattened
    assert {c.transport for c in report.comparisons} == {"udp", "tcp"}
    assert any(
        c.name.startswith("exitplan-absent-") and c.old.rcode == "NXDOMAIN"
        for c in report.comparisons
    )
    assert {(n.name, n.type) for n in report.not_compared} == {
        (ZONE, "SOA"),
        (ZONE, "NS"),
        (f"canary.{ZONE}", "A"),
    }
    assert prepared.flattened_aliases == (
        f"alias.{ZONE} A: alias of static.{ZONE} written as its records",
    )
    assert {(s.name, s.set_identifier) for s in prepared.skipped} >= {
        (f"canary.{ZONE}", "blue"),
        (f"canary.{ZONE}", "green"),
    }

    # The undo was recorded once, before PowerDNS held anything but its SOA and NS.
    assert powerdns_at_undo_time == [[f"{ZONE} NS", f"{ZONE} SOA"]]
    ((kind, resource, _),) = undo.entries
    assert kind == "dns_change" and resource["target"] == world.new.describe()
    # Everything written is owned by exitplan.
    assert owned_keys(ZONE, world.new.list_records(ZONE), "exitplan") == set(body(world.new))

    # The stage's result is JSON for the journal and comes back equal.
    assert from_json(ZonePrepared, json.loads(json.dumps(to_json(prepared)))) == prepared
    # A second prepare (a resumed run) finds nothing to do.
    again = world.prepare(UndoLog())
    assert again.plan.empty and not again.zone_created and again.ok


def test_a_deliberately_different_record_is_caught_over_udp_and_tcp(world: World) -> None:
    prepared = world.prepare(UndoLog())
    assert prepared.ok
    api = f"api.{ZONE}"
    world.new.apply(ZONE, [RecordChange("update", RecordSet(api, "A", 60, ("192.0.2.99",)))])
    report = verify_zone_equivalence(
        ZONE,
        zone_from_provider(world.old, ZONE).record_sets,
        old=world.reference_endpoint,
        new=world.new_endpoint,
        clock=world.clock,
    )
    assert not report.identical
    assert [(d.name, d.type, d.transport, d.difference) for d in report.differences] == [
        (api, "A", "udp", "values: old 192.0.2.20; new 192.0.2.99"),
        (api, "A", "tcp", "values: old 192.0.2.20; new 192.0.2.99"),
    ]
    assert report.summary().startswith(f"zone {ZONE}: 2 answer(s) differ")

    # Same data, another TTL: still a difference.
    world.new.apply(ZONE, [RecordChange("update", RecordSet(api, "A", 120, ("192.0.2.20",)))])
    again = verify_zone_equivalence(
        ZONE,
        zone_from_provider(world.old, ZONE).record_sets,
        old=world.reference_endpoint,
        new=world.new_endpoint,
        clock=world.clock,
        transports=("tcp",),
    )
    assert [d.difference for d in again.differences] == ["TTL: old 60, new 120"]


def test_lowering_the_old_ns_ttl_and_a_large_resync_need_force(world: World) -> None:
    world.prepare(UndoLog())
    # The schedule's first step on the old zone: TTLs to 60 s and the NS TTL to 300 s.
    lowering = plan_ttl_lowering(ZONE, world.old, lowered_ttl=60, lowered_ns_ttl=300)
    assert lowering.force_reasons == (f"updates the NS set of {ZONE}",)
    undo = UndoLog()
    with pytest.raises(ThresholdExceeded, match=f"updates the NS set of {ZONE}"):
        apply_plan(
            lowering, world.old, apply=True, force=False, record_undo=undo, clock=world.clock
        )
    assert undo.entries == []
    ns = next(rs for rs in world.old.list_records(ZONE) if rs.type == "NS" and rs.name == ZONE)
    assert ns.ttl == 172800
    done = apply_plan(
        lowering, world.old, apply=True, force=True, record_undo=undo, clock=world.clock
    )
    assert done.ok and len(undo.entries) == 1
    old_ttls = {rs.key: rs.ttl for rs in world.old.list_records(ZONE) if rs.ttl is not None}
    assert old_ttls[(ZONE, "NS", "")] == 300
    assert (
        max(ttl for (name, rtype, _), ttl in old_ttls.items() if rtype not in ("SOA", "NS")) == 60
    )

    # The same lowering in the new zone keeps both identical (no NS change there: no force).
    new_lowering = plan_ttl_lowering(ZONE, world.new, lowered_ttl=60)
    assert not new_lowering.needs_force
    apply_plan(
        new_lowering, world.new, apply=True, force=False, record_undo=undo, clock=world.clock
    )
    world.refresh_reference()
    report = verify_zone_equivalence(
        ZONE,
        zone_from_provider(world.old, ZONE).record_sets,
        old=world.reference_endpoint,
        new=world.new_endpoint,
        clock=world.clock,
    )
    assert report.identical, report.summary()

    # Someone rewrites a third of the old zone: re-syncing the new one needs force.
    r53 = world.old  # 8 sets, and the alias of static follows: 9 of 22
    changed = [
        RecordSet(f"{host}{ZONE}", "A", 60, (f"203.0.113.{i}",))
        for i, host in enumerate(["", "api.", "mx1.", "mx2.", "sip.", "static."])
    ] + [RecordSet(f"{host}{ZONE}", "AAAA", 60, ("2001:db8::99",)) for host in ("", "api.")]
    r53.apply(ZONE, [RecordChange("update", rs) for rs in changed])
    before = world.new.list_records(ZONE)
    with pytest.raises(
        ThresholdExceeded, match=r"changes 9 of the zone.s 22 record sets \(41%, more than 30%\)"
    ):
        world.prepare(UndoLog())
    assert world.new.list_records(ZONE) == before
    forced = world.prepare(UndoLog(), force=True)
    assert forced.outcome.ok
    assert body(world.new)[(f"mx1.{ZONE}", "A", "")].values == ("203.0.113.2",)


def test_records_exitplan_did_not_create_survive(world: World) -> None:
    # The zone exists at the new provider already, with records of its owner's.
    world.new.create_zone(ZONE, nameservers=NEW_NS)
    theirs = RecordSet(f"verify.{ZONE}", "TXT", 300, ('"owner-verification=abc"',))
    clash = RecordSet(f"api.{ZONE}", "A", 60, ("203.0.113.77",))
    world.new.apply(ZONE, [RecordChange("create", theirs), RecordChange("create", clash)])

    prepared = world.prepare(UndoLog())
    assert not prepared.zone_created
    assert {(k.name, k.type) for k in prepared.plan.kept} == {
        (theirs.name, "TXT"),
        (clash.name, "A"),
    }
    assert body(world.new)[theirs.key] == theirs.canonical()
    assert body(world.new)[clash.key] == clash.canonical()
    # Both are visible to the comparison: the clash differs, the extra name is new-only.
    report = prepared.equivalence
    assert report is not None and not prepared.ok
    assert {(d.name, d.type) for d in report.differences} == {
        (clash.name, "A"),
        (theirs.name, "TXT"),
    }

    # A name exitplan created and the source dropped is removed; theirs stays.
    world.old.apply(
        ZONE, [RecordChange("delete", RecordSet(f"sip.{ZONE}", "A", 600, ("192.0.2.30",)))]
    )
    world.prepare(UndoLog())
    assert (f"sip.{ZONE}", "A", "") not in body(world.new)
    for transport in ("udp", "tcp"):
        assert answer(world.new_endpoint, theirs.name, "TXT", transport) == (
            "NOERROR",
            ('"owner-verification=abc"',),
        )
        assert answer(world.new_endpoint, f"sip.{ZONE}", "A", transport)[0] == "NXDOMAIN"


def test_the_flip_waits_for_green_health_then_moves_both_zones(world: World) -> None:
    world.prepare(UndoLog())
    old_before, new_before = body(world.old), body(world.new)
    undo = UndoLog()
    red = HealthVerdict(False, world.clock.now(), "GET / answered 502")

    def flip(health: HealthVerdict, **kw: Any) -> FlipOutcome:
        options: dict[str, Any] = {"apply": True, "force": False} | kw
        return flip_service_records(
            ZONE,
            world.targets(),
            service_names=SERVICES,
            addresses=[NEW_HOST],
            health=health,
            clock=world.clock,
            record_undo=undo,
            **options,
        )

    dry = flip(red, apply=False)
    assert dry.dry_run and [p.purpose for p in dry.plans] == ["flip (new zone)", "flip (old zone)"]
    assert "the health check is not green (GET / answered 502); the flip waits" in dry.warnings
    table = dry.plans[0].table()
    assert f"delete     www.{ZONE}" in table and "create     " in table

    with pytest.raises(HealthNotGreen, match="GET / answered 502"):
        flip(red)
    green = HealthVerdict(True, world.clock.now(), "GET / answered 200")
    not_before = world.clock.now() + timedelta(seconds=300)
    with pytest.raises(FlipTooEarly) as early:
        flip(green, not_before=not_before)
    assert early.value.retry_at == not_before
    assert (body(world.old), body(world.new), undo.entries) == (old_before, new_before, [])

    world.clock.advance(timedelta(seconds=300))
    outcome = flip(green, not_before=not_before)
    assert outcome.ok, outcome
    assert [o.target for o in outcome.outcomes] == [world.new.describe(), world.old.describe()]
    assert [e[1]["target"] for e in undo.entries] == [world.new.describe(), world.old.describe()]
    counts = outcome.plans[0].counts()
    assert counts == {"create": 1, "update": 2, "delete": 3}  # A for www; AAAAs and the CNAME go

    # Asked over DNS on the new zone's server: every service name gives the new host only.
    for transport in ("udp", "tcp"):
        for name in SERVICES:
            assert answer(world.new_endpoint, name, "A", transport) == ("NOERROR", (NEW_HOST,))
            assert answer(world.new_endpoint, name, "AAAA", transport) == ("NOERROR", ())
        assert answer(world.new_endpoint, f"mail.{ZONE}", "CNAME", transport) == (
            "NOERROR",
            (f"mx1.{ZONE}",),
        )
    # The old zone holds the same service records (both identical until the deadline).
    services = {k for k in body(world.new) if k[0] in SERVICES and k[1] in ("A", "AAAA", "CNAME")}
    assert {k: body(world.old)[k] for k in services} == {k: body(world.new)[k] for k in services}
    assert services == {(n, "A", "") for n in SERVICES}
    # Adopted by name, so now owned in both zones.
    for provider in (world.old, world.new):
        assert services <= owned_keys(ZONE, provider.list_records(ZONE), "exitplan")
    assert from_json(FlipOutcome, json.loads(json.dumps(to_json(outcome)))) == outcome


def test_rollback_restores_the_previous_records(world: World) -> None:
    prepare_undo = UndoLog()
    world.prepare(prepare_undo)
    old_before, new_before = body(world.old), body(world.new)
    flip_undo = UndoLog()
    outcome = flip_service_records(
        ZONE,
        world.targets(),
        service_names=SERVICES,
        addresses=[NEW_HOST, "2001:db8:80::1"],
        health=HealthVerdict(True, world.clock.now()),
        clock=world.clock,
        apply=True,
        force=False,
        record_undo=flip_undo,
    )
    assert outcome.ok
    assert answer(world.new_endpoint, f"www.{ZONE}", "AAAA", "udp") == (
        "NOERROR",
        ("2001:db8:80::1",),
    )

    providers: dict[str, DnsProvider] = {p.describe(): p for p in (world.old, world.new)}
    messages = [
        undo_dns_change(resource, providers[resource["target"]])
        for _, resource, _ in reversed(flip_undo.entries)
    ]
    assert messages[0].startswith(f"zone {ZONE} at {world.old.describe()}: restored ")
    assert (body(world.old), body(world.new)) == (old_before, new_before)
    for transport in ("udp", "tcp"):
        assert answer(world.new_endpoint, f"www.{ZONE}", "CNAME", transport) == ("NOERROR", (ZONE,))
        assert answer(world.new_endpoint, ZONE, "A", transport) == (
            "NOERROR",
            ("192.0.2.10", "192.0.2.11"),
        )
    # Idempotent: running the log again changes nothing.
    for _, resource, _ in reversed(flip_undo.entries):
        assert "restored 0 record set(s)" in undo_dns_change(
            resource, providers[resource["target"]]
        )

    # Undoing the prepare empties the new zone of everything exitplan wrote.
    undo_dns_change(prepare_undo.entries[0][1], world.new)
    assert body(world.new) == {}
    assert [rs for rs in world.new.list_records(ZONE) if is_marker(rs)] == []
