"""``LibcloudComputeProvider`` with libcloud's real DigitalOcean driver passes the
ComputeProvider contract against the loopback stand-in (droplets are real sshd)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from datetime import timedelta

import pytest

from orchestrator.clock import SystemClock
from orchestrator.errors import ConfigError
from providers.compute import LibcloudComputeProvider
from providers.interfaces.compute import NoCapacity, ProviderRefused, ProvisionSpec
from tests.contract.compute_contract import ComputeContract
from tests.support.digitalocean import LOCKED_MESSAGE, DigitalOceanStandIn
from tests.support.sshd import KeyPair


def do_provider(standin: DigitalOceanStandIn, **overrides: object) -> LibcloudComputeProvider:
    return LibcloudComputeProvider("do", **standin.candidate_options(**overrides))  # type: ignore[arg-type]


class TestDigitalOcean(ComputeContract):
    __test__ = True

    @pytest.fixture
    def login_key(self, ssh_client_key: KeyPair) -> KeyPair:
        return ssh_client_key

    @pytest.fixture
    def provider(self, digitalocean: DigitalOceanStandIn) -> Iterator[LibcloudComputeProvider]:
        yield do_provider(digitalocean)


def test_the_droplet_runs_with_the_host_key_we_generated(
    digitalocean: DigitalOceanStandIn, ssh_client_key: KeyPair
) -> None:
    provider = do_provider(digitalocean)
    node = provider.provision(
        ProvisionSpec("web", ssh_client_key.public_line, ssh_client_key.private)
    )
    clock = SystemClock()
    provider.wait_ready(node, clock.now() + timedelta(seconds=20), clock)
    droplet = digitalocean.droplets[int(node.id)]
    assert droplet.sshd is not None
    # Independent oracle: what ssh-keygen says the droplet's host key is.
    public = subprocess.run(
        ["ssh-keygen", "-y", "-f", str(droplet.sshd.host_key.private)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()[:2]
    assert " ".join(public) == node.host_key
    assert "ssh_keys" in droplet.user_data and ssh_client_key.public_key in droplet.user_data
    provider.destroy(node)
    assert int(node.id) not in digitalocean.droplets


def test_a_locked_account_is_reported_and_refuses_to_provision(
    digitalocean: DigitalOceanStandIn,
) -> None:
    digitalocean.mode = "locked"
    provider = do_provider(digitalocean)
    status = provider.check_account()
    assert status.state == "locked" and not status.usable
    assert status.reason == LOCKED_MESSAGE
    with pytest.raises(ProviderRefused) as refused:
        provider.provision(ProvisionSpec("web"))
    assert refused.value.reason == "locked"


def test_a_rejected_token_is_refused(digitalocean: DigitalOceanStandIn) -> None:
    provider = do_provider(digitalocean, key="not-the-token")
    status = provider.check_account()
    assert status.state == "refused"
    assert "not-the-token" not in status.reason  # never the secret
    with pytest.raises(ProviderRefused) as refused:
        provider.list_sizes()
    assert refused.value.reason == "auth"


def test_a_full_region_is_no_capacity(digitalocean: DigitalOceanStandIn) -> None:
    digitalocean.mode = "full"
    provider = do_provider(digitalocean)
    assert not any(loc.available for loc in provider.list_locations())
    with pytest.raises(NoCapacity, match="unavailable"):
        provider.provision(ProvisionSpec("web"))
    assert digitalocean.droplets == {}


def test_an_unknown_size_is_a_config_error_naming_the_offered_ones(
    digitalocean: DigitalOceanStandIn,
) -> None:
    provider = do_provider(digitalocean, size="s-64vcpu-1tb")
    with pytest.raises(ConfigError, match="s-2vcpu-4gb"):
        provider.provision(ProvisionSpec("web"))


def test_an_unsupported_driver_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="digitalocean"):
        LibcloudComputeProvider("x", driver="nimbus", key="k")
