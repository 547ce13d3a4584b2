"""Real OpenSSH ``sshd`` processes on 127.0.0.x for tests, each with its own host key.

Import the fixtures into a conftest (``from tests.support.sshd import ...``).
Without /usr/sbin/sshd the fixtures fail when ``CI`` is set and skip otherwise,
saying what to install.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SSHD = "/usr/sbin/sshd"
SSH_KEYGEN = "ssh-keygen"
READY_TIMEOUT_S = 10.0


def require_openssh() -> None:
    """Fail in CI, skip elsewhere, when sshd or ssh-keygen is missing."""
    missing = [
        name for name in (SSHD, SSH_KEYGEN) if not (os.path.exists(name) or shutil.which(name))
    ]
    if missing:
        message = (
            f"{', '.join(missing)} not found: install openssh-server "
            "(apt-get install openssh-server)"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@dataclass(frozen=True)
class KeyPair:
    """An ssh key generated for a test: private key file and public key line."""

    private: Path
    public_line: str

    @property
    def public_key(self) -> str:
        """``"<type> <base64>"`` without the comment, as a config pins it."""
        return " ".join(self.public_line.split()[:2])


def generate_key(path: Path, comment: str = "exitplan-test") -> KeyPair:
    """Generate an unencrypted ed25519 key at ``path`` (and ``path.pub``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        capture_output=True,
    )
    return KeyPair(private=path, public_line=path.with_suffix(".pub").read_text().strip())


def free_port(address: str) -> int:
    """A TCP port nothing listens on at ``address`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((address, 0))
        return int(sock.getsockname()[1])


@dataclass
class SshdServer:
    """A running sshd and what a client needs to reach it."""

    address: str
    port: int
    user: str
    host_key: KeyPair
    workdir: Path
    process: subprocess.Popen[bytes]

    @property
    def log_path(self) -> Path:
        return self.workdir / "sshd.log"

    def known_hosts_line(self) -> str:
        """This server's entry for a known_hosts file."""
        return f"[{self.address}]:{self.port} {self.host_key.public_key}"

    def stop(self) -> None:
        """Terminate sshd and wait for it; idempotent."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


def start_sshd(
    workdir: Path,
    address: str,
    authorized_keys: list[str],
    *,
    port: int | None = None,
    host_key: KeyPair | None = None,
) -> SshdServer:
    """Start sshd on ``address`` and ``port`` (default: a free one); return once it accepts.

    The host key is ``host_key``, or one generated into ``workdir``; only
    ``authorized_keys`` may log in, as the current user. Raises
    ``RuntimeError`` with sshd's log if it exits or does not listen within
    ``READY_TIMEOUT_S``.
    """
    require_openssh()
    workdir.mkdir(parents=True, exist_ok=True)
    # sshd refuses to start without its privilege-separation directory.
    Path("/run/sshd").mkdir(mode=0o755, parents=True, exist_ok=True)
    if host_key is None:
        host_key = generate_key(workdir / "ssh_host_ed25519_key", comment=f"host-{address}")
    authorized = workdir / "authorized_keys"
    authorized.write_text("".join(line + "\n" for line in authorized_keys))
    authorized.chmod(0o600)
    port = free_port(address) if port is None else port
    config = workdir / "sshd_config"
    config.write_text(
        "\n".join(
            [
                f"ListenAddress {address}",
                f"Port {port}",
                f"HostKey {host_key.private}",
                f"PidFile {workdir / 'sshd.pid'}",
                f"AuthorizedKeysFile {authorized}",
                "PubkeyAuthentication yes",
                "PermitRootLogin prohibit-password",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "UsePAM no",
                "StrictModes no",
                "UseDNS no",
                "PrintMotd no",
                "MaxSessions 64",
                "MaxStartups 64",
                "LogLevel INFO",
                "Subsystem sftp internal-sftp",
                "",
            ]
        )
    )
    log = (workdir / "sshd.log").open("wb")
    process = subprocess.Popen(
        [SSHD, "-D", "-e", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT
    )
    log.close()  # the child holds its own copy
    server = SshdServer(address, port, getpass.getuser(), host_key, workdir, process)
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        if process.poll() is not None:
            raise RuntimeError(
                f"sshd on {address}:{port} exited with {process.returncode}: "
                f"{server.log_path.read_text()}"
            )
        try:
            with socket.create_connection((address, port), timeout=0.5):
                return server
        except OSError:
            if time.monotonic() > deadline:
                server.stop()
                raise RuntimeError(
                    f"sshd on {address}:{port} did not listen within {READY_TIMEOUT_S}s: "
                    f"{server.log_path.read_text()}"
                ) from None
            time.sleep(0.02)  # poll interval, not a wait for readiness


# -- fixtures ----------------------------------------------------------------


@pytest.fixture(scope="session")
def ssh_client_key(tmp_path_factory: pytest.TempPathFactory) -> KeyPair:
    """The client key every test sshd authorizes."""
    require_openssh()
    return generate_key(tmp_path_factory.mktemp("client") / "id_ed25519", "exitplan-client")


@pytest.fixture(scope="session")
def ssh_stranger_key(tmp_path_factory: pytest.TempPathFactory) -> KeyPair:
    """A client key no test sshd authorizes."""
    require_openssh()
    return generate_key(tmp_path_factory.mktemp("stranger") / "id_ed25519", "stranger")


@pytest.fixture(scope="session")
def sshd_host(
    tmp_path_factory: pytest.TempPathFactory, ssh_client_key: KeyPair
) -> Iterator[SshdServer]:
    """A good host: sshd on 127.0.0.2 that accepts ``ssh_client_key``."""
    server = start_sshd(
        tmp_path_factory.mktemp("sshd-host"), "127.0.0.2", [ssh_client_key.public_line]
    )
    yield server
    server.stop()


@pytest.fixture(scope="session")
def sshd_impostor(
    tmp_path_factory: pytest.TempPathFactory, ssh_client_key: KeyPair
) -> Iterator[SshdServer]:
    """sshd on 127.0.0.3 with its own host key; pinned to ``sshd_host``'s key, it is an impostor."""
    server = start_sshd(
        tmp_path_factory.mktemp("sshd-impostor"), "127.0.0.3", [ssh_client_key.public_line]
    )
    yield server
    server.stop()


@pytest.fixture(scope="session")
def down_address() -> tuple[str, int]:
    """An (address, port) on 127.0.0.4 with nothing listening: connections are refused."""
    return "127.0.0.4", free_port("127.0.0.4")
