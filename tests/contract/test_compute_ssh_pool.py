"""``SshPoolProvider`` passes the ComputeProvider contract against real sshd hosts."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from orchestrator.clock import FrozenClock, SystemClock
from orchestrator.errors import ConfigError
from providers.compute import SshPoolProvider
from providers.interfaces.compute import NoCapacity, NotReady, ProvisionSpec
from providers.interfaces.host import HostKeyMismatch
from tests.contract.compute_contract import ComputeContract
from tests.support.sshd import KeyPair, SshdServer


def pool_entry(server: SshdServer, key: KeyPair, host_key: str | None = None) -> dict[str, object]:
    return {
        "address": server.address,
        "port": server.port,
        "user": server.user,
        "host_key": host_key or server.host_key.public_key,
        "key_file": key.private,
    }


class TestSshPool(ComputeContract):
    __test__ = True

    @pytest.fixture
    def login_key(self, ssh_client_key: KeyPair) -> KeyPair:
        return ssh_client_key

    @pytest.fixture
    def provider(self, sshd_host: SshdServer, ssh_client_key: KeyPair) -> Iterator[SshPoolProvider]:
        yield SshPoolProvider("pool", hosts=[pool_entry(sshd_host, ssh_client_key)])


def test_claims_run_out_and_come_back(sshd_host: SshdServer, ssh_client_key: KeyPair) -> None:
    pool = SshPoolProvider("pool", hosts=[pool_entry(sshd_host, ssh_client_key)])
    node = pool.provision(ProvisionSpec("a"))
    with pytest.raises(NoCapacity, match="already claimed"):
        pool.provision(ProvisionSpec("b"))
    pool.destroy(node)
    assert pool.provision(ProvisionSpec("c")).id == node.id


def test_a_state_file_shares_claims_between_runs(
    sshd_host: SshdServer, ssh_client_key: KeyPair, tmp_path: Path
) -> None:
    hosts = [pool_entry(sshd_host, ssh_client_key)]
    first = SshPoolProvider("pool", hosts=hosts, state_file=tmp_path / "claims.json")
    second = SshPoolProvider("pool", hosts=hosts, state_file=tmp_path / "claims.json")
    node = first.provision(ProvisionSpec("a"))
    assert second.existing_hosts() == []
    with pytest.raises(NoCapacity):
        second.provision(ProvisionSpec("b"))
    second.destroy(node)
    assert [h.node_id for h in first.existing_hosts()] == [node.id]


def test_an_impostor_is_refused_at_once(
    sshd_host: SshdServer, sshd_impostor: SshdServer, ssh_client_key: KeyPair
) -> None:
    # The impostor's address, the good host's key pinned.
    entry = pool_entry(sshd_impostor, ssh_client_key, host_key=sshd_host.host_key.public_key)
    pool = SshPoolProvider("pool", hosts=[entry], poll_interval_s=0.05)
    node = pool.provision(ProvisionSpec("a"))
    clock = SystemClock()
    with pytest.raises(HostKeyMismatch):
        pool.wait_ready(node, clock.now() + timedelta(seconds=30), clock)


def test_a_down_host_is_not_ready_by_the_deadline(
    down_address: tuple[str, int], ssh_client_key: KeyPair
) -> None:
    address, port = down_address
    entry = {
        "address": address,
        "port": port,
        "user": "root",
        "host_key": ssh_client_key.public_key,
        "key_file": ssh_client_key.private,
    }
    pool = SshPoolProvider("pool", hosts=[entry])
    node = pool.provision(ProvisionSpec("a"))
    clock = FrozenClock(SystemClock().now())
    with pytest.raises(NotReady, match=f"{address}:{port}"):
        pool.wait_ready(node, clock.now(), clock)  # deadline already reached: one try


def test_a_malformed_host_key_is_a_config_error(
    sshd_host: SshdServer, ssh_client_key: KeyPair
) -> None:
    with pytest.raises(ConfigError, match="host_key"):
        SshPoolProvider("pool", hosts=[pool_entry(sshd_host, ssh_client_key, "ssh-ed25519 !!")])
