"""``SshHost`` passes the Host contract against a real sshd, and checks who it talks to."""

from __future__ import annotations

import contextlib
import logging
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.errors import ConfigError, FatalError, RetryableError
from providers.interfaces.host import (
    HostAuthFailed,
    HostKeyMismatch,
    HostUnreachable,
    UnknownHostKey,
)
from providers.ssh import SshHost
from tests.contract.host_contract import HostContract
from tests.support.sshd import KeyPair, SshdServer


def ssh_host(server: SshdServer, key: KeyPair, **options: Any) -> SshHost:
    options.setdefault("host_key", server.host_key.public_key)
    return SshHost(server.address, server.port, user=server.user, key_file=key.private, **options)


def openssh_fingerprint(key: KeyPair) -> str:
    """The fingerprint as ``ssh-keygen -lf`` prints it: an oracle independent of our code."""
    out = subprocess.run(
        ["ssh-keygen", "-lf", str(key.private.with_suffix(".pub"))],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return out.split()[1]


def ssh_connection(host: SshHost) -> str:
    """The server's view of the connection ("client-ip client-port server-ip server-port")."""
    return host.run(["sh", "-c", 'echo "$SSH_CONNECTION"'], timeout=10).check().stdout.decode()


class TestSshHost(HostContract):
    __test__ = True

    @pytest.fixture
    def host(self, sshd_host: SshdServer, ssh_client_key: KeyPair) -> Iterator[SshHost]:
        with ssh_host(sshd_host, ssh_client_key) as host:
            yield host


# -- identity: the key the server presents must be the pinned one ------------


def test_impostor_is_refused_naming_both_fingerprints(
    sshd_host: SshdServer, sshd_impostor: SshdServer, ssh_client_key: KeyPair
) -> None:
    # Pin the good host's key, connect to the impostor; a large backoff shows
    # that a mismatch is never retried.
    host = ssh_host(
        sshd_impostor,
        ssh_client_key,
        host_key=sshd_host.host_key.public_key,
        connect_backoff_s=10,
    )
    started = time.monotonic()
    with pytest.raises(HostKeyMismatch) as refused:
        host.run(["true"], timeout=10)
    assert time.monotonic() - started < 5
    message = str(refused.value)
    assert f"{sshd_impostor.address}:{sshd_impostor.port}" in message
    assert openssh_fingerprint(sshd_impostor.host_key) in message
    assert openssh_fingerprint(sshd_host.host_key) in message
    assert "known_hosts" in message  # the fix
    assert isinstance(refused.value, FatalError)


def test_unpinned_host_is_refused(sshd_host: SshdServer, ssh_client_key: KeyPair) -> None:
    host = ssh_host(sshd_host, ssh_client_key, host_key=None, connect_backoff_s=10)
    started = time.monotonic()
    with pytest.raises(UnknownHostKey) as refused:
        host.run(["true"], timeout=10)
    assert time.monotonic() - started < 5
    message = str(refused.value)
    assert f"{sshd_host.address}:{sshd_host.port}" in message
    assert openssh_fingerprint(sshd_host.host_key) in message
    assert "host_key" in message


def test_known_hosts_file_pins_plain_and_hashed(
    sshd_host: SshdServer, ssh_client_key: KeyPair, tmp_path: Path
) -> None:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(sshd_host.known_hosts_line() + "\n")
    with ssh_host(sshd_host, ssh_client_key, host_key=None, known_hosts=known_hosts) as host:
        assert host.run(["echo", "ok"], timeout=10).check().stdout == b"ok\n"
    # `ssh-keygen -H` hashes host names, as many distributions' ssh does by default.
    subprocess.run(["ssh-keygen", "-H", "-f", str(known_hosts)], check=True, capture_output=True)
    assert sshd_host.address not in known_hosts.read_text()
    with ssh_host(sshd_host, ssh_client_key, host_key=None, known_hosts=known_hosts) as host:
        assert host.run(["echo", "ok"], timeout=10).check().stdout == b"ok\n"


def test_known_hosts_with_another_key_is_a_mismatch(
    sshd_host: SshdServer, sshd_impostor: SshdServer, ssh_client_key: KeyPair, tmp_path: Path
) -> None:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(
        f"[{sshd_impostor.address}]:{sshd_impostor.port} {sshd_host.host_key.public_key}\n"
    )
    host = ssh_host(sshd_impostor, ssh_client_key, host_key=None, known_hosts=known_hosts)
    with pytest.raises(HostKeyMismatch):
        host.run(["true"], timeout=10)


def test_known_hosts_without_the_host_is_unknown(
    sshd_host: SshdServer, sshd_impostor: SshdServer, ssh_client_key: KeyPair, tmp_path: Path
) -> None:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(sshd_impostor.known_hosts_line() + "\n")
    host = ssh_host(sshd_host, ssh_client_key, host_key=None, known_hosts=known_hosts)
    with pytest.raises(UnknownHostKey):
        host.run(["true"], timeout=10)


def test_malformed_host_key_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="host_key"):
        SshHost("127.0.0.2", 22, user="root", host_key="ssh-ed25519 not-base64!")


# -- reachability and authentication ------------------------------------------


def test_down_host_is_unreachable_after_bounded_retries(
    down_address: tuple[str, int], ssh_client_key: KeyPair, caplog: pytest.LogCaptureFixture
) -> None:
    address, port = down_address
    host = SshHost(
        address,
        port,
        user="root",
        host_key=ssh_client_key.public_key,  # any valid key: nothing will answer
        key_file=ssh_client_key.private,
        connect_retries=2,
        connect_backoff_s=0.05,
    )
    caplog.set_level(logging.INFO, logger="providers.ssh")
    started = time.monotonic()
    with pytest.raises(HostUnreachable, match="after 3 attempts") as unreachable:
        host.run(["true"], timeout=10)
    assert time.monotonic() - started < 5
    assert f"{address}:{port}" in str(unreachable.value)
    assert isinstance(unreachable.value, RetryableError)
    assert sum("retrying" in record.getMessage() for record in caplog.records) == 2


def test_wrong_client_key_is_an_auth_failure(
    sshd_host: SshdServer, ssh_stranger_key: KeyPair
) -> None:
    host = ssh_host(sshd_host, ssh_stranger_key, connect_backoff_s=10)
    started = time.monotonic()
    with pytest.raises(HostAuthFailed, match=sshd_host.user):
        host.run(["true"], timeout=10)
    assert time.monotonic() - started < 5


# -- one connection per host ----------------------------------------------------


def test_one_connection_is_reused_across_calls_and_threads(
    sshd_host: SshdServer, ssh_client_key: KeyPair
) -> None:
    with ssh_host(sshd_host, ssh_client_key) as host:
        first = ssh_connection(host)
        host.put_bytes(b"x", "/tmp/exitplan-reuse-probe")
        seen: list[str] = []
        threads = [
            threading.Thread(target=lambda: seen.append(ssh_connection(host))) for _ in range(6)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert seen == [first] * 6
        host.run(["rm", "-f", "/tmp/exitplan-reuse-probe"], timeout=10)
        host.close()
        # After close() the next call opens a new connection (new client port).
        assert ssh_connection(host) != first


def test_a_dropped_connection_is_reopened(sshd_host: SshdServer, ssh_client_key: KeyPair) -> None:
    with ssh_host(sshd_host, ssh_client_key) as host:
        first = ssh_connection(host)
        # The command's parent is sshd's process for this connection: killing
        # it drops the connection under the host object.
        # Depending on what reached us first this is HostUnreachable or a
        # result without a status (-1); either way the next call must work.
        with contextlib.suppress(HostUnreachable):
            result = host.run(["sh", "-c", "kill -9 $PPID; sleep 5"], timeout=10)
            assert result.exit_status == -1
        second = ssh_connection(host)
        assert second and second != first


def test_secrets_never_reach_logs(
    sshd_host: SshdServer, ssh_client_key: KeyPair, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    secret = "correct-horse-battery-staple"
    with ssh_host(sshd_host, ssh_client_key) as host:
        result = host.run(
            ["sh", "-c", 'test "$TOKEN" = "$(cat)"'],
            env={"TOKEN": secret},
            input=secret.encode(),
            timeout=10,
        )
    assert result.ok
    assert any("running" in record.getMessage() for record in caplog.records)
    assert secret not in caplog.text
