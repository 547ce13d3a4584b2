"""Probe logic without a network: requirements, ranking, rendering, fallback.

The providers here are small in-memory ``ComputeProvider`` implementations
(real subclasses, no mocks); the real parts are in
tests/integration/test_probe_hosts.py.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta

import pytest

from orchestrator.clock import Clock, FrozenClock
from orchestrator.errors import FatalError
from orchestrator.inventory import Fact, summarize_inventory
from orchestrator.placement.probe import (
    DATA_HEADROOM,
    GIB,
    OS_DISK_ALLOWANCE_BYTES,
    Requirements,
    format_table,
    probe_candidates,
    requirements_from_inventory,
)
from orchestrator.placement.provision import (
    NoCandidateLeft,
    ProvisionedServer,
    choose_and_provision,
)
from providers.interfaces.compute import (
    AccountStatus,
    ComputeProvider,
    Location,
    NoCapacity,
    Node,
    ProviderRefused,
    ProvisionSpec,
    Quota,
    ReadyHost,
    Size,
)

START = datetime(2021, 1, 10, 12, 0, tzinfo=UTC)


class InMemoryCloud(ComputeProvider):
    """A cloud whose answers are set by the test."""

    capabilities = frozenset({"sizes", "locations", "account", "quota", "destroys"})

    def __init__(
        self,
        name: str,
        *,
        sizes: list[Size],
        status: AccountStatus | None = None,
        available: bool = True,
        estimate_s: float = 60.0,
        provision_error: Exception | None = None,
    ) -> None:
        super().__init__(name)
        self.sizes = sizes
        self.status = status or AccountStatus("active", quota=Quota(5, 1))
        self.available = available
        self.provisioning_estimate_s = estimate_s
        self.provision_error = provision_error
        self.destroyed: list[str] = []

    def check_account(self) -> AccountStatus:
        return self.status

    def list_sizes(self) -> list[Size]:
        return self.sizes

    def list_locations(self) -> list[Location]:
        return [Location("r1", "Region 1", self.available)]

    def provision(self, spec: ProvisionSpec) -> Node:
        if self.provision_error is not None:
            raise self.provision_error
        return Node(
            "n1", spec.name, self.name, "pending", "192.0.2.10", host_key="ssh-ed25519 AAAA"
        )

    def wait_ready(self, node: Node, deadline: datetime, clock: Clock) -> ReadyHost:
        assert node.address and node.host_key
        return ReadyHost(node.address, 22, "root", node.host_key, node.id)

    def destroy(self, node: Node) -> None:
        self.destroyed.append(node.id)


def size(name: str, vcpus: int, ram_gib: int, disk_gib: int, price: float) -> Size:
    return Size(name, vcpus, ram_gib * GIB, disk_gib * GIB, price, ("r1",))


SIZES = [
    size("small", 1, 1, 25, 0.01),
    size("medium", 2, 4, 80, 0.04),
    size("large", 4, 8, 160, 0.08),
]
NEEDS = Requirements(vcpus=2, ram_bytes=2 * GIB, disk_bytes=50 * GIB, data_bytes=10 * GIB)


def probe(*providers: ComputeProvider, needs: Requirements = NEEDS):  # type: ignore[no-untyped-def]
    return probe_candidates(list(providers), needs, budget_s=5, clock=FrozenClock(START))


# -- requirements -------------------------------------------------------------


def test_requirements_from_inventory_and_instance() -> None:
    summary = summarize_inventory(
        [
            Fact("s3", "us-east-1", "media", {"bytes": 10 * GIB}),
            Fact("rds", "us-east-1", "db", {"bytes": 2 * GIB}),
        ]
    )
    instance = Fact(
        "ec2",
        "us-east-1",
        "i-1",
        {
            "instance_type": "t3.medium",
            "vcpus": 2,
            "memory_mib": 4096,
            "security_groups": [
                {
                    "id": "sg-1",
                    "open_ports": [
                        {"protocol": "tcp", "from_port": 443, "to_port": 443, "sources": []},
                        {"protocol": "tcp", "from_port": 22, "to_port": 22, "sources": []},
                        {"protocol": "tcp", "from_port": 8000, "to_port": 8001, "sources": []},
                        {"protocol": "tcp", "from_port": 0, "to_port": 65535, "sources": []},
                        {"protocol": "-1", "from_port": None, "to_port": None, "sources": []},
                    ],
                }
            ],
        },
    )
    needs = requirements_from_inventory(summary, instance)
    assert (needs.vcpus, needs.ram_bytes) == (2, 4 * GIB)
    assert needs.data_bytes == 12 * GIB
    assert needs.disk_bytes == math.ceil(12 * GIB * (1 + DATA_HEADROOM)) + OS_DISK_ALLOWANCE_BYTES
    assert needs.ports == frozenset({443, 8000, 8001})


def test_an_instance_type_aws_does_not_describe_is_an_error_naming_it() -> None:
    # The inventory leaves vcpus/memory out when DescribeInstanceTypes does not know the type;
    # guessing "1 vCPU, 512 MiB" could pick a host the service does not fit.
    with pytest.raises(FatalError, match=r"'x9\.mega'.*did not describe"):
        requirements_from_inventory(summarize_inventory([]), {"instance_type": "x9.mega"})


def test_sizes_come_from_describe_instance_types_in_the_inventory(sandbox_account) -> None:
    from orchestrator.inventory import collect_inventory

    instances = [f for f in collect_inventory(sandbox_account) if f.kind == "ec2"]
    assert instances
    for fact in instances:
        described = sandbox_account.client("ec2").describe_instance_types(
            InstanceTypes=[fact.attributes["instance_type"]]
        )["InstanceTypes"][0]
        assert fact.attributes["vcpus"] == described["VCpuInfo"]["DefaultVCpus"]
        assert fact.attributes["memory_mib"] == described["MemoryInfo"]["SizeInMiB"]


# -- ranking ------------------------------------------------------------------------


def test_cheapest_fitting_size_is_chosen_and_fit_ranks_by_time_to_ready() -> None:
    slow = InMemoryCloud("slow", sizes=SIZES, estimate_s=600)
    fast = InMemoryCloud("fast", sizes=SIZES, estimate_s=30)
    report = probe(slow, fast)
    assert [(r.candidate, r.size, r.rank) for r in report.results] == [
        ("fast", "medium", 1),
        ("slow", "medium", 2),
    ]
    # 30 s to provision + 10 GiB at the assumed 12.5 MB/s.
    assert report.results[0].estimated_ready_s == pytest.approx(30 + 10 * GIB / 12.5e6)


def test_refusals_and_misfits_rank_below_every_fit() -> None:
    report = probe(
        InMemoryCloud("locked", sizes=SIZES, status=AccountStatus("locked", "billing review")),
        InMemoryCloud("tiny", sizes=SIZES[:1], estimate_s=1),
        InMemoryCloud("full", sizes=SIZES, available=False, estimate_s=1),
        InMemoryCloud("quota", sizes=SIZES, status=AccountStatus("active", quota=Quota(3, 3))),
        InMemoryCloud("ok", sizes=SIZES, estimate_s=900),
    )
    assert [(r.candidate, r.status, r.refusal) for r in report.results] == [
        ("ok", "fit", None),
        ("tiny", "unfit", None),
        ("full", "refused", "no_capacity"),
        ("locked", "refused", "locked"),
        ("quota", "refused", "no_capacity"),
    ]
    assert "1 vCPU, needs 2" in report.results[1].reasons[0]
    assert report.results[3].reasons == ["billing review"]


def test_report_renders_as_json_and_a_plain_table() -> None:
    report = probe(InMemoryCloud("ok", sizes=SIZES), InMemoryCloud("tiny", sizes=SIZES[:1]))
    data = json.loads(report.to_json())
    assert data["probed_at"] == START.isoformat()
    assert [r["candidate"] for r in data["results"]] == ["ok", "tiny"]
    assert data["requirements"]["vcpus"] == 2
    table = format_table(report)
    lines = table.splitlines()
    assert lines[0].split()[:4] == ["#", "candidate", "target", "status"]
    assert lines[1].split()[:4] == ["1", "ok", "medium@r1", "fit"]
    assert "size small has 1 vCPU, needs 2" in table
    assert "\x1b[" not in table  # plain text, no terminal styling


# -- provisioning down the ranking -------------------------------------------------


class UndoLog:
    """What the place step gives ``choose_and_provision``: a list of live servers."""

    def __init__(self) -> None:
        self.live: dict[int, str] = {}

    def record(self, candidate: str, target: str, node: Node) -> int:
        self.live[len(self.live) + 1] = f"{candidate}:{node.id}"
        return len(self.live)

    def settle(self, undo_id: int) -> None:
        del self.live[undo_id]


def test_fallback_records_each_refusal_and_returns_the_first_ready() -> None:
    full = InMemoryCloud(
        "full", sizes=SIZES, estimate_s=1, provision_error=NoCapacity("region full")
    )
    locked = InMemoryCloud(
        "locked", sizes=SIZES, estimate_s=2, provision_error=ProviderRefused("locked", "locked")
    )
    ok = InMemoryCloud("ok", sizes=SIZES, estimate_s=3)
    report = probe(full, locked, ok)
    undo = UndoLog()
    placement, attempts = choose_and_provision(
        report,
        {"full": full, "locked": locked, "ok": ok},
        name="web",
        authorized_key="ssh-ed25519 AAAA client",
        key_file=None,
        deadline=START + timedelta(minutes=5),
        clock=FrozenClock(START),
        record_server=undo.record,
        settle_server=undo.settle,
    )
    assert placement.candidate == "ok" and placement.address == "192.0.2.10"
    assert placement.host_key == "ssh-ed25519 AAAA" and placement.node_id == "n1"
    assert [(a.candidate, a.outcome) for a in attempts] == [
        ("full", "no_capacity"),
        ("locked", "locked"),
        ("ok", "ready"),
    ]
    # The chosen server is in the undo log from the moment it existed.
    assert list(undo.live.values()) == ["ok:n1"]


def test_a_server_recorded_before_a_crash_is_reused_not_provisioned_again() -> None:
    ok = InMemoryCloud("ok", sizes=SIZES, estimate_s=3, provision_error=NoCapacity("no second"))
    report = probe(ok)
    earlier = Node("n1", "web", "ok", "pending", "192.0.2.10", host_key="ssh-ed25519 AAAA")
    undo = UndoLog()
    placement, attempts = choose_and_provision(
        report,
        {"ok": ok},
        name="web",
        authorized_key="",
        key_file=None,
        deadline=START + timedelta(minutes=5),
        clock=FrozenClock(START),
        record_server=undo.record,
        settle_server=undo.settle,
        earlier=[ProvisionedServer(7, "ok", report.results[0].target, earlier)],
    )
    assert placement.node_id == "n1"
    assert [a.outcome for a in attempts] == ["reused"]
    assert undo.live == {} and ok.destroyed == []


def test_nothing_left_raises_with_the_attempts() -> None:
    full = InMemoryCloud("full", sizes=SIZES, provision_error=NoCapacity("region full"))
    report = probe(full)
    undo = UndoLog()
    with pytest.raises(NoCandidateLeft, match="full") as none_left:
        choose_and_provision(
            report,
            {"full": full},
            name="web",
            authorized_key="",
            key_file=None,
            deadline=START,
            clock=FrozenClock(START),
            record_server=undo.record,
            settle_server=undo.settle,
        )
    assert [a.outcome for a in none_left.value.attempts] == ["no_capacity"]
