"""Fixtures for the contract suites: real sshd processes for the SSH host."""

from tests.support.sshd import (
    down_address,
    ssh_client_key,
    ssh_stranger_key,
    sshd_host,
    sshd_impostor,
)

__all__ = ["down_address", "ssh_client_key", "ssh_stranger_key", "sshd_host", "sshd_impostor"]
