"""``exitplan drill --evaluate``: is the exit plan still workable? No data is moved.

Like AWS ARC's plan evaluation: each part of the path is asked whether it
would work today, cheaply, and every finding is listed:

- the source credentials reach every service the export reads, with the
  read rights it needs (one cheap read call per service);
- every destination accepts a test write, reads it back checksummed, and
  deletes it;
- every candidate host can be reached and fits the service (the probe);
- the playbook validates and every artifact it names is in the last manifest;
- the DNS provider answers;
- the last passing drill is not older than the promised interval.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from orchestrator.clock import Clock
from orchestrator.config import Config
from orchestrator.drill.history import overdue_warning
from orchestrator.drill.scratch import SCRATCH_ROOT
from orchestrator.errors import ExitplanError
from orchestrator.export.iam_policy import missing_action
from orchestrator.run.journal import Journal
from providers.aws import AwsAccount

#: One cheap read per service the export reads: (service, what, call).
_SOURCE_PROBES: tuple[tuple[str, str, Callable[[Any], Any]], ...] = (
    ("s3", "list the buckets", lambda c: c.list_buckets()),
    ("ec2", "describe instances", lambda c: c.describe_instances(MaxResults=5)),
    ("rds", "describe databases", lambda c: c.describe_db_instances(MaxRecords=20)),
    ("dynamodb", "list tables", lambda c: c.list_tables(Limit=1)),
    ("route53", "list hosted zones", lambda c: c.list_hosted_zones(MaxItems="1")),
    ("secretsmanager", "list secrets", lambda c: c.list_secrets(MaxResults=1)),
    ("ssm", "describe parameters", lambda c: c.describe_parameters(MaxResults=1)),
    ("elbv2", "describe load balancers", lambda c: c.describe_load_balancers(PageSize=1)),
)


@dataclass(frozen=True)
class Finding:
    area: str  # source | destination | candidate | playbook | dns | drills
    name: str
    ok: bool
    detail: str = ""


@dataclass
class Evaluation:
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(f.ok for f in self.findings)

    def add(self, area: str, name: str, ok: bool, detail: str = "") -> None:
        self.findings.append(Finding(area, name, ok, detail))


def check_source(account: AwsAccount, evaluation: Evaluation) -> None:
    for region in account.regions:
        for service, what, call in _SOURCE_PROBES:
            name = f"{service} in {region}: {what}"
            try:
                call(account.client(service, region))
            except Exception as exc:  # every refusal is a finding, never a stop
                action = missing_action(exc)
                detail = (
                    f"the credentials lack {action}: see `exitplan iam-policy`"
                    if action
                    else f"{type(exc).__name__}: {exc}"
                )
                evaluation.add("source", name, False, detail)
            else:
                evaluation.add("source", name, True)


def check_destinations(destinations: list[Any], evaluation: Evaluation) -> None:
    """A small object written, read back by its sha256 and deleted at every destination."""
    payload = secrets.token_bytes(4096)
    digest = hashlib.sha256(payload).hexdigest()
    for destination in destinations:
        key = f"{SCRATCH_ROOT}/evaluate-{secrets.token_hex(4)}/probe.bin"
        store = destination.store
        try:
            store.put_stream(key, [payload])
            back = hashlib.sha256(b"".join(store.get(key))).hexdigest()
            store.delete(key)
            gone = store.stat(key) is None
        except Exception as exc:  # a refusing destination is a finding
            evaluation.add("destination", destination.name, False, f"{type(exc).__name__}: {exc}")
            continue
        problems = []
        if back != digest:
            problems.append("read back other bytes than were written")
        if not gone:
            problems.append("the test object is still there after delete")
        evaluation.add(
            "destination",
            f"{destination.name} ({store.describe()}): write, read back, delete",
            not problems,
            "; ".join(problems),
        )


def check_candidates(
    config: Config, account: AwsAccount, clock: Clock, evaluation: Evaluation
) -> None:
    import tempfile
    from pathlib import Path

    from orchestrator.placement.probe import compute_providers_from_config, probe_candidates
    from orchestrator.placement.steps import service_requirements, take_inventory

    if not config.candidates:
        evaluation.add("candidate", "candidates", False, "none in the config: add `candidates:`")
        return
    with tempfile.TemporaryDirectory() as scratch:
        summary, instances = take_inventory(account, Path(scratch) / "inventory.jsonl")
    report = probe_candidates(
        list(compute_providers_from_config(config.candidates).values()),
        service_requirements(summary, instances),
        budget_s=20.0,
        clock=clock,
    )
    for row in report.results:
        evaluation.add(
            "candidate",
            f"{row.candidate} ({row.target})",
            row.status == "fit",
            "; ".join(row.reasons) or row.status,
        )


def check_dns(config: Config, evaluation: Evaluation) -> None:
    dns = getattr(config, "dns", None)
    if dns is None:
        return
    from providers.registry import get_provider_spec, load_provider_class

    try:
        cls = load_provider_class(get_provider_spec("dns", dns.driver))
        options = {k: (v.reveal() if hasattr(v, "reveal") else v) for k, v in dns.options.items()}
        zones = cls("dns", **options).list_zones()
    except ExitplanError as exc:
        evaluation.add("dns", "the DNS provider answers", False, str(exc))
        return
    evaluation.add("dns", "the DNS provider answers", True, f"{len(zones)} zone(s)")


def check_drills(
    journal: Journal | None, every: timedelta | None, clock: Clock, evaluation: Evaluation
) -> None:
    if every is None:
        return
    warning = overdue_warning(journal.drills() if journal else [], every, clock.now())
    evaluation.add("drills", f"a passing drill within {every}", warning is None, warning or "")


def evaluate_plan(config: Config, clock: Clock) -> Evaluation:
    """Every check above, in order; reads and a test object only. Never raises for a finding."""
    from pathlib import Path

    from orchestrator.run.commands import open_destinations, open_source

    evaluation = Evaluation()
    with open_source(config) as account:
        check_source(account, evaluation)
        check_candidates(config, account, clock, evaluation)
    try:
        destinations = open_destinations(config)
    except ExitplanError as exc:
        evaluation.add("destination", "open the destinations", False, str(exc))
    else:
        check_destinations(destinations, evaluation)
    check_dns(config, evaluation)
    journal_path = Path(config.workspace) / "journal.sqlite"
    journal = Journal(journal_path) if journal_path.is_file() else None
    try:
        drill = getattr(config, "drill", None)
        check_drills(journal, getattr(drill, "every", None), clock, evaluation)
    finally:
        if journal is not None:
            journal.close()
    return evaluation
