"""The probe against real parts: sshd hosts on 127.0.0.x (one an impostor, one
down) and libcloud's DigitalOcean driver talking to the loopback stand-in."""

from __future__ import annotations

import os
import time
from datetime import timedelta
from pathlib import Path

import pytest

from orchestrator.clock import SystemClock
from orchestrator.placement.probe import (
    MIB,
    ProbeReport,
    Requirements,
    format_table,
    probe_candidates,
)
from orchestrator.placement.provision import NoCandidateLeft, choose_and_provision
from providers.compute import LibcloudComputeProvider, SshPoolProvider
from providers.interfaces.compute import ComputeProvider, Node, ProvisionSpec
from providers.ssh import SshHost
from tests.support.digitalocean import DigitalOceanStandIn
from tests.support.digitalocean import digitalocean as digitalocean  # the fixture
from tests.support.sshd import KeyPair, SshdServer
from tests.support.sshd import down_address as down_address
from tests.support.sshd import ssh_client_key as ssh_client_key
from tests.support.sshd import sshd_host as sshd_host
from tests.support.sshd import sshd_impostor as sshd_impostor

SMALL = Requirements(vcpus=1, ram_bytes=16 * MIB, disk_bytes=64 * MIB, data_bytes=256 * MIB)


def entry(address: str, port: int, host_key: str, key: KeyPair, user: str) -> dict[str, object]:
    return {
        "address": address,
        "port": port,
        "user": user,
        "host_key": host_key,
        "key_file": key.private,
    }


@pytest.fixture
def pool(
    sshd_host: SshdServer,
    sshd_impostor: SshdServer,
    down_address: tuple[str, int],
    ssh_client_key: KeyPair,
    tmp_path: Path,
) -> SshPoolProvider:
    good = sshd_host.host_key.public_key
    return SshPoolProvider(
        "colo",
        hosts=[
            entry(sshd_host.address, sshd_host.port, good, ssh_client_key, sshd_host.user),
            # The impostor answers at its own address, but we pinned the good key.
            entry(sshd_impostor.address, sshd_impostor.port, good, ssh_client_key, sshd_host.user),
            entry(*down_address, good, ssh_client_key, sshd_host.user),
        ],
        state_file=tmp_path / "claims.json",
        poll_interval_s=0.05,
    )


def cloud(standin: DigitalOceanStandIn, name: str, **overrides: object) -> LibcloudComputeProvider:
    options = standin.candidate_options(**overrides)
    options.pop("size")  # let the probe pick the cheapest size that fits
    return LibcloudComputeProvider(name, **options)  # type: ignore[arg-type]


def probe(providers: list[ComputeProvider], requirements: Requirements) -> ProbeReport:
    return probe_candidates(
        providers,
        requirements,
        budget_s=15,
        clock=SystemClock(),
        bandwidth_sample_bytes=1 * MIB,
    )


def rows(report: ProbeReport) -> list[tuple[str, str, str | None]]:
    return [(r.candidate, r.status, r.refusal) for r in report.results]


def test_ranks_fitting_hosts_first_and_refuses_impostor_down_locked(
    pool: SshPoolProvider,
    sshd_host: SshdServer,
    sshd_impostor: SshdServer,
    down_address: tuple[str, int],
    digitalocean: DigitalOceanStandIn,
) -> None:
    do = cloud(digitalocean, "do")
    locked_standin_token = "locked-token"
    locked = cloud(digitalocean, "do-bad-token", key=locked_standin_token)
    started = time.monotonic()
    report = probe([pool, do, locked], SMALL)
    assert time.monotonic() - started < 15

    by_target = {(r.candidate, r.target): r for r in report.results}
    good = by_target[("colo", f"{sshd_host.address}:{sshd_host.port}")]
    impostor = by_target[("colo", f"{sshd_impostor.address}:{sshd_impostor.port}")]
    down = by_target[("colo", f"{down_address[0]}:{down_address[1]}")]
    cloud_row = next(r for r in report.results if r.candidate == "do")

    # Measured host first (nothing to provision), then the cloud, then refusals.
    assert report.results[0] is good and good.status == "fit"
    assert good.bandwidth_measured and good.bandwidth_bps and good.rtt_s is not None
    assert good.os and good.disk_free_bytes and good.vcpus
    assert report.results[1] is cloud_row and cloud_row.status == "fit"
    assert cloud_row.size == "s-1vcpu-1gb" and cloud_row.location == "ams3"
    assert cloud_row.servers_left == 10
    assert impostor.refusal == "host_key" and "does not match" in impostor.reasons[0]
    assert down.refusal == "host_down"
    refused = by_target[("do-bad-token", "account")]
    assert refused.refusal == "auth"
    assert [r.status for r in report.results[2:]] == ["refused"] * 3
    assert [r.rank for r in report.results] == list(range(1, 6))

    table = format_table(report)
    assert "refused:host_key" in table and "refused:auth" in table
    assert locked_standin_token not in table and locked_standin_token not in report.to_json()


def test_too_little_disk_ranks_below_a_cloud_size_that_fits(
    pool: SshPoolProvider, digitalocean: DigitalOceanStandIn
) -> None:
    stats = os.statvfs("/")
    free = stats.f_bavail * stats.f_frsize
    # More than this disk holds, less than the largest stand-in size (160 GiB).
    needs = Requirements(vcpus=1, ram_bytes=16 * MIB, disk_bytes=free + 1024 * MIB)
    if needs.disk_bytes > 150 * 1024**3:
        pytest.skip("this machine has more free disk than the stand-in's largest size")
    report = probe([pool, cloud(digitalocean, "do")], needs)
    assert report.results[0].candidate == "do" and report.results[0].status == "fit"
    host_row = report.results[1]
    assert host_row.candidate == "colo" and host_row.status == "unfit"
    assert "free at /" in host_row.reasons[0]


def test_locked_and_full_accounts_are_marked(digitalocean: DigitalOceanStandIn) -> None:
    digitalocean.mode = "locked"
    locked = probe([cloud(digitalocean, "do")], SMALL).results[0]
    assert (locked.status, locked.refusal) == ("refused", "locked")
    assert "locked" in locked.reasons[0]
    digitalocean.mode = "full"
    full = probe([cloud(digitalocean, "do")], SMALL).results[0]
    assert (full.status, full.refusal) == ("refused", "no_capacity")


def test_provisioning_falls_back_to_the_next_candidate(
    pool: SshPoolProvider,
    sshd_host: SshdServer,
    ssh_client_key: KeyPair,
    digitalocean: DigitalOceanStandIn,
    tmp_path: Path,
) -> None:
    do = cloud(digitalocean, "do")
    report = probe([pool, do], SMALL)
    assert [r.candidate for r in report.fitting] == ["colo", "do"]
    # Between probe and provision another run claims the pool host.
    good = entry(
        sshd_host.address,
        sshd_host.port,
        sshd_host.host_key.public_key,
        ssh_client_key,
        sshd_host.user,
    )
    other_run = SshPoolProvider("colo", hosts=[good], state_file=tmp_path / "claims.json")
    other_run.provision(ProvisionSpec("someone-else"))
    clock = SystemClock()
    recorded: list[str] = []
    placement, attempts = choose_and_provision(
        report,
        {"colo": pool, "do": do},
        name="web",
        authorized_key=ssh_client_key.public_line,
        key_file=ssh_client_key.private,
        deadline=clock.now() + timedelta(seconds=20),
        clock=clock,
        record_server=lambda candidate, target, node: recorded.append(node.id) or len(recorded),
        settle_server=lambda undo_id: None,
    )
    assert [(a.candidate, a.outcome) for a in attempts] == [
        ("colo", "no_capacity"),
        ("do", "ready"),
    ]
    assert placement.candidate == "do"
    assert recorded == [placement.node_id]  # in the undo log before it was waited for
    ready = placement.ready_host()
    with SshHost(
        ready.address, ready.port, user=ready.user, host_key=ready.host_key, key_file=ready.key_file
    ) as host:
        assert host.run(["echo", "moved"], timeout=10).check().stdout == b"moved\n"
    do.destroy(Node(id=ready.node_id, name="web", provider="do", state="running"))
    assert digitalocean.droplets == {}


def test_when_every_candidate_fails_the_attempts_say_why(
    digitalocean: DigitalOceanStandIn, ssh_client_key: KeyPair
) -> None:
    do = cloud(digitalocean, "do")
    report = probe([do], SMALL)
    digitalocean.mode = "full"  # capacity ran out after the probe
    clock = SystemClock()
    with pytest.raises(NoCandidateLeft) as none_left:
        choose_and_provision(
            report,
            {"do": do},
            name="web",
            authorized_key=ssh_client_key.public_line,
            key_file=ssh_client_key.private,
            deadline=clock.now() + timedelta(seconds=5),
            clock=clock,
            record_server=lambda candidate, target, node: 1,
            settle_server=lambda undo_id: None,
        )
    assert [(a.candidate, a.outcome) for a in none_left.value.attempts] == [("do", "no_capacity")]
    assert digitalocean.droplets == {}
