"""ComputeProvider: where the service runs next (a new cloud server, or a host you rent)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

from orchestrator.clock import Clock
from orchestrator.errors import FatalError, RetryableError

# ---------------------------------------------------------------------------
# Compute: where the service runs next (a new cloud server, or a host you rent).
# ---------------------------------------------------------------------------


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


AccountState = Literal["active", "warning", "locked", "suspended", "refused"]


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
    key_file: Path | None = None
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
    key_file: Path | None = None


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
    key_file: Path | None = None
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
    def wait_ready(self, node: Node, deadline: datetime, clock: Clock) -> ReadyHost:
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
