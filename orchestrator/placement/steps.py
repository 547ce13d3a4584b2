"""The placement's steps: take the inventory's measure, probe the candidates, get a host."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, ClassVar

from orchestrator.errors import ConfigError
from orchestrator.inventory import (
    Fact,
    InventorySummary,
    collect_inventory,
    fact_to_json,
    summarize_inventory,
)
from orchestrator.placement.probe import (
    ProbeReport,
    Requirements,
    compute_providers_from_config,
    probe_candidates,
    requirements_from_inventory,
)
from orchestrator.placement.provision import (
    SERVER_UNDO,
    NoCandidateLeft,
    Placement,
    ProvisionAttempt,
    choose_and_provision,
    server_from_resource,
    server_resource,
)
from orchestrator.run.steps import RunContext, Step, StepFailed, StepSkipped
from providers.aws import AwsAccount
from providers.interfaces.compute import Node

#: The probe's share of the time left before the cutoff, and its bounds.
PROBE_SHARE = 0.02
PROBE_BUDGET_MIN_S = 15.0
PROBE_BUDGET_MAX_S = 600.0
#: How long a new server may take to answer: a share of the time left, at least this.
READY_SHARE = 0.25
READY_MIN = timedelta(minutes=5)
#: Without a deadline (a probe on its own): these.
PROBE_BUDGET_DEFAULT_S = 120.0
READY_DEFAULT = timedelta(hours=1)


@dataclass(frozen=True)
class KindCount:
    count: int
    bytes: int


@dataclass(frozen=True)
class InventoryOutput:
    """What the account holds, per kind, and what its new home needs."""

    counts: dict[str, KindCount]
    requirements: Requirements
    #: Where the full inventory (one fact per line) was written.
    path: str


def take_inventory(account: AwsAccount, path: Path) -> tuple[InventorySummary, list[Fact]]:
    """Stream the inventory to JSON Lines; keep the totals and the EC2 instances."""
    instances: list[Fact] = []

    def recorded() -> Iterator[Fact]:
        with path.open("w", encoding="utf-8") as out:
            for fact in collect_inventory(account):
                out.write(json.dumps(fact_to_json(fact), sort_keys=True) + "\n")
                if fact.kind == "ec2":
                    instances.append(fact)
                yield fact

    return summarize_inventory(recorded()), instances


def service_requirements(summary: InventorySummary, instances: list[Fact]) -> Requirements:
    """What the new home needs: the largest instance's size, its ports, the data."""
    largest = max(
        instances,
        key=lambda fact: (
            fact.attributes.get("vcpus") or 0,
            fact.attributes.get("memory_mib") or 0,
        ),
        default=None,
    )
    return requirements_from_inventory(summary, largest)


class InventoryStep(Step[InventoryOutput]):
    """Lists what the source account holds (read-only) and sizes the new home from it."""

    id: ClassVar[str] = "inventory"
    title: ClassVar[str] = "inventory the source account"
    output_type: ClassVar[type[Any]] = InventoryOutput

    def execute(self, run: RunContext) -> InventoryOutput:
        path = run.directory / "inventory.jsonl"
        summary, instances = take_inventory(run.source(), path)
        counts = {
            kind: KindCount(numbers["count"], numbers.get("bytes", 0))
            for kind, numbers in summary.as_counts().items()
        }
        return InventoryOutput(counts, service_requirements(summary, instances), str(path))

    def summary(self, output: InventoryOutput) -> str:
        return ", ".join(f"{kind}: {c.count}" for kind, c in sorted(output.counts.items()))


def probe_budget_s(run: RunContext) -> float:
    if run.deadline is None:
        return PROBE_BUDGET_DEFAULT_S
    left = (run.deadline.cutoff - run.clock.now()).total_seconds()
    return min(PROBE_BUDGET_MAX_S, max(PROBE_BUDGET_MIN_S, left * PROBE_SHARE))


class ProbeStep(Step[ProbeReport]):
    """Asks every candidate, concurrently, whether it fits; ranks them. Changes nothing."""

    id: ClassVar[str] = "probe"
    title: ClassVar[str] = "probe the candidate hosts and rank them"
    output_type: ClassVar[type[Any]] = ProbeReport
    after: ClassVar[tuple[str, ...]] = ("inventory",)

    def inputs(self, run: RunContext) -> dict[str, Any]:
        return {"candidates": [c.name for c in run.config.candidates]}

    def preview(self, run: RunContext) -> str:
        names = ", ".join(c.name for c in run.config.candidates) or "none configured"
        return f"probe candidates: {names}"

    def execute(self, run: RunContext) -> ProbeReport:
        if not run.config.candidates:
            raise StepSkipped("no candidates in the config")
        inventory = run.output("inventory", InventoryOutput)
        providers = compute_providers_from_config(run.config.candidates)
        report = probe_candidates(
            list(providers.values()),
            inventory.requirements,
            budget_s=probe_budget_s(run),
            clock=run.clock,
        )
        (run.directory / "probe.json").write_text(report.to_json() + "\n", encoding="utf-8")
        if not report.fitting:
            raise StepFailed(
                f"no candidate fits: {', '.join(f'{r.candidate} ({r.status})' for r in report.results)}",
                report,
            )
        return report

    def summary(self, output: ProbeReport) -> str:
        best = output.fitting[0] if output.fitting else None
        return f"{len(output.fitting)} of {len(output.results)} fit" + (
            f"; best {best.candidate} ({best.target})" if best else ""
        )


@dataclass(frozen=True)
class PlaceOutput:
    placement: Placement
    attempts: tuple[ProvisionAttempt, ...]


def ready_deadline(run: RunContext) -> Any:
    now = run.clock.now()
    if run.deadline is None:
        return now + READY_DEFAULT
    left = run.deadline.cutoff - now
    return now + max(READY_MIN, left * READY_SHARE)


class PlaceStep(Step[PlaceOutput]):
    """Gets the best host that can be had, falling back down the ranking; keeps it.

    A server is in the undo log from the moment it exists; a resumed run
    reuses it instead of creating another.
    """

    id: ClassVar[str] = "place"
    title: ClassVar[str] = "provision or claim the best host"
    output_type: ClassVar[type[Any]] = PlaceOutput
    after: ClassVar[tuple[str, ...]] = ("probe",)

    def preview(self, run: RunContext) -> str:
        return "provision or claim the best fitting candidate (undo recorded at creation)"

    def execute(self, run: RunContext) -> PlaceOutput:
        report = run.output("probe", ProbeReport)
        providers = compute_providers_from_config(run.config.candidates)
        public_key, key_file = login_key()
        earlier = [
            server_from_resource(entry.id, entry.resource)
            for entry in run.journal.undo_entries(run.run_id, ("pending",))
            if entry.kind == SERVER_UNDO and entry.step == self.id
        ]

        def record_server(candidate: str, target: str, node: Node) -> int:
            return run.record_undo(
                self.id,
                SERVER_UNDO,
                server_resource(candidate, target, node),
                f"{candidate}: server {node.name} ({node.id})",
            )

        try:
            placement, attempts = choose_and_provision(
                report,
                providers,
                name=f"exitplan-{run.run_id.lower()}",
                authorized_key=public_key,
                key_file=key_file,
                deadline=ready_deadline(run),
                clock=run.clock,
                record_server=record_server,
                settle_server=lambda undo_id: run.journal.settle_undo(undo_id, "undone"),
                earlier=earlier,
            )
        except NoCandidateLeft as exc:
            raise StepFailed(str(exc)) from exc
        return PlaceOutput(placement, tuple(attempts))

    def summary(self, output: PlaceOutput) -> str:
        refusals = sum(1 for a in output.attempts if a.outcome not in ("ready", "reused"))
        reused = any(a.outcome == "reused" for a in output.attempts)
        return (
            output.placement.describe()
            + (f" after {refusals} refusal(s)" if refusals else "")
            + (" (reused)" if reused else "")
        )


def login_key() -> tuple[str, Path | None]:
    """The key exitplan logs in to new servers with: (public line, private key file).

    ``$EXITPLAN_SSH_KEY_FILE`` names the private key (its ``.pub`` beside it);
    otherwise the first of ``~/.ssh/id_ed25519``, ``id_ecdsa``, ``id_rsa``
    with a ``.pub``; otherwise none, and only pre-arranged hosts can be used.
    """
    named = os.environ.get("EXITPLAN_SSH_KEY_FILE")
    candidates = (
        [Path(named)]
        if named
        else [Path.home() / ".ssh" / n for n in ("id_ed25519", "id_ecdsa", "id_rsa")]
    )
    for private in candidates:
        public = private.with_name(private.name + ".pub")
        if private.is_file() and public.is_file():
            return public.read_text(encoding="utf-8").strip(), private
    if named:
        raise ConfigError(
            f"EXITPLAN_SSH_KEY_FILE={named}: needs the private key and {named}.pub beside it"
        )
    return "", None


def probe_now(config: Any, clock: Any, *, budget_s: float = PROBE_BUDGET_DEFAULT_S) -> ProbeReport:
    """``exitplan probe``: inventory the source for the requirements, then probe; no run."""
    import tempfile

    from orchestrator.run.commands import open_source

    providers = compute_providers_from_config(config.candidates)
    with open_source(config) as account, tempfile.TemporaryDirectory() as scratch:
        summary, instances = take_inventory(account, Path(scratch) / "inventory.jsonl")
    return probe_candidates(
        list(providers.values()),
        service_requirements(summary, instances),
        budget_s=budget_s,
        clock=clock,
    )
