"""The EC2 descriptor a playbook reads: sizes, ports, start-up scripts, load balancers.

Exported from the seeded sandbox (module-scoped, read-only) through the real
TransferEngine into a local destination, then read back with yaml.safe_load.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from orchestrator.clock import SystemClock
from orchestrator.events import EventBus, ItemFinished
from orchestrator.export.exporters.base import load_exporter
from orchestrator.export.exporters.ec2 import (
    DESCRIPTOR_FORMAT,
    Ec2Exporter,
    port_label,
    render_descriptor,
)
from orchestrator.export.transfer import Destination, TransferEngine, TransferSettings
from orchestrator.plan.priorities import Prioritizer
from orchestrator.run.journal import Journal
from orchestrator.run.progress import RunProgress
from orchestrator.sandbox.account import (
    DB_SECURITY_GROUP,
    LOAD_BALANCER_NAME,
    SANDBOX_AMI_ID,
    SANDBOX_REGION,
    TARGET_GROUP_NAME,
    WEB_SECURITY_GROUP,
    WEB_USER_DATA,
    Sandbox,
)
from providers.storage import LocalObjectStore

DESCRIPTOR_KEY = f"ec2/{SANDBOX_REGION}/descriptor.yaml"


def export(sandbox: Sandbox, tmp: Path, journal: Journal) -> list[str]:
    """Run the exporter once into ``tmp/vault``; the statuses of the items it finished."""
    events = EventBus()
    seen: list[str] = []
    events.subscribe(lambda e: seen.append(e.status) if isinstance(e, ItemFinished) else None)
    run_id = journal.start_run("export", None, {})
    engine = TransferEngine(
        destinations=[Destination("vault", LocalObjectStore("vault", tmp / "vault"))],
        journal=journal,
        run_id=run_id,
        events=events,
        progress=RunProgress(
            run_id=run_id, journal=journal, events=events, clock=SystemClock(), deadline=None
        ),
        settings=TransferSettings(concurrency=2, max_backoff_s=0.01),
    )
    try:
        engine.export(Ec2Exporter(sandbox.account, tier_of=Prioritizer([])))
    finally:
        engine.close()
    return seen


@pytest.fixture(scope="module")
def exported(sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The descriptor as written to the destination, parsed, with the run's bookkeeping."""
    tmp = tmp_path_factory.mktemp("ec2")
    journal = Journal(tmp / "journal.sqlite")
    first = export(sandbox, tmp, journal)
    second = export(sandbox, tmp, journal)
    raw = (tmp / "vault" / DESCRIPTOR_KEY).read_bytes()
    return {"doc": yaml.safe_load(raw), "raw": raw, "first": first, "second": second}


def by_name(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {i["name"]: i for i in doc["instances"]}


def test_one_descriptor_is_written_then_skipped_while_nothing_changes(exported):
    assert exported["first"] == ["verified"]
    assert exported["second"] == ["skipped"]


def test_the_descriptor_round_trips_through_safe_load_byte_for_byte(exported):
    doc = exported["doc"]
    assert doc["format"] == DESCRIPTOR_FORMAT
    assert doc["region"] == SANDBOX_REGION
    assert render_descriptor(doc) == exported["raw"]
    assert b"&id" not in exported["raw"]  # no anchors for a playbook to chase


def test_every_instance_has_its_size_image_disks_and_network(exported, sandbox):
    instances = by_name(exported["doc"])
    assert sorted(instances) == ["web-1", "web-2", "worker-1"]
    for name, instance in instances.items():
        assert instance["id"] == sandbox.summary.instance_ids[name]
        assert instance["image"]["id"] == SANDBOX_AMI_ID
        assert instance["image"]["name"]  # AMI name from DescribeImages
        assert instance["network"]["vpc_id"] == sandbox.summary.vpc_id
        assert instance["network"]["private_ip"].startswith("10.20.")
        assert instance["tags"] == {"Name": name, "app": "microblog"}
    assert (instances["web-1"]["instance_type"], instances["web-1"]["vcpus"]) == ("t3.medium", 2)
    assert instances["web-1"]["memory_mib"] == 4096
    assert instances["worker-1"]["memory_mib"] == 8192
    worker_disks = [(d["role"], d["device"], d["size_gib"]) for d in instances["worker-1"]["disks"]]
    assert worker_disks == [("root", "/dev/xvda", 20), ("data", "/dev/sdf", 8)]
    assert instances["web-2"]["disks"][0]["type"] == "gp3"


def test_open_ports_and_the_database_rule_from_the_web_group(exported, sandbox):
    doc = exported["doc"]
    web = by_name(doc)["web-1"]
    (group,) = web["security_groups"]
    assert group["name"] == WEB_SECURITY_GROUP
    assert [(r["protocol"], r["from_port"], r["sources"]) for r in group["ingress"]] == [
        ("tcp", 22, ["0.0.0.0/0"]),
        ("tcp", 80, ["0.0.0.0/0"]),
        ("tcp", 443, ["0.0.0.0/0"]),
    ]
    assert web["open_ports"] == ["22/tcp", "80/tcp", "443/tcp"]
    groups = {g["name"]: g for g in doc["security_groups"]}
    assert set(groups) == {WEB_SECURITY_GROUP, DB_SECURITY_GROUP}  # default groups are noise
    (db_rule,) = groups[DB_SECURITY_GROUP]["ingress"]
    web_id = sandbox.summary.security_group_ids[WEB_SECURITY_GROUP]
    assert (db_rule["ports"], db_rule["sources"]) == (
        "5432/tcp",
        [f"sg:{web_id} ({WEB_SECURITY_GROUP})"],
    )


def test_user_data_is_the_decoded_start_up_script(exported):
    instances = by_name(exported["doc"])
    assert instances["web-1"]["user_data"] == WEB_USER_DATA
    assert instances["worker-1"]["user_data"] is None
    assert b"user_data: |" in exported["raw"]  # a readable block, not an escaped line


def test_the_load_balancer_listeners_target_group_and_targets(exported, sandbox):
    (lb,) = exported["doc"]["load_balancers"]
    assert lb["name"] == LOAD_BALANCER_NAME
    assert [(x["port"], x["protocol"]) for x in lb["listeners"]] == [(80, "HTTP"), (443, "HTTPS")]
    assert lb["listeners"][1]["certificate_arns"] == [sandbox.summary.certificate_arn]
    assert lb["listeners"][0]["default_actions"][0]["target_group"] == TARGET_GROUP_NAME
    (tg,) = lb["target_groups"]
    assert tg["health_check"]["path"] == "/healthz"
    assert [(t["name"], t["port"]) for t in tg["targets"]] == [("web-1", 80), ("web-2", 80)]


def test_the_service_summary_sizes_one_host_for_everything(exported):
    service = exported["doc"]["service"]
    assert service == {
        "instances": 3,
        "vcpus": 6,  # t3.medium 2 + 2, t3.large 2
        "memory_mib": 4096 + 4096 + 8192,
        "disk_gib": 16 + 16 + 20 + 8,
        "open_ports": ["22/tcp", "80/tcp", "443/tcp"],
        "listener_ports": [80, 443],
        "start_up_scripts": 2,
    }


def test_the_registry_finds_the_ec2_exporter() -> None:
    assert load_exporter("ec2") is Ec2Exporter


@pytest.mark.parametrize(
    ("protocol", "low", "high", "label"),
    [
        ("tcp", 22, 22, "22/tcp"),
        ("UDP", 1000, 2000, "1000-2000/udp"),
        ("-1", None, None, "all/all"),
        ("icmp", -1, -1, "all/icmp"),
    ],
)
def test_port_labels(protocol: str, low: int | None, high: int | None, label: str) -> None:
    assert port_label(protocol, low, high) == label
