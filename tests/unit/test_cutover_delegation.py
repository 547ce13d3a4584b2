"""The delegation step: the approval text, a registrar hook with undo, the parent asked over DNS.

The registrar stand-in publishes into a parent zone ("example.") held by the
local DNS target and served on 127.0.0.1, so the check asks a real server
for the referral, as a resolver would ask the TLD's servers.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from orchestrator.clock import FrozenClock
from orchestrator.cutover import ScheduleInputs, ZoneTtls, compute_schedule
from orchestrator.cutover.delegation import (
    DELEGATION_UNDO_KIND,
    change_delegation,
    delegation_request,
    undo_delegation,
    verify_delegation,
)
from orchestrator.cutover.query import AuthoritativeEndpoint
from orchestrator.errors import ConfigError
from providers.dns_local import LocalDnsProvider, LocalDnsServer
from providers.interfaces.dns import RecordChange, RecordSet

NOTICE = datetime(2021, 1, 9, 18, 0, tzinfo=UTC)
ZONE = "microblog.example."
OLD_NS = ("ns-1.awsdns-01.org.", "ns-2.awsdns-02.com.")
NEW_NS = ("ns1.new-dns.example.net.", "ns2.new-dns.example.net.")


class ParentZoneRegistrar:
    """A registrar whose changes are published in a parent zone served over DNS."""

    name = "loopback-registrar"

    def __init__(self, parent: LocalDnsProvider) -> None:
        self.parent = parent

    def get_nameservers(self, zone: str) -> list[str]:
        found = [rs for rs in self.parent.list_records("example.") if rs.name == zone]
        return [v for rs in found if rs.type == "NS" for v in rs.values]

    def set_nameservers(self, zone: str, nameservers: Sequence[str]) -> None:
        self.parent.apply(
            "example.", [RecordChange("update", RecordSet(zone, "NS", 172800, tuple(nameservers)))]
        )


@pytest.fixture
def parent(tmp_path: Path) -> Iterator[tuple[LocalDnsProvider, AuthoritativeEndpoint]]:
    provider = LocalDnsProvider("tld", tmp_path / "tld.json")
    provider.create_zone("example.", nameservers=["a.tld-servers.test."])
    provider.apply("example.", [RecordChange("create", RecordSet(ZONE, "NS", 172800, OLD_NS))])
    with LocalDnsServer(provider.path) as server:
        yield provider, AuthoritativeEndpoint(server.host, server.port, "parent")


def schedule(now: datetime, hook: str | None = None) -> Any:
    ttls = ZoneTtls(ZONE, 300, 300, 172800, 900)
    return compute_schedule(
        ScheduleInputs(
            zone=ZONE,
            notice=NOTICE,
            deadline=NOTICE + timedelta(hours=30),
            safety_margin=timedelta(minutes=30),
            ttls=ttls,
            new_nameservers=NEW_NS,
            registrar_hook=hook,
        ),
        FrozenClock(now),
    )


def test_the_approval_names_the_exact_ns_set_and_the_forecast() -> None:
    request = delegation_request(schedule(NOTICE))
    assert request.via == "approval" and request.nameservers == NEW_NS
    assert request.due_by == NOTICE + timedelta(hours=1)
    assert request.instruction.splitlines() == [
        "At the registrar of microblog.example, replace the name servers with exactly these 2 "
        "(and remove every other, in particular every awsdns one), by 2021-01-09T19:00+00:00:",
        "  ns1.new-dns.example.net",
        "  ns2.new-dns.example.net",
        "Predicted: 40% of resolvers will still ask the old servers at the deadline; all will "
        "have moved by 2021-01-11T19:00+00:00.",
    ]


def test_a_registrar_hook_changes_the_delegation_with_undo_recorded_first(
    parent: tuple[LocalDnsProvider, AuthoritativeEndpoint],
) -> None:
    provider, endpoint = parent
    registrar = ParentZoneRegistrar(provider)
    assert verify_delegation(endpoint, ZONE, OLD_NS).matches
    assert not verify_delegation(endpoint, ZONE, NEW_NS).matches

    request = delegation_request(schedule(NOTICE, "loopback-registrar"), hook_name=registrar.name)
    undo: list[tuple[str, dict[str, Any], str]] = []

    def record_undo(kind: str, resource: dict[str, Any], description: str) -> None:
        assert registrar.get_nameservers(ZONE) == list(OLD_NS)  # not changed yet
        undo.append((kind, resource, description))

    clock = FrozenClock(NOTICE + timedelta(minutes=12))
    outcome = change_delegation(request, registrar, record_undo=record_undo, clock=clock)
    assert (outcome.previous, outcome.nameservers, outcome.already) == (OLD_NS, NEW_NS, False)
    assert outcome.changed_at == clock.now()
    check = verify_delegation(endpoint, ZONE, NEW_NS)
    assert check.matches
    assert [(t, code) for t, code, _ in check.answers] == [("udp", "NOERROR"), ("tcp", "NOERROR")]

    # Again: already in place, nothing recorded.
    again = change_delegation(request, registrar, record_undo=record_undo, clock=clock)
    assert again.already and len(undo) == 1
    ((kind, resource, _),) = undo
    assert kind == DELEGATION_UNDO_KIND
    assert undo_delegation(resource, registrar) == (
        f"delegation of {ZONE}: restored to {', '.join(OLD_NS)}"
    )
    assert verify_delegation(endpoint, ZONE, OLD_NS).matches
    assert "already" in undo_delegation(resource, registrar)


def test_a_request_for_approval_is_not_sent_to_a_hook(
    parent: tuple[LocalDnsProvider, AuthoritativeEndpoint],
) -> None:
    registrar = ParentZoneRegistrar(parent[0])
    with pytest.raises(ConfigError, match="via approval, not the registrar hook"):
        change_delegation(
            delegation_request(schedule(NOTICE)),
            registrar,
            record_undo=lambda *a: None,
            clock=FrozenClock(NOTICE),
        )
    assert registrar.get_nameservers(ZONE) == list(OLD_NS)
