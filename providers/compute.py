"""``ComputeProvider`` implementations: ``ssh-pool`` (hosts you already rent)
and ``libcloud`` (a new server from a cloud, through libcloud compute drivers).

Host identity, the part that must not be skipped:

- ``ssh-pool``: each host's key is pinned in the config (``host_key``).
- ``libcloud``: DigitalOcean's API offers no host keys and no console
  output, so we *generate* the server's ed25519 host key here and hand it to
  the server in its cloud-init user-data (the ``ssh_keys`` module installs it
  as ``/etc/ssh/ssh_host_ed25519_key``, ``ssh_genkeytypes: []`` stops other
  keys being made). The public half is pinned before the server exists, so
  the first connection is already checked. The trade-off, stated: the
  private host key sits in the droplet's user-data, readable by the account
  owner and from inside the droplet; anyone with the API token could
  impersonate the host, but they could also replace it outright.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from orchestrator.clock import Clock
from orchestrator.errors import ConfigError, ExitplanError, FatalError, RetryableError
from providers.interfaces.compute import (
    AccountStatus,
    ComputeProvider,
    Location,
    NoCapacity,
    Node,
    NotReady,
    ProviderRefused,
    ProvisionSpec,
    Quota,
    ReadyHost,
    Size,
)
from providers.interfaces.host import Host, HostUnreachable
from providers.ssh import SshHost, parse_host_key

log = logging.getLogger(__name__)

_T = TypeVar("_T")

GIB = 1024**3
MIB = 1024**2


# ---------------------------------------------------------------------------
# Waiting for SSH, shared by both providers.
# ---------------------------------------------------------------------------


def _remaining_s(deadline: datetime, clock: Clock) -> float:
    return (deadline - clock.now()).total_seconds()


def wait_for_ssh(
    node: Node,
    deadline: datetime,
    clock: Clock,
    *,
    poll_interval_s: float,
    connect_timeout_s: float = 10.0,
) -> ReadyHost:
    """Poll until ``true`` runs on the node over SSH with its pinned key.

    Only ``HostUnreachable`` is waited out; a key mismatch, an unpinned key
    or a refused login key is raised at once (they do not go away). Raises
    ``NotReady`` once ``clock.now()`` passes ``deadline``. A clock that never
    advances and a host that never answers wait forever: give a deadline.
    """
    if node.address is None or node.host_key is None:
        raise NotReady(f"node {node.name} ({node.id}) has no address or pinned host key yet")
    while True:
        remaining = _remaining_s(deadline, clock)
        host = SshHost(
            node.address,
            node.port,
            user=node.user,
            host_key=node.host_key,
            key_file=node.key_file,
            connect_timeout=max(0.5, min(connect_timeout_s, remaining)),
            connect_retries=0,
            name=node.name,
        )
        try:
            with host:
                host.run(["true"], timeout=max(1.0, min(30.0, remaining))).check()
            return ReadyHost(
                address=node.address,
                port=node.port,
                user=node.user,
                host_key=node.host_key,
                node_id=node.id,
                key_file=node.key_file,
            )
        except HostUnreachable as exc:
            remaining = _remaining_s(deadline, clock)
            if remaining <= 0:
                raise NotReady(
                    f"{node.name} ({node.address}:{node.port}) did not answer over SSH by "
                    f"{deadline.isoformat()}: {exc}"
                ) from exc
            time.sleep(min(poll_interval_s, remaining))  # poll interval, bounded by the deadline


# ---------------------------------------------------------------------------
# ssh-pool: "provisioning" claims a pre-arranged host.
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PoolHost:
    """One configured pool host."""

    address: str
    port: int
    user: str
    host_key: str
    key_file: Path | None

    @property
    def id(self) -> str:
        return (
            f"[{self.address}]:{self.port}"
            if ":" in self.address
            else f"{self.address}:{self.port}"
        )


class _Claims:
    """Which pool hosts are claimed: in memory, or in a JSON state file shared
    by every exitplan process on this machine (``flock`` serialises them)."""

    def __init__(self, state_file: Path | None) -> None:
        self._state_file = state_file
        self._lock = threading.Lock()
        self._memory: set[str] = set()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[set[str]]:
        with self._lock:
            if self._state_file is None:
                yield self._memory
                return
            self._state_file.parent.mkdir(parents=True, exist_ok=True)
            lock_path = self._state_file.with_name(self._state_file.name + ".lock")
            with open(lock_path, "a") as lock_file:
                fcntl.flock(lock_file, fcntl.LOCK_EX)
                try:
                    claimed = set(json.loads(self._state_file.read_text() or "[]"))
                except FileNotFoundError:
                    claimed = set()
                before = set(claimed)
                yield claimed
                if claimed != before:
                    tmp = self._state_file.with_name(self._state_file.name + ".tmp")
                    tmp.write_text(json.dumps(sorted(claimed)))
                    os.replace(tmp, self._state_file)  # a reader sees old or new, never half

    def claim(self, candidates: Sequence[str]) -> str | None:
        """Claim the first of ``candidates`` not yet claimed; None if all are."""
        with self._locked() as claimed:
            for host_id in candidates:
                if host_id not in claimed:
                    claimed.add(host_id)
                    return host_id
        return None

    def release(self, host_id: str) -> None:
        with self._locked() as claimed:
            claimed.discard(host_id)

    def claimed(self) -> set[str]:
        with self._locked() as claimed:
            return set(claimed)


def _pool_host(entry: Mapping[str, object], index: int) -> PoolHost:
    def text(field: str, default: str | None = None) -> str:
        value = entry.get(field, default)
        if not isinstance(value, str) or not value:
            raise ConfigError(f"ssh-pool host #{index + 1}: {field} is missing or not text")
        return value

    port = entry.get("port", 22)
    if not isinstance(port, int) or isinstance(port, bool):
        raise ConfigError(f"ssh-pool host #{index + 1}: port must be a number")
    host_key = text("host_key")
    parse_host_key(host_key)  # ConfigError now, not at the first connection
    key_file = entry.get("key_file")
    return PoolHost(
        address=text("address"),
        port=port,
        user=text("user"),
        host_key=host_key,
        key_file=Path(str(key_file)) if key_file else None,
    )


class SshPoolProvider(ComputeProvider):
    """Hosts you already rent, reached over SSH with pinned host keys.

    ``provision`` claims a free host (``spec.host_id`` picks one); ``destroy``
    releases the claim and leaves the host alone. Claims live in memory, or
    in ``state_file`` so that several exitplan runs never hand out one host
    twice.
    """

    capabilities = frozenset({"pre_arranged"})
    provisioning_estimate_s = 0.0

    def __init__(
        self,
        name: str,
        *,
        hosts: Sequence[Mapping[str, object]],
        state_file: Path | None = None,
        poll_interval_s: float = 1.0,
        connect_timeout_s: float = 10.0,
    ) -> None:
        super().__init__(name)
        if not hosts:
            raise ConfigError(f"candidate {name!r}: an ssh-pool needs at least one host")
        self.hosts = tuple(_pool_host(entry, i) for i, entry in enumerate(hosts))
        self._by_id = {host.id: host for host in self.hosts}
        self._claims = _Claims(state_file)
        self._poll_interval_s = poll_interval_s
        self._connect_timeout_s = connect_timeout_s

    def describe(self) -> str:
        return f"ssh-pool:{self.name} ({len(self.hosts)} hosts)"

    def check_account(self) -> AccountStatus:
        """Always active: there is no account, each host is checked over SSH."""
        return AccountStatus("active", "pre-arranged hosts; each is checked over SSH")

    def list_sizes(self) -> list[Size]:
        """Empty: a pool host's size is measured over SSH, not offered."""
        return []

    def list_locations(self) -> list[Location]:
        """Empty: pool hosts have no regions."""
        return []

    def existing_hosts(self) -> list[ReadyHost]:
        claimed = self._claims.claimed()
        return [
            ReadyHost(h.address, h.port, h.user, h.host_key, h.id, h.key_file)
            for h in self.hosts
            if h.id not in claimed
        ]

    def provision(self, spec: ProvisionSpec) -> Node:
        """Claim ``spec.host_id`` or the first free host. ``NoCapacity`` if none is free."""
        if spec.host_id is not None and spec.host_id not in self._by_id:
            raise ConfigError(
                f"{self.describe()} has no host {spec.host_id!r}; known: {', '.join(self._by_id)}"
            )
        wanted = [spec.host_id] if spec.host_id else list(self._by_id)
        host_id = self._claims.claim(wanted)
        if host_id is None:
            which = f"host {spec.host_id}" if spec.host_id else "every host"
            raise NoCapacity(f"{self.describe()}: {which} is already claimed")
        host = self._by_id[host_id]
        return Node(
            id=host.id,
            name=spec.name,
            provider=self.name,
            state="claimed",
            address=host.address,
            port=host.port,
            user=host.user,
            host_key=host.host_key,
            key_file=host.key_file or spec.key_file,
        )

    def wait_ready(self, node: Node, deadline: datetime, clock: Clock) -> ReadyHost:
        return wait_for_ssh(
            node,
            deadline,
            clock,
            poll_interval_s=self._poll_interval_s,
            connect_timeout_s=self._connect_timeout_s,
        )

    def destroy(self, node: Node) -> None:
        """Release the claim; the host itself is not touched."""
        self._claims.release(node.id)


class LocalMachineProvider(ComputeProvider):
    """This machine as the one candidate host: the sandbox's target.

    It lets a new user see the probe and the choice of a target work without
    renting anything; the host is reached with ``providers.local.LocalHost``.
    """

    capabilities = frozenset({"pre_arranged", "local"})
    provisioning_estimate_s = 0.0

    def __init__(self, name: str) -> None:
        super().__init__(name)
        # One run at a time deploys here: a second claim is refused like a full pool's.
        self._claims = _Claims(None)

    def describe(self) -> str:
        return f"local:{self.name} (this machine)"

    def check_account(self) -> AccountStatus:
        return AccountStatus("active", "this machine")

    def list_sizes(self) -> list[Size]:
        return []

    def list_locations(self) -> list[Location]:
        return []

    def _ready(self) -> ReadyHost:
        return ReadyHost("localhost", 0, "", "", "localhost", None, transport="local")

    def existing_hosts(self) -> list[ReadyHost]:
        return [] if "localhost" in self._claims.claimed() else [self._ready()]

    def provision(self, spec: ProvisionSpec) -> Node:
        if self._claims.claim(["localhost"]) is None:
            raise NoCapacity(f"{self.describe()}: this machine is already claimed by this run")
        return Node(id="localhost", name=spec.name, provider=self.name, state="claimed")

    def wait_ready(self, node: Node, deadline: datetime, clock: Clock) -> ReadyHost:
        return self._ready()

    def destroy(self, node: Node) -> None:
        """Release the claim; the machine itself is not ours to remove."""
        self._claims.release(node.id)


def open_host(ready: ReadyHost, *, connect_timeout_s: float = 10.0) -> Host:
    """A ``Host`` for a ready host: over SSH with its pinned key, or this machine."""
    if ready.transport == "local":
        from providers.local import LocalHost

        return LocalHost(name=ready.node_id)
    return SshHost(
        ready.address,
        ready.port,
        user=ready.user,
        host_key=ready.host_key,
        key_file=ready.key_file,
        connect_timeout=connect_timeout_s,
        connect_retries=0,
        command_timeout=max(5.0, connect_timeout_s * 3),
    )


# ---------------------------------------------------------------------------
# libcloud clouds.
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _CloudProfile:
    """What we know about one libcloud compute driver."""

    module: str
    cls: str
    login_user: str
    provisioning_estimate_s: float
    capabilities: frozenset[str]


#: Drivers wired up so far. The class is the concrete API-v2 one:
#: ``DigitalOceanNodeDriver.__new__`` only swaps in v2 for itself, not for
#: the subclass we make to point it at another endpoint.
_CLOUDS: dict[str, _CloudProfile] = {
    "digitalocean": _CloudProfile(
        module="libcloud.compute.drivers.digitalocean",
        cls="DigitalOcean_v2_NodeDriver",
        login_user="root",
        # DigitalOcean quotes "under a minute" to active; sshd needs a bit more.
        provisioning_estimate_s=90.0,
        capabilities=frozenset({"sizes", "locations", "account", "quota", "destroys"}),
    ),
}

#: 422 messages that mean "no room here", as opposed to a malformed request.
_CAPACITY_WORDS = ("not available", "unavailable", "capacity", "out of stock", "limit")


def should_retry(exc: BaseException) -> bool:
    """Whether a failed libcloud compute call may succeed if made again (this provider's rule)."""
    from libcloud.common.exceptions import BaseHTTPError, RateLimitReachedError

    if isinstance(exc, RateLimitReachedError | ConnectionError | TimeoutError | socket.timeout):
        return True
    if isinstance(exc, ssl.SSLError):
        return False
    if isinstance(exc, OSError):
        return True
    if isinstance(exc, BaseHTTPError):
        return exc.code in (408, 429) or exc.code >= 500
    return False


def _endpoint_driver_class(
    base: type, host: str | None, port: int | None, secure: bool | None
) -> type:
    """A subclass of driver class ``base`` whose connection goes to host:port.

    libcloud's DigitalOcean driver accepts ``host``, ``port`` and ``secure``
    and then drops them (``DigitalOcean_v2_BaseDriver.__init__`` does not
    pass them on), so they are forced on the connection class instead, the
    way providers.storage points the MinIO driver at a host. The subclass
    also takes plain ``object.__new__``: the DigitalOcean classes' ``__new__``
    chain only works when called on ``DigitalOceanNodeDriver`` itself.
    """
    connection_base: Any = base.connectionCls  # type: ignore[attr-defined]

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        connection_base.__init__(self, *args, **kwargs)
        if secure is not None:
            self.secure = 1 if secure else 0
        if host is not None:
            self.host = host
        if port is not None:
            self.port = port
        elif secure is not None:
            self.port = 443 if secure else 80

    def __new__(cls: type, *args: Any, **kwargs: Any) -> Any:
        return object.__new__(cls)

    connection_cls = type("_ExitplanComputeConnection", (connection_base,), {"__init__": __init__})
    return type(
        f"_Exitplan{base.__name__}",
        (base,),
        {"connectionCls": connection_cls, "__new__": __new__},
    )


def generate_host_key() -> tuple[str, str]:
    """A new ed25519 host key: (OpenSSH private key PEM, public key line)."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    ).decode("ascii")
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode("ascii")
    )
    return private, public


def cloud_init_user_data(host_private: str, host_public: str, authorized_key: str) -> str:
    """cloud-config that installs our host key (and only it) and authorizes ``authorized_key``."""
    config: dict[str, Any] = {
        "ssh_deletekeys": True,
        "ssh_genkeytypes": [],
        "ssh_keys": {"ed25519_private": host_private, "ed25519_public": host_public},
    }
    if authorized_key:
        config["ssh_authorized_keys"] = [authorized_key]
    return "#cloud-config\n" + yaml.safe_dump(config, sort_keys=True)


class LibcloudComputeProvider(ComputeProvider):
    """A new server from a cloud libcloud supports (wired so far: DigitalOcean).

    ``size``, ``region`` and ``image`` are the defaults ``provision`` uses;
    ``host``/``port``/``secure`` point the driver at another API endpoint
    (a self-hosted or test stand-in). ``ssh_port`` and ``ssh_user`` are
    where the image's sshd answers and whom it lets in.
    """

    def __init__(
        self,
        name: str,
        *,
        driver: str,
        key: str,
        secret: str | None = None,
        size: str | None = None,
        region: str | None = None,
        image: str | None = None,
        host: str | None = None,
        port: int | None = None,
        secure: bool | None = None,
        ssh_port: int = 22,
        ssh_user: str | None = None,
        poll_interval_s: float = 5.0,
        connect_timeout_s: float = 10.0,
        api_timeout_s: float = 30.0,
    ) -> None:
        super().__init__(name)
        profile = _CLOUDS.get(driver)
        if profile is None:
            known = ", ".join(sorted(_CLOUDS))
            raise ConfigError(
                f"candidate {name!r}: compute driver {driver!r} is not supported; known: {known}"
            )
        import importlib

        base = getattr(importlib.import_module(profile.module), profile.cls)
        driver_cls = _endpoint_driver_class(base, host, port, secure)
        kwargs: dict[str, Any] = {"timeout": api_timeout_s}
        if secret is not None:
            kwargs["secret"] = secret
        self._driver: Any = driver_cls(key, **kwargs)
        self._driver_name = driver
        self._endpoint = (
            f"{'https' if secure is not False else 'http'}://{host}:{port}" if host else ""
        )
        self.capabilities = profile.capabilities
        self.provisioning_estimate_s = profile.provisioning_estimate_s
        self.configured_size = size
        self.configured_location = region
        self.image = image
        self.ssh_port = ssh_port
        self.ssh_user = ssh_user or profile.login_user
        self._poll_interval_s = poll_interval_s
        self._connect_timeout_s = connect_timeout_s

    def describe(self) -> str:
        where = f" at {self._endpoint}" if self._endpoint else ""
        return f"{self._driver_name}:{self.name}{where}"

    # -- calls, with errors mapped once -------------------------------------

    def _call(self, what: str, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        from libcloud.common.exceptions import BaseHTTPError
        from libcloud.common.types import InvalidCredsError

        try:
            return fn(*args, **kwargs)
        except InvalidCredsError:
            raise ProviderRefused(
                f"{what}: {self.describe()} rejected the API key; check the candidate's key",
                reason="auth",
            ) from None
        except ExitplanError:
            raise
        except BaseHTTPError as exc:
            # DigitalOcean's response class already appends "(code: N)".
            message = f"{what} at {self.describe()} failed: {exc.message}"
            text = str(exc.message).lower()
            if exc.code == 403:
                reason = (
                    "locked"
                    if "lock" in text
                    else "suspended"
                    if "suspend" in text
                    else "forbidden"
                )
                raise ProviderRefused(message, reason=reason) from None
            if exc.code == 422 and any(word in text for word in _CAPACITY_WORDS):
                raise NoCapacity(message) from None
            if should_retry(exc):
                raise RetryableError(message) from exc
            raise FatalError(message) from None
        except Exception as exc:
            message = f"{what} at {self.describe()} failed: {type(exc).__name__}: {exc}"
            if should_retry(exc):
                raise RetryableError(message) from exc
            raise FatalError(message) from exc

    # -- ComputeProvider -----------------------------------------------------

    def check_account(self) -> AccountStatus:
        try:
            # ex_ call: DigitalOcean's account endpoint is the only way to see
            # "locked"; it stays inside this provider.
            account = self._call("read the account", self._driver.ex_account_info)
        except ProviderRefused as exc:
            return AccountStatus("refused" if exc.reason == "auth" else "locked", str(exc))
        status = str(account.get("status") or "active")
        reason = str(account.get("status_message") or "")
        limit = account.get("droplet_limit")
        try:
            in_use: int | None = len(self._call("list servers", self._driver.list_nodes))
        except ProviderRefused as exc:
            return AccountStatus("locked", reason or str(exc))
        quota = Quota(int(limit) if limit is not None else None, in_use)
        if status == "locked":
            return AccountStatus("locked", reason or "the account is locked", quota)
        if status == "suspended":
            return AccountStatus("suspended", reason or "the account is suspended", quota)
        if status == "warning":
            return AccountStatus("warning", reason, quota)
        return AccountStatus("active", reason, quota)

    def list_sizes(self) -> list[Size]:
        sizes = self._call("list sizes", self._driver.list_sizes)
        result = [
            Size(
                id=str(s.id),
                vcpus=int(s.extra.get("vcpus") or 0),
                ram_bytes=int(s.ram) * MIB,
                disk_bytes=int(s.disk) * GIB,
                price_hourly=float(s.price) if s.price is not None else None,
                locations=tuple(str(r) for r in s.extra.get("regions") or ()),
            )
            for s in sizes
        ]
        return sorted(result, key=lambda s: (s.price_hourly is None, s.price_hourly or 0.0, s.id))

    def list_locations(self) -> list[Location]:
        # DigitalOcean's driver drops the "available" flag from each region
        # and filters on it instead (ex_available), so ask twice and compare.
        every = self._call("list regions", self._driver.list_locations, ex_available=False)
        open_ids = {loc.id for loc in self._call("list regions", self._driver.list_locations)}
        return [Location(str(loc.id), str(loc.name), loc.id in open_ids) for loc in every]

    def provision(self, spec: ProvisionSpec) -> Node:
        from libcloud.compute.base import NodeImage

        size_id = spec.size or self.configured_size
        region = spec.location or self.configured_location
        image_id = spec.image or self.image
        missing = [
            n for n, v in (("size", size_id), ("region", region), ("image", image_id)) if not v
        ]
        if missing:
            raise ConfigError(f"candidate {self.name!r}: set {', '.join(missing)} to provision")
        sizes = {s.id: s for s in self._call("list sizes", self._driver.list_sizes)}
        if size_id not in sizes:
            raise ConfigError(
                f"candidate {self.name!r}: size {size_id!r} is not offered; offered: "
                + ", ".join(sorted(sizes))
            )
        locations = {
            loc.id: loc
            for loc in self._call("list regions", self._driver.list_locations, ex_available=False)
        }
        if region not in locations:
            raise ConfigError(
                f"candidate {self.name!r}: region {region!r} does not exist; regions: "
                + ", ".join(sorted(locations))
            )
        assert size_id and region and image_id  # checked above; narrows the types
        image = NodeImage(id=image_id, name=image_id, driver=self._driver)
        host_private, host_public = generate_host_key()
        user_data = cloud_init_user_data(host_private, host_public, spec.authorized_key)
        created = self._call(
            f"create server {spec.name!r} ({size_id} in {region})",
            self._driver.create_node,
            spec.name,
            sizes[size_id],
            image,
            locations[region],
            ex_user_data=user_data,
        )
        log.info("%s: created %s (id %s)", self.describe(), spec.name, created.id)
        return self._node(created, host_public, spec.key_file)

    def _node(self, created: Any, host_key: str | None, key_file: Path | None) -> Node:
        return Node(
            id=str(created.id),
            name=str(created.name),
            provider=self.name,
            state=str(created.state),
            address=created.public_ips[0] if created.public_ips else None,
            port=self.ssh_port,
            user=self.ssh_user,
            host_key=host_key,
            key_file=key_file,
        )

    def _find(self, node_id: str) -> Any | None:
        for found in self._call("list servers", self._driver.list_nodes):
            if str(found.id) == node_id:
                return found
        return None

    def wait_ready(self, node: Node, deadline: datetime, clock: Clock) -> ReadyHost:
        from libcloud.compute.types import NodeState

        if node.host_key is None:
            raise FatalError(
                f"node {node.name} ({node.id}) has no pinned host key: it was not provisioned "
                "by exitplan, so its identity cannot be checked"
            )
        while True:
            found = self._find(node.id)
            if found is None:
                raise FatalError(f"{self.describe()}: server {node.name} ({node.id}) is gone")
            if found.state == NodeState.RUNNING and found.public_ips:
                current = self._node(found, node.host_key, node.key_file)
                return wait_for_ssh(
                    current,
                    deadline,
                    clock,
                    poll_interval_s=self._poll_interval_s,
                    connect_timeout_s=self._connect_timeout_s,
                )
            remaining = _remaining_s(deadline, clock)
            if remaining <= 0:
                raise NotReady(
                    f"{self.describe()}: server {node.name} ({node.id}) is still {found.state} "
                    f"at {deadline.isoformat()}"
                )
            time.sleep(min(self._poll_interval_s, remaining))  # API poll interval, bounded

    def destroy(self, node: Node) -> None:
        found = self._find(node.id)
        if found is None:
            return
        self._call(f"destroy server {node.name} ({node.id})", self._driver.destroy_node, found)
