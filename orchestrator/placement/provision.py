"""Provisioning down the probe's ranking, with the undo recorded as each server appears.

The result is a typed ``Placement``: everything a later step (replay, DNS
cutover) or a later process (resume, rollback) needs to reach the host with
its pinned key, never a dict that lost the key on the way. A server is
written to the undo log the moment ``provision`` returns, before waiting for
it to boot, so a kill -9 at any point leaves it recorded: resume reuses it
instead of creating a second one, and ``exitplan rollback`` destroys it.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from orchestrator.clock import Clock
from orchestrator.errors import ExitplanError, FatalError
from orchestrator.placement.probe import ProbeReport, ProbeResult
from orchestrator.run.serde import from_json, to_json
from providers.interfaces.compute import (
    ComputeProvider,
    NoCapacity,
    Node,
    ProviderRefused,
    ProvisionSpec,
    ReadyHost,
)
from providers.interfaces.host import (
    HostAuthFailed,
    HostKeyMismatch,
    HostUnreachable,
    UnknownHostKey,
)

#: The undo log's kind for a server created or a pool host claimed.
SERVER_UNDO = "server"


@dataclass(frozen=True)
class Placement:
    """The host the service goes to, and how to log in to it (no secret: key *paths*)."""

    candidate: str
    #: The probe row's target: a size@location for clouds, a host for pools.
    target: str
    provider: str
    node_id: str
    node_name: str
    address: str
    port: int
    user: str
    #: The pinned public host key line, and its OpenSSH fingerprint.
    host_key: str
    host_key_fingerprint: str
    #: The private key file exitplan logs in with (None: ssh-agent, or local).
    key_file: str | None
    #: "ssh", or "local" for this very machine (the sandbox's target).
    transport: str

    def ready_host(self) -> ReadyHost:
        return ReadyHost(
            address=self.address,
            port=self.port,
            user=self.user,
            host_key=self.host_key,
            node_id=self.node_id,
            key_file=Path(self.key_file) if self.key_file else None,
            transport=self.transport,
        )

    def describe(self) -> str:
        where = "this machine" if self.transport == "local" else f"{self.address}:{self.port}"
        return f"{self.candidate} ({self.target}) at {where}"


@dataclass(frozen=True)
class ProvisionAttempt:
    """One try at a candidate: ``outcome`` is ``"ready"``, ``"reused"`` or a refusal code."""

    candidate: str
    target: str
    outcome: str
    message: str = ""


class NoCandidateLeft(FatalError):
    """Every fitting candidate refused or failed; ``attempts`` says how."""

    def __init__(self, message: str, attempts: list[ProvisionAttempt]) -> None:
        super().__init__(message)
        self.attempts = attempts


def host_key_fingerprint(public_key_line: str) -> str:
    """``SHA256:...`` as OpenSSH prints it, or "" for no key (this machine)."""
    fields = public_key_line.split()
    if len(fields) < 2:
        return ""
    try:
        blob = base64.b64decode(fields[1], validate=True)
    except ValueError:
        return ""
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def placement_of(
    row: ProbeResult, provider: ComputeProvider, node: Node, ready: ReadyHost
) -> Placement:
    return Placement(
        candidate=row.candidate,
        target=row.target,
        provider=provider.describe(),
        node_id=node.id,
        node_name=node.name,
        address=ready.address,
        port=ready.port,
        user=ready.user,
        host_key=ready.host_key,
        host_key_fingerprint=host_key_fingerprint(ready.host_key),
        key_file=str(ready.key_file) if ready.key_file else None,
        transport=ready.transport,
    )


def _outcome(exc: ExitplanError) -> str:
    if isinstance(exc, ProviderRefused):
        return exc.reason
    if isinstance(exc, NoCapacity):
        return "no_capacity"
    if isinstance(exc, HostKeyMismatch | UnknownHostKey):
        return "host_key"
    if isinstance(exc, HostAuthFailed):
        return "login_key"
    if isinstance(exc, HostUnreachable):
        return "host_down"
    return type(exc).__name__


#: Records a server's undo the moment it exists; returns the undo entry's id.
RecordServer = Callable[[str, str, Node], int]
#: Marks an undo entry as done (the server was destroyed again).
SettleServer = Callable[[int], None]


@dataclass(frozen=True)
class ProvisionedServer:
    """A server recorded in the undo log by an earlier attempt of this run."""

    undo_id: int
    candidate: str
    target: str
    node: Node


def server_resource(candidate: str, target: str, node: Node) -> dict[str, Any]:
    """What the undo log keeps of a server: enough to find and destroy it later."""
    return {"candidate": candidate, "target": target, "node": to_json(node)}


def server_from_resource(undo_id: int, resource: Mapping[str, Any]) -> ProvisionedServer:
    return ProvisionedServer(
        undo_id,
        str(resource["candidate"]),
        str(resource.get("target", "")),
        from_json(Node, resource["node"]),
    )


def choose_and_provision(
    report: ProbeReport,
    providers: Mapping[str, ComputeProvider],
    *,
    name: str,
    authorized_key: str,
    key_file: Path | None,
    deadline: datetime,
    clock: Clock,
    record_server: RecordServer,
    settle_server: SettleServer,
    earlier: list[ProvisionedServer] = (),  # type: ignore[assignment]
) -> tuple[Placement, list[ProvisionAttempt]]:
    """Take the best host that can be had: reuse one this run already has, else provision.

    ``earlier`` are servers this run provisioned before it was interrupted
    (from the undo log): each is waited for first, and reused if it comes
    up; one that does not is destroyed. Then, for each fitting row of the
    probe, best first: ``provision`` (its undo recorded at once through
    ``record_server``), ``wait_ready`` until ``deadline``; a refusal or a
    host that never answers with its pinned key is recorded as an attempt,
    destroyed (``settle_server``), and the next row is tried.

    Returns the placement and every attempt; raises ``NoCandidateLeft``.
    The chosen server stays in the undo log until ``exitplan rollback``.
    """
    attempts: list[ProvisionAttempt] = []
    rows = {(row.candidate, row.target): row for row in report.results}
    for server in earlier:
        provider = providers.get(server.candidate)
        row = rows.get((server.candidate, server.target))
        if provider is None or row is None:
            continue
        try:
            ready = provider.wait_ready(server.node, deadline, clock)
        except ExitplanError as exc:
            attempts.append(
                ProvisionAttempt(server.candidate, server.target, _outcome(exc), str(exc))
            )
            _destroy(provider, server.node, server.undo_id, settle_server)
            continue
        attempts.append(ProvisionAttempt(server.candidate, server.target, "reused"))
        return placement_of(row, provider, server.node, ready), attempts
    for row in report.fitting:
        provider = providers.get(row.candidate)
        if provider is None:
            attempts.append(ProvisionAttempt(row.candidate, row.target, "missing", "no provider"))
            continue
        spec = ProvisionSpec(
            name=name,
            authorized_key=authorized_key,
            key_file=key_file,
            size=row.size,
            location=row.location,
            host_id=row.host_id,
        )
        try:
            node = provider.provision(spec)
        except ExitplanError as exc:
            attempts.append(ProvisionAttempt(row.candidate, row.target, _outcome(exc), str(exc)))
            continue
        undo_id = record_server(row.candidate, row.target, node)
        try:
            ready = provider.wait_ready(node, deadline, clock)
        except ExitplanError as exc:
            attempts.append(ProvisionAttempt(row.candidate, row.target, _outcome(exc), str(exc)))
            _destroy(provider, node, undo_id, settle_server)
            continue
        attempts.append(ProvisionAttempt(row.candidate, row.target, "ready"))
        return placement_of(row, provider, node, ready), attempts
    tried = "; ".join(f"{a.candidate} ({a.target}): {a.outcome}" for a in attempts) or "none fit"
    raise NoCandidateLeft(
        f"no candidate could be provisioned: {tried}; see the probe report", attempts
    )


def _destroy(provider: ComputeProvider, node: Node, undo_id: int, settle: SettleServer) -> None:
    # A destroy that fails leaves the entry pending: `exitplan rollback` tries again.
    with contextlib.suppress(ExitplanError):
        provider.destroy(node)
        settle(undo_id)


def undo_server(resource: Mapping[str, Any], context: Any) -> str:
    """Undo handler for ``server``: destroy the node (or release the pool claim). Idempotent."""
    from orchestrator.placement.probe import compute_providers_from_config

    server = server_from_resource(0, resource)
    providers = compute_providers_from_config(context.config.candidates)
    provider = providers.get(server.candidate)
    if provider is None:
        raise FatalError(
            f"server {server.node.id} ({server.node.name}) of candidate {server.candidate!r}: "
            "that candidate is no longer in the config, so exitplan cannot reach its provider; "
            "put it back in the config, or delete the server by hand"
        )
    provider.destroy(server.node)
    return f"{provider.describe()}: removed {server.node.name} ({server.node.id})"
