"""The contract every ``ComputeProvider`` passes.

A provider's test module subclasses ``ComputeContract`` and provides
``provider`` (ready to provision one server) and ``login_key`` (the client
key pair the server must let in). Optional abilities are asked for through
``capabilities``; a missing one is a skip that says so, never a pass.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta

import pytest

from orchestrator.clock import SystemClock
from orchestrator.errors import ExitplanError
from providers.compute import open_host
from providers.interfaces.compute import (
    AccountStatus,
    ComputeProvider,
    Node,
    ProvisionSpec,
    ReadyHost,
)
from tests.support.sshd import KeyPair

KNOWN_CAPABILITIES = frozenset(
    {"sizes", "locations", "account", "quota", "pre_arranged", "destroys", "local"}
)
READY_WITHIN = timedelta(seconds=20)


def require(provider: ComputeProvider, capability: str) -> None:
    if capability not in provider.capabilities:
        pytest.skip(f"{provider.describe()} does not declare {capability!r}")


class ComputeContract:
    """Behaviour every ``ComputeProvider`` shows. Subclass and provide the fixtures."""

    __test__ = False

    @pytest.fixture
    def provider(self) -> Iterator[ComputeProvider]:
        raise NotImplementedError("a ComputeContract subclass must provide `provider`")

    @pytest.fixture
    def login_key(self) -> KeyPair:
        raise NotImplementedError("a ComputeContract subclass must provide `login_key`")

    @pytest.fixture
    def spec(self, login_key: KeyPair) -> ProvisionSpec:
        return ProvisionSpec(
            name="exitplan-contract",
            authorized_key=login_key.public_line,
            key_file=login_key.private,
        )

    @pytest.fixture
    def node(self, provider: ComputeProvider, spec: ProvisionSpec) -> Iterator[Node]:
        node = provider.provision(spec)
        yield node
        provider.destroy(node)

    def test_capabilities_are_declared_known_strings(self, provider: ComputeProvider) -> None:
        assert isinstance(provider.capabilities, frozenset)
        assert provider.capabilities <= KNOWN_CAPABILITIES
        assert provider.provisioning_estimate_s >= 0
        assert provider.describe()

    def test_account_is_usable(self, provider: ComputeProvider) -> None:
        status = provider.check_account()
        assert isinstance(status, AccountStatus)
        assert status.usable, status.reason

    def test_quota_is_reported(self, provider: ComputeProvider) -> None:
        require(provider, "quota")
        quota = provider.check_account().quota
        assert quota is not None and quota.server_limit is not None
        assert quota.servers_left is not None and quota.servers_left > 0

    def test_sizes_are_real_and_cheapest_first(self, provider: ComputeProvider) -> None:
        require(provider, "sizes")
        sizes = provider.list_sizes()
        assert sizes
        for size in sizes:
            assert size.vcpus > 0 and size.ram_bytes > 0 and size.disk_bytes > 0
        prices = [s.price_hourly for s in sizes if s.price_hourly is not None]
        assert prices == sorted(prices)

    def test_locations_say_whether_they_take_servers(self, provider: ComputeProvider) -> None:
        require(provider, "locations")
        locations = provider.list_locations()
        assert locations and all(loc.id and loc.name for loc in locations)
        assert any(loc.available for loc in locations)

    def test_provision_returns_at_once_and_the_host_answers_with_its_pinned_key(
        self, provider: ComputeProvider, spec: ProvisionSpec
    ) -> None:
        started = time.monotonic()
        node = provider.provision(spec)
        try:
            assert time.monotonic() - started < 5
            local = "local" in provider.capabilities
            # Pinned before the first connection (this machine needs no connection).
            assert node.host_key or local
            clock = SystemClock()
            ready = provider.wait_ready(node, clock.now() + READY_WITHIN, clock)
            assert isinstance(ready, ReadyHost)
            assert ready.node_id == node.id
            assert ready.transport == ("local" if local else "ssh")
            if not local:
                assert ready.host_key == node.host_key
            with open_host(ready) as host:
                assert host.run(["echo", "ok"], timeout=10).check().stdout == b"ok\n"
        finally:
            provider.destroy(node)

    def test_destroy_twice_is_not_an_error(
        self, provider: ComputeProvider, spec: ProvisionSpec
    ) -> None:
        node = provider.provision(spec)
        provider.destroy(node)
        provider.destroy(node)

    def test_a_pre_arranged_host_is_claimed_until_destroyed(
        self, provider: ComputeProvider, node: Node
    ) -> None:
        require(provider, "pre_arranged")
        assert node.id not in {h.node_id for h in provider.existing_hosts()}
        provider.destroy(node)
        assert node.id in {h.node_id for h in provider.existing_hosts()}

    def test_a_destroyed_server_is_gone(
        self, provider: ComputeProvider, spec: ProvisionSpec
    ) -> None:
        require(provider, "destroys")
        node = provider.provision(spec)
        clock = SystemClock()
        provider.wait_ready(node, clock.now() + READY_WITHIN, clock)
        provider.destroy(node)
        with pytest.raises(ExitplanError, match="gone"):
            provider.wait_ready(node, clock.now() + timedelta(seconds=2), clock)
