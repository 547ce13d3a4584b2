"""Synthetic run reports: a realistic drill, an export-only run, an empty run, a large run.

Deterministic (no clock, no randomness) so tests and docs/report-example.png
are reproducible. The drill's figures are of the size the sandbox's
microblog service has, scaled to a small production account.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from orchestrator.report.model import (
    CandidateRow,
    ChosenHost,
    CleanupOutcome,
    DataGroup,
    Deadline,
    Descoped,
    DestinationInfo,
    DnsStep,
    DrillFigures,
    FailedItem,
    Objectives,
    Placement,
    PlacementAttempt,
    PlanEntry,
    PredictionError,
    ProjectionSample,
    ReplayStep,
    RpoFigure,
    RunReport,
    Step,
    ThroughputSample,
    TrendPoint,
)

START = datetime(2025, 3, 14, 9, 0, tzinfo=UTC)
GIB = 1024**3
MIB = 1024**2


def _at(seconds: float) -> datetime:
    return START + timedelta(seconds=seconds)


#: (id, name, start s, end s, status, detail) of the drill's steps.
_DRILL_STEPS = (
    ("inventory", "Inventory of the source account", 0, 21, "done", "s3: 4, rds: 1, ec2: 2"),
    ("dns:zone", "DNS: create and verify the new zone", 21, 95, "done", "34 records identical"),
    ("plan", "Plan against the notice window", 21, 24, "done", "feasible with 28h 41m slack"),
    ("export:s3", "Export S3 (critical, then bulk)", 24, 1390, "done", ""),
    ("export:rds", "Export RDS (pg_dump, restored)", 24, 610, "done", "restored 1,204,311 rows"),
    ("export:dynamodb", "Export DynamoDB tables", 610, 705, "done", ""),
    ("export:ebs", "Export EBS snapshots", 705, 1820, "done", "2 snapshots, sparse"),
    ("export:route53", "Export Route53 zone", 1820, 1824, "done", ""),
    ("manifest", "Publish the manifest", 1824, 1851, "done", "2 manifests"),
    ("probe", "Probe candidate hosts", 24, 88, "done", "3 candidates, 2 fit"),
    ("provision", "Provision the new host", 1851, 2040, "done", "hetzner-fsn1 cx42"),
    ("replay", "Replay the microblog playbook", 2040, 2490, "done", "14 steps, 11 changed"),
    ("verify-target", "Health check on the new host", 2490, 2580, "done", "HTTP 200 in 38 ms"),
    ("dns:flip", "DNS: flip service records", 2580, 2640, "done", "3 records"),
    ("cleanup", "Cleanup of scratch targets", 2640, 2790, "done", "7 actions"),
)

_DRILL_DATA = (
    # kind, tier, items, bytes, already verified, descoped (reason, items, bytes)
    ("s3", "critical", 2140, int(1.2 * GIB), 0, ()),
    ("s3", "bulk", 6480, int(18.4 * GIB), 2210, ()),
    (
        "s3",
        "archive",
        1380,
        int(41.0 * GIB),
        0,
        (
            (
                "best-effort tier: P90 finish 31h 05m would pass the cutoff",
                1380,
                int(41.0 * GIB),
            ),
        ),
    ),
    ("rds", "critical", 1, int(3.1 * GIB), 0, ()),
    ("dynamodb", "critical", 3, int(210 * MIB), 0, ()),
    ("ebs", "bulk", 2, int(16 * GIB), 0, ()),
    ("route53", "critical", 1, 9_400, 0, ()),
)

_REPLAY = (
    ("packages", "install packages", True, 41.2),
    ("users", "create the service user", True, 0.8),
    ("secrets", "write the decrypted environment", True, 0.6),
    ("postgres", "install PostgreSQL 15", True, 64.0),
    ("restore", "restore the database dump", True, 182.5),
    ("app", "unpack the microblog release", True, 7.1),
    ("media", "sync media from the vault", True, 96.3),
    ("config", "render app.ini", True, 0.4),
    ("unit", "install the systemd unit", True, 0.5),
    ("nginx", "configure nginx", True, 1.9),
    ("tls", "install the TLS certificate", False, 0.3),
    ("firewall", "open ports 80 and 443", False, 0.7),
    ("start", "start microblog", True, 3.8),
    ("health", "wait for /healthz", False, 12.0),
)


def _drill_group(
    kind: str,
    tier: str,
    items: int,
    size: int,
    already: int,
    descoped: tuple[tuple[str, int, int], ...],
) -> DataGroup:
    kept_items = items - sum(d[1] for d in descoped)
    kept_bytes = size - sum(d[2] for d in descoped)
    already_bytes = kept_bytes * already // kept_items if kept_items else 0
    verified_bytes = kept_bytes - already_bytes
    return DataGroup(
        kind=kind,
        tier=tier,
        listed_items=items,
        listed_bytes=size,
        verified_items=kept_items - already,
        verified_bytes=verified_bytes,
        already_verified_items=already,
        already_verified_bytes=already_bytes,
        # EBS snapshots are sparse: far fewer bytes cross the wire than they hold.
        transferred_bytes=verified_bytes // 6 if kind == "ebs" else verified_bytes,
        descoped=tuple(Descoped(reason, n, b) for reason, n, b in descoped),
    )


def drill_report() -> RunReport:
    """A passing stressed-exit drill with 30 hours of notice; the archive tier descoped."""
    deadline = Deadline(at=_at(30 * 3600), safety_margin_s=2 * 3600)
    steps = tuple(
        Step(id=i, name=n, status=st, started_at=_at(a), finished_at=_at(b), detail=d)
        for i, n, a, b, st, d in _DRILL_STEPS
    )
    data = tuple(_drill_group(*row) for row in _DRILL_DATA)
    projections = []
    for k in range(0, 2650, 30):
        # The forecast starts pessimistic (sparse EBS counted at full size) and
        # settles as measured rates replace the calibration.
        settle = math.exp(-k / 700)
        p50 = 2700 + 2400 * settle + 60 * math.sin(k / 170)
        p90 = p50 + 300 + 2600 * settle
        projections.append(
            ProjectionSample(
                at=_at(k),
                p50_finish=_at(max(p50, k)),
                p90_finish=_at(max(p90, k)),
                remaining_bytes=max(0, int(40 * GIB * (1 - k / 1850))),
            )
        )
    throughput = []
    for k in range(30, 1830, 30):
        if k <= 1390:
            rate = (48 + 10 * math.sin(k / 90) + (8 if k > 600 else 0)) * MIB
            throughput.append(ThroughputSample(_at(k), "s3", rate))
        if k <= 610:
            throughput.append(ThroughputSample(_at(k), "rds", (5.5 + math.sin(k / 50)) * MIB))
        if 610 < k <= 705:
            throughput.append(ThroughputSample(_at(k), "dynamodb", 2.2 * MIB))
        if 705 < k <= 1820:
            rate = (22 + 12 * math.sin(k / 120) ** 2) * MIB
            throughput.append(ThroughputSample(_at(k), "ebs", rate))
    replay = tuple(
        ReplayStep(
            id=f"{index:02d}-{step_id}",
            name=name,
            host="web-1 (203.0.113.40)",
            status="done",
            changed=changed,
            duration_s=took,
        )
        for index, (step_id, name, changed, took) in enumerate(_REPLAY, start=1)
    )
    dns = (
        DnsStep("create zone on the new provider", "done", _at(60), detail="34 records"),
        DnsStep("verify both zones answer the same", "done", _at(95)),
        DnsStep("lower record TTLs to 60 s", "done", _at(100)),
        DnsStep(
            "delegation change at the registrar",
            "done",
            _at(400),
            residual_risk="about 38% of resolvers may keep the old NS (TTL 48h) at the deadline",
        ),
        DnsStep(
            "flip www, api, media to 203.0.113.40",
            "done",
            _at(2610),
            residual_risk="clients still on the old delegation reach the old account until it ends",
        ),
    )
    cleanup = tuple(
        CleanupOutcome(what, "done")
        for what in (
            "scratch prefix drill-7f3a/ at vault",
            "scratch container drill-7f3a at offsite",
            "server hetzner-fsn1 cx42 (web-1)",
            "scratch database microblog_drill_7f3a",
            "DNS records in drill.microblog.example",
            "ssh-pool claim on pool-2",
            "EBS snapshot exports (2)",
        )
    )
    trend = tuple(
        TrendPoint(
            run_id=f"2024{m:02d}14T090000Z-{m:04x}",
            at=datetime(2024, m, 14, 9, 0, tzinfo=UTC),
            status="done" if m != 6 else "objective-missed",
            rto_s=rto,
            bytes=int(b * GIB),
        )
        for m, rto, b in ((3, 2210, 28.1), (6, 15100, 31.0), (9, 2410, 33.9), (12, 2530, 36.2))
    )
    return RunReport(
        run_id="20250314T090000Z-7f3a",
        command="drill",
        scenario="stressed-exit",
        status="done",
        exit_code=0,
        verdict="Drill passed: microblog was serving from hetzner-fsn1 after 43m, "
        "within the 4h RTO, with 28h 14m of the notice to spare",
        started_at=START,
        finished_at=_at(2790),
        deadline=deadline,
        objectives=Objectives(rto_s=4 * 3600, rpo_s=3600, every_s=90 * 86400),
        drill=DrillFigures(
            service_healthy_at=_at(2580),
            notice_s=30 * 3600,
            rpo=(
                RpoFigure("rds", _at(-240), "pg_dump snapshot time, restored and counted"),
                RpoFigure("s3", _at(-70), "newest object copied, checksum verified"),
                RpoFigure("dynamodb", _at(-35), "table scan start"),
                RpoFigure("ebs", _at(-1800), "newest snapshot exported"),
            ),
        ),
        steps=steps,
        projections=tuple(projections),
        throughput=tuple(throughput),
        plan=(
            PlanEntry(1, "route53", 0),
            PlanEntry(2, "rds", 0),
            PlanEntry(3, "s3", 0),
            PlanEntry(4, "dynamodb", 0),
            PlanEntry(5, "ebs", 1),
        ),
        destinations=(
            DestinationInfo("vault", "local:/srv/exitplan/vault"),
            DestinationInfo("offsite", "s3://offsite-microblog"),
        ),
        data=data,
        placement=Placement(
            summary="hetzner-fsn1 (cx42)",
            chosen=ChosenHost("hetzner-fsn1", "cx42", "203.0.113.40", 22, "ssh"),
            attempts=(PlacementAttempt("hetzner-fsn1", "cx42", "ready"),),
            candidates=(
                CandidateRow("hetzner-fsn1", "cx42", "fit", 1, size="cx42", estimated_ready_s=95),
                CandidateRow(
                    "pool-2", "pool-2.example", "fit", 2, size="8 vCPU", estimated_ready_s=4
                ),
                CandidateRow(
                    "do-ams3",
                    "s-4vcpu-8gb",
                    "refused",
                    3,
                    refusal="locked",
                    reasons=("account locked: billing",),
                ),
            ),
        ),
        replay=replay,
        dns=dns,
        cleanup=cleanup,
        trend=trend,
        prediction_errors=(
            PredictionError("run", _at(24), _at(2900), _at(2790), _at(3500)),
            PredictionError("s3", _at(24), _at(1320), _at(1390)),
            PredictionError("ebs", _at(24), _at(1700), _at(1820)),
        ),
        warnings=("ebs: snapshot snap-0a1 is encrypted with a customer key; exported decrypted",),
    )


def export_report() -> RunReport:
    """What ``exitplan export`` produces: data only, a deadline, one failure."""
    return RunReport(
        run_id="20250314T120000Z-00e1",
        command="export",
        status="failed",
        exit_code=1,
        started_at=datetime(2025, 3, 14, 12, 0, tzinfo=UTC),
        finished_at=datetime(2025, 3, 14, 12, 4, 5, tzinfo=UTC),
        deadline=Deadline(at=datetime(2025, 3, 14, 14, 0, tzinfo=UTC), safety_margin_s=900),
        steps=(
            Step(
                "inventory",
                "inventory",
                "skipped",
                datetime(2025, 3, 14, 12, 0, tzinfo=UTC),
                datetime(2025, 3, 14, 12, 0, tzinfo=UTC),
                "exitplan export moves data only",
            ),
            Step(
                "export:s3",
                "export:s3",
                "done",
                datetime(2025, 3, 14, 12, 0, 1, tzinfo=UTC),
                datetime(2025, 3, 14, 12, 4, tzinfo=UTC),
            ),
        ),
        destinations=(DestinationInfo("vault", "local:/tmp/vault"),),
        data=(
            DataGroup(
                kind="s3",
                listed_items=120,
                listed_bytes=5 * MIB,
                verified_items=119,
                verified_bytes=5 * MIB - 10,
                transferred_bytes=5 * MIB - 10,
                failed_items=1,
                failed_bytes=10,
            ),
        ),
        failed=(
            FailedItem("vault", "s3/bucket/bad.bin", "ChecksumMismatch: sha256 differs", "s3"),
        ),
    )


def empty_report() -> RunReport:
    """A run with nothing in it: no steps, no deadline, no data."""
    return RunReport(
        run_id="20250314T130000Z-0000",
        command="migrate",
        status="cancelled",
        exit_code=130,
        started_at=datetime(2025, 3, 14, 13, 0, tzinfo=UTC),
        finished_at=datetime(2025, 3, 14, 13, 0, 2, tzinfo=UTC),
    )
