"""Host: a machine we run commands on and copy files to (ssh, local), and its contract."""

from __future__ import annotations

import re
import shlex
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

from orchestrator.errors import ExitplanError, FatalError, RetryableError

# ---------------------------------------------------------------------------
# Hosts: machines we run commands on and copy files to (ssh, local).
# ---------------------------------------------------------------------------


class HostUnreachable(RetryableError):
    """The host could not be reached, or the connection to it was lost.

    Retryable: the usual causes (host still booting, a network blip, sshd
    restarting) go away. A command that was running when the connection was
    lost may or may not have completed.
    """


class HostKeyMismatch(FatalError):
    """The host presented a key other than the one pinned for it.

    Fatal: either someone is intercepting the connection or the host was
    re-keyed; only a person can tell which. The message names the host, both
    fingerprints (``SHA256:...`` as OpenSSH prints them) and the fix.
    """


class UnknownHostKey(FatalError):
    """No key is pinned for the host, so its identity cannot be checked.

    Fatal: exitplan never trusts a key on first use. The message names the
    host, the fingerprint it presented and where to pin a key.
    """


class HostAuthFailed(FatalError):
    """The host refused every key offered for the user. Fatal: fix the key or the user."""


class HostPathError(FatalError):
    """A path on the host is missing, is the wrong kind, or cannot be written."""


class CommandTimeout(ExitplanError):
    """A command ran longer than its timeout and was killed.

    Whether running it again is safe depends on the command; the host is not
    told to undo anything it did before it was killed.
    """


class CommandFailed(ExitplanError):
    """A command exited with a non-zero status (raised by ``CommandResult.check``).

    The message names the command (``shlex.join`` of its argv, never its
    environment or stdin), the host, the exit status and the tail of stderr.
    """

    def __init__(self, result: CommandResult) -> None:
        self.result = result
        tail = result.stderr[-_STDERR_TAIL_BYTES:].decode("utf-8", "replace").strip()
        where = f" on {result.host}" if result.host else ""
        command = shlex.join(result.argv)
        message = f"command `{command}`{where} exited with status {result.exit_status}"
        if tail:
            message += f"; stderr ends with: {tail}"
        super().__init__(message)


#: How much of stderr ``CommandFailed`` quotes: enough for the error, not a log dump.
_STDERR_TAIL_BYTES = 2000


@dataclass(frozen=True)
class CommandResult:
    """What a finished command did.

    ``argv`` is the caller's argv exactly (no env or cwd wrapping), so it can be
    shown in messages; secrets belong in ``env`` or ``input``, never in argv.
    ``exit_status`` is the command's status; a command that could not be
    started gives 127 (not found) or 126 (not executable) as a POSIX shell
    would. A command killed by signal N gives ``128 + N`` on a local host and
    ``-1`` over SSH (the server reports a signal, not a status).
    """

    argv: tuple[str, ...]
    exit_status: int
    stdout: bytes
    stderr: bytes
    duration_s: float
    #: ``Host.name`` of the host that ran it, for messages.
    host: str = ""

    @property
    def ok(self) -> bool:
        """True when the command exited with status 0."""
        return self.exit_status == 0

    def check(self) -> CommandResult:
        """Return ``self`` if the command succeeded, else raise ``CommandFailed``."""
        if self.exit_status != 0:
            raise CommandFailed(self)
        return self


@dataclass(frozen=True)
class HostFacts:
    """Read-only facts about a host, gathered in one round trip by ``Host.facts``."""

    hostname: str
    #: ``ID`` and ``VERSION_ID`` from /etc/os-release ("debian", "12"); "" when absent.
    os_id: str
    os_version: str
    #: ``uname -r``.
    kernel: str
    cpu_count: int
    mem_total_bytes: int
    mem_available_bytes: int
    #: Bytes an unprivileged user can still write on the filesystem holding the path.
    disk_free_bytes: int
    #: TCP ports in LISTEN state on any address, IPv4 or IPv6.
    listening_ports: frozenset[int]


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def check_command(argv: Sequence[str], env: Mapping[str, str] | None) -> tuple[str, ...]:
    """Validate a ``Host.run`` argv and env; return argv as a tuple.

    Raises ``ValueError`` for an empty argv, a bare string (a shell command
    line is never accepted), a NUL byte anywhere, or an env name that is not a
    portable shell identifier. Env values are never quoted in the message.
    """
    if isinstance(argv, str | bytes):
        raise ValueError("argv must be a sequence of arguments, not a shell command string")
    args = tuple(argv)
    if not args:
        raise ValueError("argv is empty: name the program to run")
    for arg in args:
        if not isinstance(arg, str):
            raise ValueError(f"argv items must be str, got {type(arg).__name__}")
        if "\x00" in arg:
            raise ValueError("argv items cannot contain a NUL byte")
    for name, value in (env or {}).items():
        if not _ENV_NAME.match(name):
            raise ValueError(f"env name {name!r} is not a valid variable name")
        if "\x00" in value:
            raise ValueError(f"env value of {name} contains a NUL byte")
    return args


def check_host_path(path: str) -> str:
    """Reject a host path that is not absolute: ssh and local would resolve it differently."""
    if not path.startswith("/") or "\x00" in path:
        raise ValueError(f"host path {path!r} must be absolute")
    return path


# The facts script gets the path as "$1", never spliced into the script text.
# Each section starts with a marker line so parsing does not depend on what a
# tool prints; a section whose tool is missing is empty and parses to a default.
_FACTS_SCRIPT = r"""
echo '@@hostname'; uname -n
echo '@@kernel'; uname -r
echo '@@os-release'; cat /etc/os-release 2>/dev/null || cat /usr/lib/os-release 2>/dev/null
echo '@@cpus'; getconf _NPROCESSORS_ONLN 2>/dev/null || nproc 2>/dev/null
echo '@@meminfo'; cat /proc/meminfo 2>/dev/null
echo '@@statfs'; stat -f -c '%a %S' -- "$1" || echo 'missing'
echo '@@tcp'; cat /proc/net/tcp /proc/net/tcp6 2>/dev/null
echo '@@end'
"""

_TCP_LISTEN = "0A"


def parse_os_release(text: str) -> dict[str, str]:
    """Parse os-release(5) ``KEY=value`` lines, unquoting shell-style values."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, raw = line.partition("=")
        try:
            parts = shlex.split(raw)
        except ValueError:
            parts = [raw]
        fields[key] = parts[0] if parts else ""
    return fields


def parse_proc_net_tcp(text: str) -> frozenset[int]:
    """Local ports in LISTEN state from /proc/net/tcp and /proc/net/tcp6 contents."""
    ports: set[int] = set()
    for line in text.splitlines():
        cols = line.split()
        # Data rows: "sl local_address rem_address st ..."; the header has "sl" first.
        if len(cols) < 4 or cols[0] == "sl" or cols[3] != _TCP_LISTEN:
            continue
        _, _, port_hex = cols[1].rpartition(":")
        try:
            ports.add(int(port_hex, 16))
        except ValueError:
            continue
    return frozenset(ports)


def parse_meminfo(text: str) -> dict[str, int]:
    """/proc/meminfo as ``{name: bytes}`` (the file states kB, meaning KiB)."""
    values: dict[str, int] = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        cols = rest.split()
        if cols and cols[0].isdigit():
            scale = 1024 if len(cols) > 1 and cols[1] == "kB" else 1
            values[name.strip()] = int(cols[0]) * scale
    return values


def parse_facts(output: str, path: str) -> HostFacts:
    """Build ``HostFacts`` from the output of the facts script.

    Raises ``HostPathError`` when ``path`` does not exist on the host.
    """
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in output.splitlines():
        if line.startswith("@@"):
            current = sections.setdefault(line[2:], [])
        elif current is not None:
            current.append(line)

    def text(name: str) -> str:
        return "\n".join(sections.get(name, [])).strip()

    os_release = parse_os_release(text("os-release"))
    meminfo = parse_meminfo(text("meminfo"))
    statfs = text("statfs").split()
    if len(statfs) != 2 or not all(col.isdigit() for col in statfs):
        raise HostPathError(f"cannot read free space for {path!r}: the path does not exist")
    cpus = text("cpus")
    return HostFacts(
        hostname=text("hostname"),
        os_id=os_release.get("ID", ""),
        os_version=os_release.get("VERSION_ID", ""),
        kernel=text("kernel"),
        cpu_count=int(cpus) if cpus.isdigit() else 1,
        mem_total_bytes=meminfo.get("MemTotal", 0),
        # MemAvailable exists since Linux 3.14; MemFree is the closest older figure.
        mem_available_bytes=meminfo.get("MemAvailable", meminfo.get("MemFree", 0)),
        disk_free_bytes=int(statfs[0]) * int(statfs[1]),
        listening_ports=parse_proc_net_tcp(text("tcp")),
    )


class Host(ABC):
    """A machine exitplan runs commands on and copies files to.

    Commands are argv lists, never shell strings: each argument reaches the
    program exactly as given, whatever quotes, ``$``, ``;`` or newlines it
    holds. Host paths are absolute (``ValueError`` otherwise). Any method may
    raise ``HostUnreachable`` (retryable); a provider that checks identity
    raises ``HostKeyMismatch``, ``UnknownHostKey`` or ``HostAuthFailed``
    (fatal) before doing anything. Implementations are safe to use from
    several threads at once. A host is a context manager that closes itself.
    """

    def __init__(self, name: str) -> None:
        self.name = name

    @abstractmethod
    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float,
        input: bytes | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
    ) -> CommandResult:
        """Run ``argv`` to completion and return what it did.

        ``input`` is fed to stdin, which is then closed (stdin is empty when
        ``input`` is None). ``env`` adds variables to the host's default
        environment; ``cwd`` is the working directory (default: the user's
        home over ssh, the current directory locally). A non-zero exit is
        *not* an error here: call ``.check()``. Raises ``CommandTimeout``
        after ``timeout`` seconds, once the command has been killed;
        ``ValueError`` for a malformed argv or env. Neither ``input`` nor env
        values ever appear in an exception message or a log. Retry-safe: only
        if the command is.
        """

    @abstractmethod
    def put_bytes(self, data: bytes, remote: str, mode: int = 0o644) -> None:
        """Write ``data`` to the host path ``remote`` atomically, with ``mode``.

        The bytes go to a temporary file in the same directory, which gets
        ``mode`` and is then renamed over ``remote``: a reader sees the old
        file or the whole new one, never a part. The temporary file is removed
        on failure. Raises ``HostPathError`` when the directory is missing or
        not writable. Retry-safe: yes.
        """

    @abstractmethod
    def put_file(self, local: Path, remote: str, mode: int = 0o644) -> None:
        """Copy the local file ``local`` to ``remote``; same contract as ``put_bytes``.

        Streams the file, so its size is not limited by memory. Raises
        ``FileNotFoundError`` when ``local`` does not exist. Retry-safe: yes.
        """

    @abstractmethod
    def get_file(self, remote: str, local: Path) -> None:
        """Copy the host file ``remote`` to the local path ``local``, atomically.

        ``local`` is replaced only once the whole file has arrived. Raises
        ``HostPathError`` when ``remote`` does not exist or cannot be read.
        Retry-safe: yes.
        """

    def facts(self, path: str = "/") -> HostFacts:
        """Read-only facts about the host; disk space is measured for ``path``.

        Gathered with one command (uname, os-release, /proc), so it works on
        any Linux host with a POSIX ``sh``. Raises ``HostPathError`` when
        ``path`` does not exist. Retry-safe: yes.
        """
        check_host_path(path)
        result = self.run(["sh", "-c", _FACTS_SCRIPT, "exitplan-facts", path], timeout=30)
        if "@@end" not in result.stdout.decode("utf-8", "replace"):
            result.check()
        return parse_facts(result.stdout.decode("utf-8", "replace"), path)

    def describe(self) -> str:
        """A one-line, secret-free description for reports, e.g. ``ssh:deploy@web1:22``."""
        return self.name

    @abstractmethod
    def close(self) -> None:
        """Release connections. Idempotent; a later call reconnects where that makes sense."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
