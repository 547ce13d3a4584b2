"""Candidate targets -> a ranked probe report, and provisioning down that ranking.

``probe_candidates`` asks every candidate, concurrently and within a time
budget, what the service needs to know before choosing where to go:

- the account: credentials accepted, not locked or suspended, quota left;
- for clouds: a size that fits (vCPU, RAM, disk) in a region taking servers;
- for pre-arranged hosts: SSH with the pinned key, OS, free disk at the
  restore path, available memory, needed ports not already taken, upload
  bandwidth from here (a short timed SFTP write) and RTT (``true`` over SSH).

The score, in order (``ProbeResult.sort_key``):

1. status: ``fit`` (every hard requirement met) before ``unfit`` (reachable
   but too small, or a needed port is taken) before ``refused`` (auth
   failed, account locked/suspended, no capacity, impostor host key, host
   down, probe out of time);
2. estimated seconds to ready = provisioning estimate + data bytes / upload
   bandwidth (measured for hosts; ``assumed_bandwidth_bps`` for clouds,
   whose host does not exist yet);
3. hourly price where known, then the names, so the order is stable.

``choose_and_provision`` walks the fitting rows in that order and falls back
to the next when provisioning or waiting fails, recording every attempt.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any, Literal

from orchestrator.clock import Clock
from orchestrator.config import CandidateConfig, Secret
from orchestrator.errors import ExitplanError, FatalError, RetryableError
from orchestrator.inventory import Fact, InventorySummary
from providers.compute import open_host
from providers.interfaces.compute import (
    ComputeProvider,
    NoCapacity,
    ProviderRefused,
    ReadyHost,
    Size,
)
from providers.interfaces.host import (
    HostAuthFailed,
    HostKeyMismatch,
    HostUnreachable,
    UnknownHostKey,
)
from providers.registry import get_provider_spec, load_provider_class

GIB = 1024**3
MIB = 1024**2

#: Upload rate assumed for a cloud server that does not exist yet (100 Mbit/s).
DEFAULT_ASSUMED_BANDWIDTH_BPS = 12.5e6
#: Bytes written over SFTP to measure upload bandwidth to a host.
DEFAULT_BANDWIDTH_SAMPLE_BYTES = 4 * MIB
#: Disk asked for on top of the data: room for the OS, packages and logs.
OS_DISK_ALLOWANCE_BYTES = 2 * GIB
#: Fraction of the data size added as headroom (restores unpack, databases grow).
DATA_HEADROOM = 0.2

Status = Literal["fit", "unfit", "refused"]
_STATUS_ORDER: dict[str, int] = {"fit": 0, "unfit": 1, "refused": 2}

# ---------------------------------------------------------------------------
# Requirements
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Requirements:
    """What the new home must offer. Every field is a hard requirement.

    ``disk_bytes`` is free disk needed at the restore path (data plus
    headroom plus OS allowance); ``data_bytes`` is what must be uploaded,
    used to estimate time to ready. ``ports`` must not already be listening.
    """

    vcpus: int = 1
    ram_bytes: int = 512 * MIB
    disk_bytes: int = OS_DISK_ALLOWANCE_BYTES
    data_bytes: int = 0
    ports: frozenset[int] = frozenset()

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "ports": sorted(self.ports)}


def _open_tcp_ports(attributes: Mapping[str, Any]) -> set[int]:
    ports: set[int] = set()
    for group in attributes.get("security_groups") or []:
        for rule in group.get("open_ports") or []:
            low, high = rule.get("from_port"), rule.get("to_port")
            # "-1" (all protocols) and wide ranges say nothing about which
            # ports the service listens on; single tcp ports do.
            if rule.get("protocol") != "tcp" or low is None or high is None:
                continue
            if high - low <= 16:
                ports.update(range(int(low), int(high) + 1))
    ports.discard(22)  # the new host's own sshd, which we log in through
    return ports


def requirements_from_inventory(
    summary: InventorySummary,
    ec2: Fact | Mapping[str, Any] | None = None,
    *,
    data_bytes: int | None = None,
) -> Requirements:
    """Requirements for the new home from what the source runs and holds.

    ``ec2`` is the service's instance (its ``Fact`` or the fact's
    attributes): vCPUs and memory as AWS describes its instance type
    (``vcpus`` and ``memory_mib``, from DescribeInstanceTypes in the
    inventory), its security groups the TCP ports the service serves.
    Raises ``FatalError`` naming the type when AWS did not describe it: a
    guessed size could pick a host the service does not fit. ``data_bytes``
    defaults to everything the inventory counted; the disk needed is that
    plus ``DATA_HEADROOM`` plus ``OS_DISK_ALLOWANCE_BYTES``.
    """
    attributes: Mapping[str, Any] = {}
    if isinstance(ec2, Fact):
        attributes = ec2.attributes
    elif ec2 is not None:
        attributes = ec2
    vcpus, ram_bytes = 1, 512 * MIB
    instance_type = attributes.get("instance_type")
    if instance_type:
        if not attributes.get("vcpus") or not attributes.get("memory_mib"):
            raise FatalError(
                f"instance type {instance_type!r} of {attributes.get('name') or 'the service'}: "
                "AWS did not describe it (DescribeInstanceTypes), so the size of its new home is "
                "unknown; give the candidates' size in the config (size:) and check the type"
            )
        vcpus, ram_bytes = int(attributes["vcpus"]), int(attributes["memory_mib"]) * MIB
    data = summary.total_bytes if data_bytes is None else data_bytes
    disk = math.ceil(data * (1 + DATA_HEADROOM)) + OS_DISK_ALLOWANCE_BYTES
    return Requirements(
        vcpus=vcpus,
        ram_bytes=ram_bytes,
        disk_bytes=disk,
        data_bytes=data,
        ports=frozenset(_open_tcp_ports(attributes)),
    )


# ---------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------


@dataclass
class ProbeResult:
    """One row of the report: a pool host, or a cloud candidate's best size.

    ``refusal`` is a short code when ``status == "refused"``: ``auth``,
    ``locked``, ``suspended``, ``forbidden``, ``no_capacity``,
    ``host_key`` (impostor or unpinned key), ``login_key``, ``host_down``,
    ``api_unreachable``, ``budget``, ``error``. ``reasons`` say in words why
    a row is unfit or refused.
    """

    candidate: str
    target: str
    status: Status
    reasons: list[str] = field(default_factory=list)
    refusal: str | None = None
    host: ReadyHost | None = None
    host_id: str | None = None
    size: str | None = None
    location: str | None = None
    price_hourly: float | None = None
    os: str | None = None
    vcpus: int | None = None
    ram_bytes: int | None = None
    mem_available_bytes: int | None = None
    disk_free_bytes: int | None = None
    busy_ports: list[int] = field(default_factory=list)
    bandwidth_bps: float | None = None
    bandwidth_measured: bool = False
    rtt_s: float | None = None
    servers_left: int | None = None
    provisioning_estimate_s: float = 0.0
    estimated_ready_s: float | None = None
    rank: int = 0

    def sort_key(self) -> tuple[int, float, float, str, str]:
        """Status, then time to ready, then price, then names (see the module doc)."""
        return (
            _STATUS_ORDER[self.status],
            self.estimated_ready_s if self.estimated_ready_s is not None else math.inf,
            self.price_hourly if self.price_hourly is not None else math.inf,
            self.candidate,
            self.target,
        )

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        if self.host is not None:
            data["host"] = {**asdict(self.host), "key_file": _path_text(self.host.key_file)}
        return data


def _path_text(path: Path | None) -> str | None:
    return str(path) if path is not None else None


@dataclass
class ProbeReport:
    """Every candidate's rows, best first (``results[0]`` is the pick)."""

    requirements: Requirements
    probed_at: datetime
    budget_s: float
    elapsed_s: float
    results: list[ProbeResult]

    @property
    def fitting(self) -> list[ProbeResult]:
        """Rows meeting every hard requirement, best first."""
        return [r for r in self.results if r.status == "fit"]

    def to_json(self) -> str:
        """The report as JSON text (no secrets: keys are public halves, files are paths)."""
        return json.dumps(
            {
                "probed_at": self.probed_at.isoformat(),
                "budget_s": self.budget_s,
                "elapsed_s": round(self.elapsed_s, 3),
                "requirements": self.requirements.to_json(),
                "results": [r.to_json() for r in self.results],
            },
            indent=2,
            sort_keys=True,
        )


def _bytes_text(value: int | None) -> str:
    if value is None:
        return "-"
    for unit, scale in (("TiB", 1024**4), ("GiB", GIB), ("MiB", MIB)):
        if value >= scale:
            return f"{value / scale:.1f}{unit}"
    return f"{value}B"


def format_table(report: ProbeReport) -> str:
    """The report as a plain-text table, one row per result, best first."""
    headers = ("#", "candidate", "target", "status", "cpu", "ram", "disk", "up", "rtt", "ready")
    rows: list[tuple[str, ...]] = []
    for r in report.results:
        bandwidth = "-"
        if r.bandwidth_bps is not None:
            bandwidth = f"{r.bandwidth_bps / MIB:.1f}MiB/s" + ("" if r.bandwidth_measured else "?")
        rows.append(
            (
                str(r.rank),
                r.candidate,
                r.target,
                r.status if r.refusal is None else f"refused:{r.refusal}",
                str(r.vcpus) if r.vcpus is not None else "-",
                _bytes_text(r.mem_available_bytes if r.mem_available_bytes else r.ram_bytes),
                _bytes_text(r.disk_free_bytes),
                bandwidth,
                f"{r.rtt_s * 1000:.1f}ms" if r.rtt_s is not None else "-",
                f"{r.estimated_ready_s:.0f}s" if r.estimated_ready_s is not None else "-",
            )
        )
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for r, row in zip(report.results, rows, strict=True):
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        lines.extend(f"      {reason}" for reason in r.reasons)
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------
# Probing
# ---------------------------------------------------------------------------


def compute_providers_from_config(
    candidates: Sequence[CandidateConfig],
) -> dict[str, ComputeProvider]:
    """A provider per configured candidate, by name (registry classes, secrets revealed)."""
    providers: dict[str, ComputeProvider] = {}
    for candidate in candidates:
        cls = load_provider_class(get_provider_spec("compute", candidate.kind))
        options = {
            key: value.reveal() if isinstance(value, Secret) else value
            for key, value in candidate.options.items()
        }
        providers[candidate.name] = cls(candidate.name, **options)
    return providers


@dataclass(frozen=True)
class _ProbeSettings:
    requirements: Requirements
    data_path: str
    bandwidth_sample_bytes: int
    assumed_bandwidth_bps: float
    connect_timeout_s: float


def _refused(candidate: str, target: str, code: str, reason: str) -> ProbeResult:
    return ProbeResult(candidate, target, "refused", reasons=[reason], refusal=code)


def _estimate(result: ProbeResult, data_bytes: int) -> None:
    if result.bandwidth_bps:
        result.estimated_ready_s = (
            result.provisioning_estimate_s + data_bytes / result.bandwidth_bps
        )


def _size_shortfalls(size: Size, req: Requirements) -> list[str]:
    short = []
    if size.vcpus < req.vcpus:
        short.append(f"size {size.id} has {size.vcpus} vCPU, needs {req.vcpus}")
    if size.ram_bytes < req.ram_bytes:
        short.append(
            f"size {size.id} has {_bytes_text(size.ram_bytes)} RAM, needs {_bytes_text(req.ram_bytes)}"
        )
    if size.disk_bytes < req.disk_bytes:
        short.append(
            f"size {size.id} has {_bytes_text(size.disk_bytes)} disk, "
            f"needs {_bytes_text(req.disk_bytes)}"
        )
    return short


def _probe_cloud(
    provider: ComputeProvider, settings: _ProbeSettings, servers_left: int | None
) -> ProbeResult:
    req = settings.requirements
    name = provider.name
    sizes = provider.list_sizes()
    locations = {loc.id: loc for loc in provider.list_locations()}
    wanted_size = provider.configured_size
    wanted_location = provider.configured_location
    target = f"{wanted_size or '?'}@{wanted_location or '?'}"
    if wanted_location is not None:
        location = locations.get(wanted_location)
        if location is None:
            return _refused(name, target, "error", f"region {wanted_location} does not exist")
        if not location.available:
            return _refused(
                name, target, "no_capacity", f"region {wanted_location} takes no new servers now"
            )
    if servers_left == 0:
        return _refused(name, target, "no_capacity", "the account's server limit is reached")
    open_ids = {loc_id for loc_id, loc in locations.items() if loc.available}
    if wanted_location is None and locations and not open_ids:
        return _refused(name, target, "no_capacity", "no region takes new servers now")
    considered = [s for s in sizes if wanted_size is None or s.id == wanted_size]
    if not considered:
        return _refused(name, target, "error", f"size {wanted_size} is not offered")
    best: Size | None = None
    best_location: str | None = None
    shortfalls: list[str] = []
    for size in considered:  # cheapest first
        where = [wanted_location] if wanted_location else sorted(open_ids)
        where = [loc for loc in where if not size.locations or loc in size.locations]
        short = _size_shortfalls(size, req)
        if not short and where:
            best, best_location = size, where[0]
            break
        shortfalls.extend(short or [f"size {size.id} is not offered in an open region"])
    if best is None and any(not _size_shortfalls(s, req) for s in considered):
        return _refused(
            name, target, "no_capacity", "sizes that fit are not offered in an open region"
        )
    if best is None:
        biggest = considered[-1]
        result = ProbeResult(
            name,
            target,
            "unfit",
            reasons=shortfalls[-3:],
            size=biggest.id,
            vcpus=biggest.vcpus,
            ram_bytes=biggest.ram_bytes,
            disk_free_bytes=biggest.disk_bytes,
            price_hourly=biggest.price_hourly,
        )
    else:
        result = ProbeResult(
            name,
            f"{best.id}@{best_location}",
            "fit",
            size=best.id,
            location=best_location,
            vcpus=best.vcpus,
            ram_bytes=best.ram_bytes,
            disk_free_bytes=best.disk_bytes,
            price_hourly=best.price_hourly,
        )
    result.servers_left = servers_left
    result.provisioning_estimate_s = provider.provisioning_estimate_s
    result.bandwidth_bps = settings.assumed_bandwidth_bps
    _estimate(result, req.data_bytes)
    return result


def _probe_host(
    provider: ComputeProvider, host: ReadyHost, settings: _ProbeSettings
) -> ProbeResult:
    req = settings.requirements
    target = host.node_id
    ssh = open_host(host, connect_timeout_s=settings.connect_timeout_s)
    try:
        with ssh:
            ssh.run(["true"], timeout=settings.connect_timeout_s).check()  # connects
            rtts = []
            for _ in range(3):
                started = time.monotonic()
                ssh.run(["true"], timeout=settings.connect_timeout_s).check()
                rtts.append(time.monotonic() - started)
            facts = ssh.facts(settings.data_path)
            sample = os.urandom(settings.bandwidth_sample_bytes)
            # mktemp on the host: a fresh private directory, whatever its /tmp is.
            scratch = ssh.run(["mktemp", "-d"], timeout=settings.connect_timeout_s).check()
            directory = scratch.stdout.decode().strip()
            started = time.monotonic()
            try:
                ssh.put_bytes(sample, f"{directory}/bandwidth-sample", mode=0o600)
                upload_s = max(time.monotonic() - started, 1e-6)
            finally:
                with contextlib.suppress(ExitplanError):
                    ssh.run(["rm", "-rf", "--", directory], timeout=settings.connect_timeout_s)
    except (HostKeyMismatch, UnknownHostKey) as exc:
        return _refused(provider.name, target, "host_key", str(exc))
    except HostAuthFailed as exc:
        return _refused(provider.name, target, "login_key", str(exc))
    except HostUnreachable as exc:
        return _refused(provider.name, target, "host_down", str(exc))
    except ExitplanError as exc:
        return _refused(provider.name, target, "error", str(exc))
    busy = sorted(req.ports & facts.listening_ports)
    reasons = []
    if facts.cpu_count < req.vcpus:
        reasons.append(f"{facts.cpu_count} vCPU, needs {req.vcpus}")
    if facts.mem_available_bytes < req.ram_bytes:
        reasons.append(
            f"{_bytes_text(facts.mem_available_bytes)} memory available, "
            f"needs {_bytes_text(req.ram_bytes)}"
        )
    if facts.disk_free_bytes < req.disk_bytes:
        reasons.append(
            f"{_bytes_text(facts.disk_free_bytes)} free at {settings.data_path}, "
            f"needs {_bytes_text(req.disk_bytes)}"
        )
    if busy:
        reasons.append(f"port(s) {', '.join(map(str, busy))} already in use")
    result = ProbeResult(
        provider.name,
        target,
        "unfit" if reasons else "fit",
        reasons=reasons,
        host=host,
        host_id=host.node_id,
        os=f"{facts.os_id} {facts.os_version}".strip() or None,
        vcpus=facts.cpu_count,
        ram_bytes=facts.mem_total_bytes,
        mem_available_bytes=facts.mem_available_bytes,
        disk_free_bytes=facts.disk_free_bytes,
        busy_ports=busy,
        bandwidth_bps=len(sample) / upload_s,
        bandwidth_measured=True,
        rtt_s=min(rtts),
        provisioning_estimate_s=provider.provisioning_estimate_s,
    )
    _estimate(result, req.data_bytes)
    return result


def _probe_one_host(
    provider: ComputeProvider, host: ReadyHost, settings: _ProbeSettings
) -> list[ProbeResult]:
    return [_probe_host(provider, host, settings)]


def _probe_provider(
    provider: ComputeProvider, settings: _ProbeSettings, pool: ThreadPoolExecutor
) -> list[Future[list[ProbeResult]]]:
    """The account first; then one future per host (pools) or one for the cloud."""
    name = provider.name
    try:
        status = provider.check_account()
    except RetryableError as exc:
        return [_done([_refused(name, "account", "api_unreachable", str(exc))])]
    except ExitplanError as exc:
        return [_done([_refused(name, "account", "error", str(exc))])]
    if not status.usable:
        code = "auth" if status.state == "refused" else status.state
        reason = status.reason or f"the account is {status.state}"
        return [_done([_refused(name, "account", code, reason)])]
    servers_left = status.quota.servers_left if status.quota else None
    if "pre_arranged" in provider.capabilities:
        hosts = provider.existing_hosts()
        if not hosts:
            return [_done([_refused(name, "pool", "no_capacity", "every host is claimed")])]
        return [pool.submit(partial(_probe_one_host, provider, h, settings)) for h in hosts]

    def cloud() -> list[ProbeResult]:
        try:
            return [_probe_cloud(provider, settings, servers_left)]
        except ProviderRefused as exc:
            return [_refused(name, "account", exc.reason, str(exc))]
        except NoCapacity as exc:
            return [_refused(name, "account", "no_capacity", str(exc))]
        except RetryableError as exc:
            return [_refused(name, "account", "api_unreachable", str(exc))]
        except ExitplanError as exc:
            return [_refused(name, "account", "error", str(exc))]

    return [pool.submit(cloud)]


def _done(value: list[ProbeResult]) -> Future[list[ProbeResult]]:
    future: Future[list[ProbeResult]] = Future()
    future.set_result(value)
    return future


def probe_candidates(
    providers: Sequence[ComputeProvider],
    requirements: Requirements,
    *,
    budget_s: float,
    clock: Clock,
    data_path: str = "/",
    bandwidth_sample_bytes: int = DEFAULT_BANDWIDTH_SAMPLE_BYTES,
    assumed_bandwidth_bps: float = DEFAULT_ASSUMED_BANDWIDTH_BPS,
    max_workers: int = 8,
) -> ProbeReport:
    """Probe every candidate concurrently; return them ranked (see the module doc).

    Build ``providers`` from the config with ``compute_providers_from_config``.
    Nothing is provisioned or claimed: probing is read-only apart from a
    short-lived sample file in /tmp on each pool host, so it is safe to
    repeat. A candidate still being probed when ``budget_s`` runs out is
    reported refused with code ``budget`` (its threads are left to finish on
    their own; SSH connect timeouts are bounded by the budget). Never raises
    for a candidate's failure: failures are rows.
    """
    started = time.monotonic()
    probed_at = clock.now()
    settings = _ProbeSettings(
        requirements=requirements,
        data_path=data_path,
        bandwidth_sample_bytes=bandwidth_sample_bytes,
        assumed_bandwidth_bps=assumed_bandwidth_bps,
        connect_timeout_s=max(0.5, min(10.0, budget_s / 3)),
    )
    # Two pools so host probes never wait behind the account checks that
    # spawned them.
    accounts = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="probe-account")
    hosts = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="probe-host")
    results: list[ProbeResult] = []
    try:
        first = {accounts.submit(_probe_provider, p, settings, hosts): p for p in providers}
        done, not_done = wait(first, timeout=budget_s)
        for future in not_done:
            name = first[future].name
            results.append(
                _refused(name, "account", "budget", f"no answer within {budget_s:g}s budget")
            )
        second: dict[Future[list[ProbeResult]], str] = {}
        for account_future in done:
            for inner in account_future.result():
                second[inner] = first[account_future].name
        remaining = max(0.0, budget_s - (time.monotonic() - started))
        done2, not_done2 = wait(second, timeout=remaining)
        for host_future in done2:
            results.extend(host_future.result())
        for host_future in not_done2:
            results.append(
                _refused(second[host_future], "host", "budget", f"no answer within {budget_s:g}s")
            )
    finally:
        accounts.shutdown(wait=False, cancel_futures=True)
        hosts.shutdown(wait=False, cancel_futures=True)
    results.sort(key=ProbeResult.sort_key)
    for rank, result in enumerate(results, start=1):
        result.rank = rank
    return ProbeReport(
        requirements=requirements,
        probed_at=probed_at,
        budget_s=budget_s,
        elapsed_s=time.monotonic() - started,
        results=results,
    )


# ---------------------------------------------------------------------------
# Provisioning down the ranking
# ---------------------------------------------------------------------------
