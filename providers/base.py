"""The interfaces every provider of a kind implements, with their contracts.

Each method's docstring says what it returns, which errors it raises and
whether calling it again after a failure is safe. Provider-specific extras
(libcloud ``ex_`` calls, driver quirks) stay inside the provider modules; the
engine only ever sees these types. Optional abilities are declared in
``capabilities`` and asked for, never guessed.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from orchestrator.errors import ExitplanError

# ---------------------------------------------------------------------------
# Object storage: where the evacuated bytes go.
# ---------------------------------------------------------------------------


class ObjectNotFound(ExitplanError):
    """The named object does not exist in the store."""


@dataclass(frozen=True)
class StoredObject:
    """What a store knows about one published object."""

    key: str
    size: int
    #: sha256 of the bytes the store received, when the store measured them
    #: itself; ``None`` where it only reports a size.
    sha256: str | None = None


class ObjectStore(ABC):
    """A place to put bytes that the source cloud does not control.

    Keys are ``/``-separated relative paths. A key never starts with ``/``,
    never contains ``..`` segments, and never begins with ``.exitplan-``
    (reserved for staging); ``put_stream`` raises ``ValueError`` otherwise.
    """

    #: Declared optional abilities: ``"ranged_get"``, ``"delete"``, ``"sha256"``
    #: (put_stream reports the sha256 of what it stored).
    capabilities: frozenset[str] = frozenset()

    def __init__(self, name: str) -> None:
        self.name = name

    @abstractmethod
    def put_stream(self, key: str, chunks: Iterable[bytes]) -> StoredObject:
        """Store the bytes of ``chunks`` under ``key``, visible only once complete.

        The object is written under a staging name (or as an unfinished
        multipart upload) and published atomically when ``chunks`` is
        exhausted. If iterating ``chunks`` raises, nothing is published, the
        staging copy is removed and the exception propagates unchanged: a
        partial object is never visible as complete. An existing object under
        ``key`` is replaced. Retry-safe: yes.
        """

    @abstractmethod
    def stat(self, key: str) -> StoredObject | None:
        """The published object under ``key``, or ``None``. Retry-safe: yes."""

    @abstractmethod
    def get(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """Stream bytes ``[start, end)`` of the object (to its end when ``end`` is None).

        Raises ``ObjectNotFound``. Retry-safe: yes.
        """

    @abstractmethod
    def list(self, prefix: str = "") -> Iterator[StoredObject]:
        """Published objects whose key starts with ``prefix``, streamed.

        Staging copies are never listed. Order is unspecified. Retry-safe: yes.
        """

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object; removing a missing object is not an error. Retry-safe: yes."""

    def open_part_writer(self, key: str, size: int, resume_token: str) -> PartWriter:
        """A writer for an object of ``size`` bytes, written in place (``"part_write"``).

        The same ``resume_token`` (a stable name, e.g. a hash of the item's
        idempotency key) reopens the staged bytes of an interrupted attempt.
        Stores without the capability raise NotImplementedError.
        """
        raise NotImplementedError(f"{self.describe()} cannot write objects in place")

    def describe(self) -> str:
        """A one-line, secret-free description for reports, e.g. ``local:/srv/vault``."""
        return self.name


class PartWriter(ABC):
    """A staged object written in place, part by part, then published whole.

    Obtained from ``ObjectStore.open_part_writer`` on stores that declare the
    ``"part_write"`` capability. The staged bytes survive a killed process:
    opening a writer again with the same ``resume_token`` finds them, so an
    interrupted large object resumes from its completed parts.
    """

    @abstractmethod
    def write_at(self, offset: int, data: bytes) -> None:
        """Write ``data`` at ``offset``; thread-safe for disjoint ranges. Retry-safe: yes."""

    @abstractmethod
    def read_back(self) -> Iterator[bytes]:
        """The staged bytes, in order, as they are stored (holes read as zeros)."""

    @abstractmethod
    def commit(self) -> StoredObject:
        """Publish atomically under the key; the staging copy is gone afterwards."""

    @abstractmethod
    def abort(self) -> None:
        """Drop the staging copy; nothing is published. Safe to call twice."""


def check_object_key(key: str) -> str:
    """Reject keys that could escape the store or collide with staging names."""
    if not key or key.startswith("/") or "\\" in key or "\x00" in key:
        raise ValueError(f"object key {key!r} is not a relative '/'-separated path")
    parts = key.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise ValueError(f"object key {key!r} has an empty, '.' or '..' segment")
    if parts[0].startswith(".exitplan-"):
        raise ValueError(f"object key {key!r} uses the reserved prefix '.exitplan-'")
    return key


# ---------------------------------------------------------------------------
# Hosts: machines we run commands on and copy files to (ssh, local).
# ---------------------------------------------------------------------------

import re as _re  # noqa: E402  (append-only section: imports stay with the code that uses them)
import shlex as _shlex  # noqa: E402
from collections.abc import Mapping as _Mapping  # noqa: E402
from collections.abc import Sequence as _Sequence  # noqa: E402
from pathlib import Path as _Path  # noqa: E402
from types import TracebackType as _TracebackType  # noqa: E402
from typing import Self as _Self  # noqa: E402

from orchestrator.errors import FatalError, RetryableError  # noqa: E402


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
        command = _shlex.join(result.argv)
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


_ENV_NAME = _re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def check_command(argv: _Sequence[str], env: _Mapping[str, str] | None) -> tuple[str, ...]:
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
            parts = _shlex.split(raw)
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
        argv: _Sequence[str],
        *,
        timeout: float,
        input: bytes | None = None,
        env: _Mapping[str, str] | None = None,
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
    def put_file(self, local: _Path, remote: str, mode: int = 0o644) -> None:
        """Copy the local file ``local`` to ``remote``; same contract as ``put_bytes``.

        Streams the file, so its size is not limited by memory. Raises
        ``FileNotFoundError`` when ``local`` does not exist. Retry-safe: yes.
        """

    @abstractmethod
    def get_file(self, remote: str, local: _Path) -> None:
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

    def __enter__(self) -> _Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: _TracebackType | None,
    ) -> None:
        self.close()


# ---------------------------------------------------------------------------
# DNS: where a zone goes at cutover. The model is the *record set* (name +
# type, every value, one TTL): the unit both Route53 and the PowerDNS API
# change atomically. Shared by the Route53 exporter and every DNS provider.
# ---------------------------------------------------------------------------

import ipaddress as _ipaddress  # noqa: E402
from typing import Literal as _Literal  # noqa: E402

#: Types whose value is (or ends with) a host name, which must be absolute.
_HOSTNAME_TYPES = frozenset({"CNAME", "NS", "PTR", "MX", "SRV"})

_OCTAL_ESCAPE = _re.compile(r"\\([0-7]{3})")


def absolute_name(name: str) -> str:
    """``name`` lower-cased, with Route53's ``\\ooo`` octal escapes decoded and a trailing dot.

    Route53 lists ``*.example.com`` as ``\\052.example.com.``; every other
    system (BIND, PowerDNS) wants the ``*``.
    """
    decoded = _OCTAL_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), name.strip())
    decoded = decoded.lower()
    return decoded if decoded.endswith(".") else decoded + "."


def canonical_value(rtype: str, value: str) -> str:
    """A record value in presentation form with its host name made absolute.

    Route53 treats every host name in a value as absolute whether or not it
    ends with a dot; BIND and PowerDNS read a dotless name as relative to the
    zone, so the dot is added. IPv6 addresses are compressed, as PowerDNS
    stores them. Everything else (TXT quoting included) is returned exactly
    as given.
    """
    value = value.strip()
    if rtype == "AAAA":
        # PowerDNS stores IPv6 compressed and lower-case (2001:0DB8::0001 -> 2001:db8::1).
        try:
            return str(_ipaddress.IPv6Address(value))
        except ValueError:
            return value
    if rtype not in _HOSTNAME_TYPES:
        return value
    head, _, host = value.rpartition(" ")
    if not host or host.endswith("."):
        return value
    return f"{head} {host}." if head else f"{host}."


@dataclass(frozen=True)
class AliasTarget:
    """A Route53 alias: the name answers with the target's records. No BIND equivalent."""

    hosted_zone_id: str
    dns_name: str
    evaluate_target_health: bool


@dataclass(frozen=True)
class RecordSet:
    """Every value of one (name, type[, set identifier]) with one TTL.

    ``name`` is absolute and lower-case (see ``absolute_name``). ``values``
    are in presentation form, sorted, exactly as the source spelled them
    (TXT quotes and escapes kept). ``ttl`` is None for an alias.
    ``set_identifier`` and ``routing`` (canonical JSON of Route53's routing
    policy fields: Weight, Region, Failover, GeoLocation, ...) are set only
    for policy records, which plain DNS servers cannot express.
    """

    name: str
    type: str
    ttl: int | None
    values: tuple[str, ...] = ()
    alias: AliasTarget | None = None
    set_identifier: str | None = None
    routing: str | None = None

    @property
    def key(self) -> tuple[str, str, str]:
        """What identifies the set in a zone: (name, type, set identifier or "")."""
        return (self.name, self.type, self.set_identifier or "")

    def canonical(self) -> RecordSet:
        """The same set with host names in values made absolute, for comparing across systems."""
        return RecordSet(
            name=self.name,
            type=self.type,
            ttl=self.ttl,
            values=tuple(sorted(canonical_value(self.type, v) for v in self.values)),
            alias=self.alias,
            set_identifier=self.set_identifier,
            routing=self.routing,
        )


@dataclass(frozen=True)
class RecordChange:
    """One change to apply. ``create`` and ``update`` both replace the whole set (upsert)."""

    action: _Literal["create", "update", "delete"]
    record_set: RecordSet


@dataclass(frozen=True)
class SkippedRecordSet:
    """A record set a target cannot take, and why (for the report)."""

    record_set: RecordSet
    reason: str


class DnsZoneNotFound(FatalError):
    """The named zone does not exist at the DNS provider; create it first."""


class DnsProvider(ABC):
    """A DNS service that can host an evacuated zone.

    Zone names are absolute (``example.com.``); a name without the dot is
    accepted and made absolute. Any method may raise ``RetryableError`` (the
    service was unreachable or answered 5xx: safe to call again) or
    ``FatalError`` (bad credentials, a rejected change: retrying will not help).
    """

    #: Declared optional abilities: ``"alias"`` (Route53-style alias sets),
    #: ``"routing_policies"`` (several sets per name/type with a set identifier),
    #: ``"create_zone"``, ``"managed_soa"`` (the provider writes the SOA itself).
    capabilities: frozenset[str] = frozenset()

    def __init__(self, name: str) -> None:
        self.name = name

    @abstractmethod
    def list_zones(self) -> list[str]:
        """Absolute names of every zone the provider hosts. Retry-safe: yes."""

    @abstractmethod
    def create_zone(self, zone_name: str, *, nameservers: _Sequence[str]) -> None:
        """Create the zone with its apex NS set; an existing zone is left as is.

        Retry-safe: yes. Raises ``FatalError`` if the provider lacks the
        ``create_zone`` capability.
        """

    @abstractmethod
    def list_records(self, zone_name: str) -> list[RecordSet]:
        """Every record set in the zone, values sorted, names absolute.

        Raises ``DnsZoneNotFound``. Retry-safe: yes.
        """

    @abstractmethod
    def apply(self, zone_name: str, changes: _Sequence[RecordChange]) -> None:
        """Apply ``changes`` to the zone in one request where the provider allows.

        ``create``/``update`` replace the set named by (name, type) whole,
        ``delete`` removes it (deleting a missing set is not an error), so
        applying the same changes twice leaves the same zone: retry-safe.
        Raises ``DnsZoneNotFound``; ``FatalError`` if a change needs a
        capability the provider lacks (see ``portable_record_sets``).
        """

    def describe(self) -> str:
        """A one-line, secret-free description, e.g. ``powerdns:127.0.0.1:8081``."""
        return self.name


# ---------------------------------------------------------------------------
# Compute: where the service runs next (a new cloud server, or a host you rent).
# ---------------------------------------------------------------------------

from datetime import datetime as _datetime  # noqa: E402

from orchestrator.clock import Clock as _Clock  # noqa: E402


class ProviderRefused(FatalError):
    """The provider will not serve this account: credentials rejected, account
    locked or suspended, or the action forbidden.

    Fatal for this candidate (retrying will not help until a person acts);
    the engine falls back to the next one. ``reason`` is a short, secret-free
    code for reports: ``"auth"``, ``"locked"``, ``"suspended"``, ``"forbidden"``.
    """

    def __init__(self, message: str, reason: str = "forbidden") -> None:
        super().__init__(message)
        self.reason = reason


class NoCapacity(FatalError):
    """The provider cannot give us a server now: region or size unavailable,
    quota used up, or every pre-arranged host already claimed.

    Fatal for this candidate: capacity does not come back within a
    deadline-driven run often enough to wait for it; fall back instead.
    """


class NotReady(RetryableError):
    """A provisioned node did not become reachable over SSH before the deadline.

    Retryable in the sense that the node may still come up; the caller
    decides whether to wait longer or destroy it and fall back.
    """


@dataclass(frozen=True)
class Size:
    """A server size a provider offers.

    ``disk_bytes`` is the root disk. ``price_hourly`` is in the provider's
    currency (USD for every cloud wired so far), ``None`` when unknown.
    ``locations`` are the location ids the size is offered in; empty means
    "not reported" (not "nowhere").
    """

    id: str
    vcpus: int
    ram_bytes: int
    disk_bytes: int
    price_hourly: float | None = None
    locations: tuple[str, ...] = ()


@dataclass(frozen=True)
class Location:
    """A region or data centre. ``available`` is False when the provider says
    it takes no new servers now."""

    id: str
    name: str
    available: bool = True


@dataclass(frozen=True)
class Quota:
    """How many servers the account may have, and has (``None``: not reported)."""

    server_limit: int | None
    servers_in_use: int | None

    @property
    def servers_left(self) -> int | None:
        """Servers that can still be created, when both figures are known."""
        if self.server_limit is None or self.servers_in_use is None:
            return None
        return max(0, self.server_limit - self.servers_in_use)


AccountState = _Literal["active", "warning", "locked", "suspended", "refused"]


@dataclass(frozen=True)
class AccountStatus:
    """What the provider says about the account.

    ``state`` is ``"active"`` (usable), ``"warning"`` (usable; ``reason``
    says what the provider warns about), or ``"locked"``, ``"suspended"``,
    ``"refused"`` (credentials rejected): not usable, ``reason`` says why.
    """

    state: AccountState
    reason: str = ""
    quota: Quota | None = None

    @property
    def usable(self) -> bool:
        """True when servers can be created with this account."""
        return self.state in ("active", "warning")


@dataclass(frozen=True)
class ProvisionSpec:
    """What to provision.

    ``size``/``location``/``image`` override the provider's configured
    defaults. ``host_id`` asks a pre-arranged pool for one particular host
    (the one a probe measured); clouds ignore it. ``authorized_key`` is the
    public key line allowed to log in; ``key_file`` is its private half,
    which ``wait_ready`` logs in with (``None``: ssh-agent).
    """

    name: str
    authorized_key: str = ""
    key_file: _Path | None = None
    size: str | None = None
    location: str | None = None
    image: str | None = None
    host_id: str | None = None


@dataclass(frozen=True)
class Node:
    """A server a provider created or claimed for us.

    ``id`` is the provider's id (a droplet id, or ``address:port`` for a
    pool host); pass the node back to ``wait_ready`` and ``destroy``.
    ``host_key`` is the public key line pinned for it, learned when it was
    provisioned, never from the host itself.
    """

    id: str
    name: str
    provider: str
    state: str
    address: str | None = None
    port: int = 22
    user: str = "root"
    host_key: str | None = None
    key_file: _Path | None = None


@dataclass(frozen=True)
class ReadyHost:
    """A node that answered over SSH with its pinned host key.

    Everything ``providers.ssh.SshHost`` needs to connect: ``address``,
    ``port``, ``user``, ``host_key`` (pinned public key line) and
    ``key_file`` (``None``: ssh-agent). ``node_id`` ties it back to the node.
    """

    address: str
    port: int
    user: str
    host_key: str
    node_id: str
    key_file: _Path | None = None
    #: How to reach it: ``"ssh"``, or ``"local"`` for this very machine (the
    #: sandbox's target), which needs neither a key nor a connection.
    transport: str = "ssh"


class ComputeProvider(ABC):
    """A place that can give us a server to run the service on.

    Host identity: every ``ReadyHost`` carries a host key learned from the
    provider (pinned config, the provider's API, or a key we generated and
    handed to the server at creation) and checked on every connection;
    never a key trusted because the host presented it.

    Errors, for every method: ``ProviderRefused`` (credentials, locked or
    suspended account: fatal), ``NoCapacity`` (fatal for this candidate),
    ``RetryableError`` (the API was unreachable or answered 5xx/429: the same
    call may succeed again), ``ConfigError`` (a configured size, region or
    image the provider does not offer).
    """

    #: Declared optional abilities: ``"sizes"`` (list_sizes reports real
    #: sizes), ``"locations"``, ``"account"`` (check_account asks the
    #: provider), ``"quota"`` (AccountStatus.quota is reported),
    #: ``"pre_arranged"`` (existing_hosts lists hosts a probe can measure
    #: before anything is provisioned), ``"destroys"`` (destroy deletes a
    #: server; without it, destroy only releases a claim).
    capabilities: frozenset[str] = frozenset()

    #: Typical seconds from ``provision`` to SSH answering, used to rank
    #: candidates before any is provisioned.
    provisioning_estimate_s: float = 0.0

    #: The size and location the config pins (``None``: any that fits).
    configured_size: str | None = None
    configured_location: str | None = None

    def __init__(self, name: str) -> None:
        self.name = name

    @abstractmethod
    def check_account(self) -> AccountStatus:
        """Whether the credentials are accepted and the account is usable.

        Returns an ``AccountStatus``; a rejected key or a locked account is a
        *status* (``refused``/``locked``/``suspended``), not an exception, so
        probes can report it. Raises ``RetryableError`` when the API cannot
        be reached. Read-only: retry-safe.
        """

    @abstractmethod
    def list_sizes(self) -> list[Size]:
        """Sizes this account can provision, cheapest first where prices are known.

        Empty for providers without the ``"sizes"`` capability. Raises
        ``ProviderRefused``, ``RetryableError``. Read-only: retry-safe.
        """

    @abstractmethod
    def list_locations(self) -> list[Location]:
        """Regions/locations, with whether each takes new servers now.

        Empty for providers without the ``"locations"`` capability. Raises
        ``ProviderRefused``, ``RetryableError``. Read-only: retry-safe.
        """

    def existing_hosts(self) -> list[ReadyHost]:
        """Pre-arranged hosts that are not claimed (``"pre_arranged"`` providers).

        Nothing is contacted: the entries come from the config. Empty for
        providers that create servers. Retry-safe: yes.
        """
        return []

    @abstractmethod
    def provision(self, spec: ProvisionSpec) -> Node:
        """Create (or claim) a server and return at once, before it is reachable.

        The caller must ``destroy`` the node if it does not use it: register
        that undo as soon as this returns. Raises ``ProviderRefused``,
        ``NoCapacity``, ``ConfigError``, ``RetryableError``. Retry-safe: *no*
        for clouds (a retried create after a lost answer may create a second
        server; list nodes by ``spec.name`` before retrying); yes for pools.
        """

    @abstractmethod
    def wait_ready(self, node: Node, deadline: _datetime, clock: _Clock) -> ReadyHost:
        """Block until the node answers over SSH with its pinned key, or ``deadline``.

        Polls the provider (state, address) and then SSH (``true`` with the
        pinned host key and the spec's login key). Raises ``NotReady`` when
        ``clock.now()`` passes ``deadline`` first; ``HostKeyMismatch`` at
        once if the host presents another key (never retried);
        ``HostAuthFailed`` if our key is refused; ``ProviderRefused`` /
        ``NoCapacity`` if the provider gave up on the node. Retry-safe: yes.
        """

    @abstractmethod
    def destroy(self, node: Node) -> None:
        """Delete the server (clouds) or release the claim (pools).

        Destroying a node that is already gone is not an error. Raises
        ``RetryableError`` when the API cannot be reached. Retry-safe: yes.
        """

    def describe(self) -> str:
        """A one-line, secret-free description, e.g. ``digitalocean:ams3``."""
        return self.name
