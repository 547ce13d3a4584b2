"""``LocalMachineProvider`` (the sandbox's candidate) passes the ComputeProvider contract."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from providers.compute import LocalMachineProvider
from tests.contract.compute_contract import ComputeContract
from tests.support.sshd import KeyPair


class TestLocalMachine(ComputeContract):
    __test__ = True

    @pytest.fixture
    def login_key(self, ssh_client_key: KeyPair) -> KeyPair:
        return ssh_client_key  # offered, never needed: this machine is reached without SSH

    @pytest.fixture
    def provider(self) -> Iterator[LocalMachineProvider]:
        yield LocalMachineProvider("this-machine")
