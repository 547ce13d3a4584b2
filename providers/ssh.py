"""``Host`` over SSH (paramiko): exec, SFTP, pinned host keys.

Identity first: the host key must be pinned, either in the config
(``host_key: "ssh-ed25519 AAAA..."``) or in a known_hosts file. A host with no
pinned key, or with a different one, is refused before anything is sent: the
only missing-host-key policy is ``_RefuseUnpinnedKey``, so no key is ever
trusted on first use.

One SSH connection per host is opened lazily, shared by every thread and every
command, and re-opened if it drops. Only failing to reach the host is retried
(``should_retry``); a key mismatch or an auth failure never is.

The remote login shell must be a POSIX shell: each command is sent as
``shlex.join(argv)`` (plus ``cd --`` and ``env --`` parts, quoted the same
way), so every argument reaches the program exactly as given.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import errno
import hashlib
import logging
import secrets
import shlex
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import BinaryIO, ParamSpec, TypeVar

import paramiko
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from orchestrator.errors import ConfigError, FatalError
from providers.interfaces.host import (
    CommandResult,
    CommandTimeout,
    Host,
    HostAuthFailed,
    HostKeyMismatch,
    HostPathError,
    HostUnreachable,
    UnknownHostKey,
    check_command,
    check_host_path,
)
from providers.local import write_atomically

log = logging.getLogger(__name__)

_P = ParamSpec("_P")
_R = TypeVar("_R")

_RECV_CHUNK = 64 * 1024
#: Printed with the shell's pid before the command runs (see build_remote_command).
_PID_MARKER = b"exitplan-pid:"
_COPY_CHUNK = 32 * 1024  # the SFTP packet payload size paramiko uses
_PATH_ERRNOS = frozenset({errno.ENOENT, errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EISDIR})


def should_retry(exc: BaseException) -> bool:
    """The one retry rule of this provider: only an unreachable host is worth retrying."""
    return isinstance(exc, HostUnreachable)


def fingerprint(key: paramiko.PKey) -> str:
    """The key's fingerprint as OpenSSH prints it: ``SHA256:`` + unpadded base64."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def parse_host_key(line: str) -> paramiko.PKey:
    """Parse a pinned public key ``"<type> <base64> [comment]"``; ``ConfigError`` if malformed."""
    parts = line.split()
    if len(parts) < 2:
        raise ConfigError(
            f"host_key {line[:40]!r} is not '<type> <base64>'; copy the host's public key "
            "line, e.g. from /etc/ssh/ssh_host_ed25519_key.pub"
        )
    try:
        return paramiko.PKey.from_type_string(parts[0], base64.b64decode(parts[1], validate=True))
    except (binascii.Error, ValueError, paramiko.SSHException) as exc:
        raise ConfigError(
            f"host_key of type {parts[0]!r} cannot be parsed ({exc}); copy the host's "
            "public key line, e.g. from /etc/ssh/ssh_host_ed25519_key.pub"
        ) from None


def build_remote_command(
    argv: Sequence[str], env: Mapping[str, str] | None = None, cwd: str | None = None
) -> str:
    """The command line sent to the remote login shell; every part is ``shlex``-quoted.

    The shell first prints a marker and its pid on a line of its own (sshd
    makes it a process-group leader, so this is the group to kill on timeout;
    ``run`` strips that line and anything noisy startup files printed before it), then ``exec``s the command so it keeps that pid and its
    status is the session's. The result holds env values: never log it.
    """
    command = shlex.join(argv)
    if env:
        assignments = " ".join(shlex.quote(f"{name}={value}") for name, value in env.items())
        command = f"env -- {assignments} {command}"
    if cwd is not None:
        command = f"cd -- {shlex.quote(cwd)} && exec {command}"
    else:
        command = f"exec {command}"
    return f"echo {_PID_MARKER.decode()}$$; {command}"


class _RefuseUnpinnedKey(paramiko.MissingHostKeyPolicy):
    """paramiko calls this when no key is pinned for the host: refuse, never add."""

    def __init__(self, where: str) -> None:
        self._where = where

    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> None:
        raise UnknownHostKey(
            f"no host key is pinned for {self._where}; it presented {key.get_name()} "
            f"{fingerprint(key)}. Check that fingerprint on the host itself (ssh-keygen -lf "
            "/etc/ssh/ssh_host_*_key.pub), then set host_key to its public key line or add "
            "the host to the known_hosts file in the config"
        )


class SshHost(Host):
    """A host reached over SSH, its identity checked against a pinned key."""

    def __init__(
        self,
        address: str,
        port: int = 22,
        *,
        user: str,
        host_key: str | None = None,
        known_hosts: Path | None = None,
        key_file: Path | None = None,
        connect_timeout: float = 10.0,
        command_timeout: float = 600.0,
        connect_retries: int = 3,
        connect_backoff_s: float = 0.5,
        name: str | None = None,
    ) -> None:
        """Describe the host; nothing is contacted until the first call that needs it.

        ``host_key`` and/or ``known_hosts`` pin the server's key (with neither,
        every connection is refused with ``UnknownHostKey``). ``key_file`` is
        the only key offered when given; otherwise the ssh-agent's keys and the
        default ``~/.ssh/id_*`` files are. ``command_timeout`` is how long an
        SFTP transfer may stall. ``connect_retries`` is how many times an
        unreachable host is retried (so at most ``connect_retries + 1``
        attempts), with jittered exponential backoff from
        ``connect_backoff_s``. Raises ``ConfigError`` for a malformed
        ``host_key``.
        """
        self.address = address
        self.port = port
        self.user = user
        self._where = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
        super().__init__(name or f"{user}@{self._where}")
        self._pinned = parse_host_key(host_key) if host_key else None
        self._known_hosts = known_hosts
        self._key_file = key_file
        self._connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        self._connect_retries = connect_retries
        self._connect_backoff_s = connect_backoff_s
        self._client: paramiko.SSHClient | None = None
        # Guards _client: one connect at a time, and every thread shares its result.
        self._lock = threading.Lock()

    def describe(self) -> str:
        """``ssh:user@address:port``."""
        return f"ssh:{self.user}@{self._where}"

    # -- connection --------------------------------------------------------

    def _transport(self) -> paramiko.Transport:
        """The live transport, connecting (with retries) if there is none yet."""
        with self._lock:
            if self._client is not None:
                transport = self._client.get_transport()
                if transport is not None and transport.is_active():
                    return transport
                self._client.close()
                self._client = None
            self._client = self._connect_with_retries()
            transport = self._client.get_transport()
            if transport is None:  # connect() returned, so this is a paramiko bug
                raise HostUnreachable(f"connection to {self._where} closed right after login")
            return transport

    def _connect_with_retries(self) -> paramiko.SSHClient:
        attempts = self._connect_retries + 1

        def log_retry(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            log.info("%s: attempt %d failed (%s); retrying", self._where, state.attempt_number, exc)

        retrying = Retrying(
            stop=stop_after_attempt(attempts),
            wait=wait_exponential_jitter(
                multiplier=self._connect_backoff_s, max=30.0, jitter=self._connect_backoff_s
            ),
            retry=retry_if_exception(should_retry),
            before_sleep=log_retry,
            reraise=True,
        )
        try:
            return retrying(self._connect_once)
        except HostUnreachable as exc:
            raise HostUnreachable(f"{exc} (gave up after {attempts} attempts)") from exc

    def _connect_once(self) -> paramiko.SSHClient:
        client = paramiko.SSHClient()
        pins = client.get_host_keys()
        # paramiko looks keys up as "[addr]:port" unless the port is 22.
        lookup_name = self.address if self.port == 22 else f"[{self.address}]:{self.port}"
        if self._known_hosts is not None:
            try:
                pins.load(str(self._known_hosts))
            except OSError as exc:
                raise ConfigError(
                    f"cannot read known_hosts file {self._known_hosts}: {exc.strerror}"
                ) from None
        if self._pinned is not None:
            pins.add(lookup_name, self._pinned.get_name(), self._pinned)
        client.set_missing_host_key_policy(_RefuseUnpinnedKey(self._where))
        pkey = self._load_client_key()
        try:
            client.connect(
                self.address,
                port=self.port,
                username=self.user,
                pkey=pkey,
                allow_agent=pkey is None,
                look_for_keys=pkey is None,
                timeout=self._connect_timeout,
                banner_timeout=self._connect_timeout,
                auth_timeout=self._connect_timeout,
                channel_timeout=self._connect_timeout,
            )
        except paramiko.BadHostKeyException as exc:
            client.close()
            raise HostKeyMismatch(
                f"host key for {self._where} does not match the pinned key: the server "
                f"presented {exc.key.get_name()} {fingerprint(exc.key)}, but "
                f"{exc.expected_key.get_name()} {fingerprint(exc.expected_key)} is pinned. "
                "Someone may be intercepting the connection, or the host was re-keyed. Check "
                "the key on the host itself (ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub); only "
                f"if it is {fingerprint(exc.key)}, update host_key or the known_hosts entry"
            ) from None
        except paramiko.AuthenticationException as exc:
            client.close()
            offered = f"key file {self._key_file}" if self._key_file else "agent and ~/.ssh keys"
            raise HostAuthFailed(
                f"{self._where} refused {self.user!r} with the {offered} ({exc}); add the "
                "public key to that user's authorized_keys or fix user/key_file"
            ) from None
        except (UnknownHostKey, HostKeyMismatch):
            client.close()
            raise
        except (paramiko.SSHException, OSError, EOFError) as exc:
            client.close()
            raise HostUnreachable(
                f"cannot reach {self._where}: {exc or type(exc).__name__}; check that the "
                "host is up and sshd listens on that address and port"
            ) from exc
        transport = client.get_transport()
        if transport is not None and hasattr(transport.sock, "setsockopt"):
            # paramiko leaves Nagle on: each small request then waits ~40 ms for an ACK.
            transport.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        log.debug("connected to %s as %s", self._where, self.user)
        return client

    def _load_client_key(self) -> paramiko.PKey | None:
        if self._key_file is None:
            return None
        try:
            return paramiko.PKey.from_path(self._key_file)
        except paramiko.PasswordRequiredException:
            raise ConfigError(
                f"key file {self._key_file} is encrypted; load it into ssh-agent and "
                "leave key_file unset"
            ) from None
        except (OSError, paramiko.SSHException, ValueError) as exc:
            raise ConfigError(f"cannot load key file {self._key_file}: {exc}") from None

    def _drop(self, transport: paramiko.Transport) -> None:
        """Forget the connection if it is still ``transport`` (it failed under us)."""
        with self._lock:
            if self._client is not None and self._client.get_transport() is transport:
                self._client.close()
                self._client = None

    def close(self) -> None:
        """Close the connection; idempotent. The next call reconnects."""
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    # -- commands ----------------------------------------------------------

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float,
        input: bytes | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
    ) -> CommandResult:
        """Run ``argv`` on the host; see ``Host.run`` for the contract."""
        args = check_command(argv, env)
        command = build_remote_command(args, env, cwd)
        log.debug("running %s on %s", shlex.join(args), self.name)  # not `command`: env values
        transport = self._transport()
        started = time.monotonic()
        deadline = started + timeout
        try:
            channel = transport.open_session(timeout=self._connect_timeout)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            self._drop(transport)
            raise HostUnreachable(f"cannot open a session on {self._where}: {exc}") from exc
        with channel:
            stdout = bytearray()
            stderr = bytearray()
            try:
                # argv joined by build_remote_command: every part shlex-quoted.
                channel.exec_command(command)  # nosec B601 # no caller-supplied shell text
                # Readers and the stdin writer run in threads so a command that
                # writes a lot before it reads its stdin cannot deadlock us.
                workers = [
                    _start(_drain, channel.recv, stdout),
                    _start(_drain, channel.recv_stderr, stderr),
                    _start(_feed, channel, input or b""),
                ]
                finished = channel.status_event.wait(max(0.0, deadline - time.monotonic()))
                for worker in workers[:2]:
                    worker.join(max(0.0, deadline - time.monotonic()))
                finished = finished and not any(worker.is_alive() for worker in workers[:2])
            except (paramiko.SSHException, OSError, EOFError) as exc:
                self._drop(transport)
                raise HostUnreachable(f"lost {self._where} while running a command: {exc}") from exc
            except BaseException:
                # Ctrl-C or a cancel: never leave the command running behind us.
                self._kill(channel, transport, _leading_pid(stdout))
                raise
            if not finished:
                self._kill(channel, transport, _leading_pid(stdout))
                raise CommandTimeout(
                    f"command `{shlex.join(args)}` on {self.name} did not finish within "
                    f"{timeout:g}s and was killed; raise the timeout if it needs longer"
                )
            found = _command_output_start(stdout)
            started_command = found is not None
            # paramiko keeps -1 until an exit-status arrives (exit_status_ready()
            # is also true for a channel that merely closed).
            reported = channel.exit_status != -1
            if not reported and (not started_command or not transport.is_active()):
                # Closed with no status and no sign of life (or no connection
                # left): the session died under us. The socket may not show it
                # yet, so drop the connection; the next call opens a fresh one.
                self._drop(transport)
                raise HostUnreachable(f"lost {self._where} while running `{shlex.join(args)}`")
            status = channel.recv_exit_status()
        if found is None:
            # The login shell exited before printing its pid: not a POSIX
            # shell, or the account's shell refuses commands (nologin).
            raise FatalError(
                f"{self._where} did not run the command for {self.user!r} (status {status}): "
                f"{bytes(stderr[-500:]).decode('utf-8', 'replace').strip()}; the user needs "
                "a POSIX login shell"
            )
        output_start = found[1]
        return CommandResult(
            argv=args,
            exit_status=status,
            stdout=bytes(stdout[output_start:]),
            stderr=bytes(stderr),
            duration_s=time.monotonic() - started,
            host=self.name,
        )

    def _kill(
        self, channel: paramiko.Channel, transport: paramiko.Transport, pid: int | None
    ) -> None:
        """Kill the remote command's process group, then close its channel.

        Closing the channel alone would leave a command that ignores its
        closed pipes running; the RFC 4254 "signal" request is refused by
        sshd for root sessions. So a second session runs ``kill`` on the
        group the wrapper reported. Best effort: the CommandTimeout follows
        whatever happens here.
        """
        if pid is not None and not channel.exit_status_ready():
            try:
                killer = transport.open_session(timeout=self._connect_timeout)
                with killer:
                    killer.exec_command(f"kill -KILL -- -{pid}")  # nosec B601 # pid is an int
                    killer.status_event.wait(self._connect_timeout)
            except (paramiko.SSHException, OSError, EOFError) as exc:
                log.warning("could not kill timed-out command on %s: %s", self._where, exc)
        channel.close()

    # -- files -------------------------------------------------------------

    @contextlib.contextmanager
    def _sftp(self, what: str) -> Iterator[paramiko.SFTPClient]:
        """An SFTP session for one operation; paramiko's client is not safe to share."""
        transport = self._transport()
        try:
            sftp = paramiko.SFTPClient.from_transport(transport)
            if sftp is None:
                raise paramiko.SSHException("the server refused the sftp subsystem")
            with sftp:
                # An inactivity bound, so a stalled transfer fails instead of hanging.
                channel = sftp.get_channel()
                if channel is not None:
                    channel.settimeout(self.command_timeout)
                yield sftp
        except OSError as exc:
            if exc.errno in _PATH_ERRNOS or (transport.is_active() and not _is_socket_error(exc)):
                raise HostPathError(f"cannot {what} on {self.name}: {exc}") from None
            self._drop(transport)
            raise HostUnreachable(f"lost {self._where} while trying to {what}: {exc}") from exc
        except (paramiko.SSHException, EOFError) as exc:
            self._drop(transport)
            raise HostUnreachable(f"lost {self._where} while trying to {what}: {exc}") from exc

    def put_bytes(self, data: bytes, remote: str, mode: int = 0o644) -> None:
        """Write ``data`` to ``remote`` atomically over SFTP; see ``Host.put_bytes``."""
        self._put(remote, mode, lambda out: _write_all(out, data))

    def put_file(self, local: Path, remote: str, mode: int = 0o644) -> None:
        """Stream ``local`` to ``remote`` atomically over SFTP; see ``Host.put_file``."""
        with open(local, "rb") as src:
            self._put(remote, mode, lambda out: _copy(_local_io(src.read), out.write))

    def _put(self, remote: str, mode: int, write: Callable[[paramiko.SFTPFile], int]) -> None:
        check_host_path(remote)
        directory, _, base = remote.rpartition("/")
        if not base:
            raise ValueError(f"host path {remote!r} names a directory, not a file")
        tmp = f"{directory}/.{base}.exitplan-{secrets.token_hex(6)}.tmp"
        try:
            with self._sftp(f"write {remote}") as sftp:
                try:
                    # "wx": create exclusively; 0600 before any byte goes in, so a
                    # secret is never readable by others while it is being written.
                    with sftp.open(tmp, "wxb") as out:
                        out.chmod(0o600)
                        out.set_pipelined(True)
                        written = write(out)
                    stored = sftp.stat(tmp).st_size
                    if stored != written:
                        raise HostPathError(
                            f"short write to {remote} on {self.name}: {stored} of {written} "
                            "bytes; check free space"
                        )
                    sftp.chmod(tmp, mode & 0o7777)
                    # posix-rename replaces an existing file atomically; plain
                    # SFTP rename refuses to overwrite.
                    sftp.posix_rename(tmp, remote)
                except BaseException:
                    with contextlib.suppress(Exception):
                        sftp.remove(tmp)
                    raise
        except _LocalIOFailed as failed:
            raise failed.error from None

    def get_file(self, remote: str, local: Path) -> None:
        """Copy ``remote`` to ``local`` over SFTP, atomically; see ``Host.get_file``."""
        check_host_path(remote)

        def receive(out: BinaryIO) -> None:
            try:
                with self._sftp(f"read {remote}") as sftp, sftp.open(remote, "rb") as src:
                    src.prefetch()
                    _copy(src.read, _local_io(out.write))
            except _LocalIOFailed as failed:
                raise failed.error from None

        # write_atomically removes its temp file if the download fails.
        write_atomically(Path(local), 0o644, receive)


class _LocalIOFailed(Exception):
    """Carries an OSError from this machine's files past the SFTP error mapping, unchanged."""

    def __init__(self, error: OSError) -> None:
        super().__init__(error)
        self.error = error


def _local_io(call: Callable[_P, _R]) -> Callable[_P, _R]:
    """Wrap a local file method so its OSError is not mistaken for a remote one."""

    def guarded(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return call(*args, **kwargs)
        except OSError as exc:
            raise _LocalIOFailed(exc) from exc

    return guarded


def _start(target: Callable[..., None], *args: object) -> threading.Thread:
    thread = threading.Thread(target=target, args=args, daemon=True)
    thread.start()
    return thread


def _drain(recv: Callable[[int], bytes], sink: bytearray) -> None:
    # recv returns b"" at EOF and once the channel is closed (also on timeout).
    while chunk := recv(_RECV_CHUNK):
        sink += chunk


def _feed(channel: paramiko.Channel, data: bytes) -> None:
    # The command may exit without reading all of its stdin; that is its
    # business, not an error of ours.
    with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
        if data:
            channel.sendall(data)
        channel.shutdown_write()


def _command_output_start(stdout: bytearray) -> tuple[int, int] | None:
    """The pid the wrapper printed and where the command's own output begins.

    ``None`` until the marker line has arrived. Anything before it was printed
    by the login shell's startup files and is not the command's output.
    """
    at = stdout.find(_PID_MARKER)
    end = stdout.find(b"\n", at)
    if at < 0 or end < 0:
        return None
    pid = bytes(stdout[at + len(_PID_MARKER) : end])
    return (int(pid), end + 1) if pid.isdigit() else None


def _leading_pid(stdout: bytearray) -> int | None:
    found = _command_output_start(stdout)
    return found[0] if found else None


def _write_all(out: paramiko.SFTPFile, data: bytes) -> int:
    view = memoryview(data)
    for offset in range(0, len(view), _COPY_CHUNK):
        out.write(view[offset : offset + _COPY_CHUNK])
    return len(data)


def _copy(read: Callable[[int], bytes], write: Callable[[bytes], object]) -> int:
    total = 0
    while chunk := read(_COPY_CHUNK):
        write(chunk)
        total += len(chunk)
    return total


def _is_socket_error(exc: OSError) -> bool:
    # paramiko raises plain IOError (errno None) for SFTP status failures and
    # socket errors (with an errno, or a timeout) when the connection breaks.
    return isinstance(exc, TimeoutError) or exc.errno is not None
