"""`migrate` takes the best host it can get: a refusal at provisioning moves to the next one.

Two DigitalOcean accounts (loopback stand-ins driven by libcloud's real
driver): both look fine to the probe, and rank a-cloud first; a-cloud then
refuses to create the server (capacity gone), so the run falls back to
b-cloud, whose new server is a real sshd.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType

import pytest

from orchestrator.config import CandidateConfig, default_sandbox_config
from orchestrator.run.commands import MigrationRequest, run_migration
from tests.support.digitalocean import DigitalOceanStandIn, _common_free_port
from tests.support.sshd import generate_key, require_openssh

pytestmark = pytest.mark.e2e


@pytest.fixture
def clouds(tmp_path: Path) -> Iterator[tuple[DigitalOceanStandIn, DigitalOceanStandIn]]:
    require_openssh()
    started = []
    try:
        for name in ("a", "b"):
            standin = DigitalOceanStandIn(
                workdir=tmp_path / f"do-{name}",
                token=secrets.token_hex(16),
                ssh_port=_common_free_port(),
            )
            standin.start()
            started.append(standin)
        yield started[0], started[1]
    finally:
        for standin in started:
            standin.stop()


def test_migrate_falls_back_to_the_next_candidate(clouds, tmp_path, monkeypatch):
    first, second = clouds
    first.mode = "refuse-create"
    login = generate_key(tmp_path / "login" / "id_ed25519")
    monkeypatch.setenv("EXITPLAN_SSH_KEY_FILE", str(login.private))
    config = default_sandbox_config(tmp_path)
    config = replace(
        config,
        candidates=(
            CandidateConfig(
                "a-cloud", "libcloud", MappingProxyType(first.candidate_options(size="s-4vcpu-8gb"))
            ),
            CandidateConfig(
                "b-cloud",
                "libcloud",
                MappingProxyType(second.candidate_options(size="s-4vcpu-8gb")),
            ),
        ),
    )
    result = run_migration(MigrationRequest(config, deadline=None, kinds=("route53",)))
    assert result.exit_code == 0, result.report["steps"]
    target = result.report["target"]
    ranked = [row["candidate"] for row in target["probe"]["results"] if row["status"] == "fit"]
    assert ranked == ["a-cloud", "b-cloud"]
    assert [(a["candidate"], a["outcome"]) for a in target["attempts"]] == [
        ("a-cloud", "no_capacity"),
        ("b-cloud", "ready"),
    ]
    assert target["chosen"]["candidate"] == "b-cloud"
    assert len(second.droplets) == 1 and not first.droplets
