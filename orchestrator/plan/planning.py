"""Making the deadline plan for a run: size the work, seed the model, calibrate, plan.

Used by the ``plan`` step (``orchestrator.export.steps.PlanStep``) and by the
dry run behind ``exitplan plan``. Everything here reads; nothing is written
to the source or the destinations. The model is seeded, in order, from the
stated defaults, the rates the last run in this workspace measured, the last
drill's (a drill measures the whole path, so it wins), and a short
calibration against the source now: small GETs on parallel threads for the request time
and one ranged GET for the bandwidth of a stream.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from orchestrator.clock import Clock
from orchestrator.inventory import Fact, collect_inventory
from orchestrator.plan.cost import CostModel, human_rate
from orchestrator.plan.forecast import DeadlinePlan, plan_deadline
from orchestrator.plan.priorities import Prioritizer
from orchestrator.plan.workload import by_tier_and_kind, snapshot_data_bytes, units_from_facts
from orchestrator.run.deadline import Deadline

log = logging.getLogger(__name__)

#: Bytes the calibration reads from one object to time a stream (at most).
CALIBRATION_BYTES = 8 * 1024 * 1024
#: The smallest read that says something about a stream's bandwidth.
CALIBRATION_MIN_BYTES = 16 * 1024
#: Small GETs each calibration thread makes to time a request.
CALIBRATION_REQUESTS = 4
#: Threads the calibration's GETs run on (at most the export's concurrency).
CALIBRATION_WORKERS = 16
#: How many streams of the calibrated rate the egress is taken to carry at
#: P50 (its P90 is close to one): a first guess, replaced within seconds by
#: what the run measures.
CALIBRATION_STREAMS = 4


@dataclass(frozen=True)
class Seeds:
    """Where a model's priors come from: rates and stage durations measured before."""

    rates: Mapping[str, Any] | None = None
    rates_from: str = ""
    stages: Mapping[str, float] | None = None
    stages_from: str = ""


def seeds_from_journal(journal: Any) -> Seeds:
    """The last drill's rates and stage durations, else the last run's rates."""
    if journal is None:
        return Seeds()
    rates: Mapping[str, Any] | None = None
    rates_from = ""
    stages: Mapping[str, float] | None = None
    stages_from = ""
    try:
        drills = journal.drills()
    except Exception:  # an older journal: no drills table readable
        drills = []
    for record in reversed(drills):
        figures = record.figures
        if rates is None and isinstance(figures.get("rates"), dict):
            rates, rates_from = figures["rates"], f"drill {record.run_id}"
        if stages is None and isinstance(figures.get("stages"), dict):
            stages, stages_from = figures["stages"], f"drill {record.run_id}"
        if rates is not None and stages is not None:
            break
    if rates is None:
        latest = journal.latest_plan_rates() if hasattr(journal, "latest_plan_rates") else None
        if latest is not None:
            rates, rates_from = latest[1], f"run {latest[0]}"
    return Seeds(rates, rates_from, stages, stages_from)


def seeded_model(*, concurrency: int, bwlimit: int | None, seeds: Seeds) -> CostModel:
    model = CostModel(concurrency=concurrency, bwlimit=bwlimit)
    if seeds.rates is not None:
        model.seed_from(seeds.rates, seeds.rates_from)
    return model


def calibrate(
    model: CostModel,
    account: Any,
    buckets: Sequence[str],
    *,
    bwlimit: int | None,
    timer: Callable[[], float] = time.perf_counter,
) -> str | None:
    """Time a few reads from the source and fold them into ``model``; returns what
    was measured (for the plan's notes), or None when there was nothing to read."""
    if not buckets:
        return None
    try:
        s3 = account.client("s3")
        listing = s3.list_objects_v2(Bucket=buckets[0], MaxKeys=1000).get("Contents", [])
    except Exception as exc:
        log.info("calibration: cannot list %s: %s", buckets[0], exc)
        return None
    objects = sorted((o for o in listing if o.get("Size", 0) > 0), key=lambda o: o["Size"])
    if not objects:
        return None
    # Small GETs on as many threads as the export runs (up to a point): what one
    # request holds a slot for when the source, and this machine, are busy.
    workers = min(model.concurrency, CALIBRATION_WORKERS)
    keys = [o["Key"] for o in objects[: max(CALIBRATION_REQUESTS, 1)]]

    def one_get(key: str) -> bool:
        try:
            s3.get_object(Bucket=buckets[0], Key=key, Range="bytes=0-0")["Body"].read()
        except Exception as exc:
            log.info("calibration: GET %s failed: %s", key, exc)
            return False
        return True

    wanted = [keys[i % len(keys)] for i in range(CALIBRATION_REQUESTS * workers)]
    started = timer()
    with ThreadPoolExecutor(workers, thread_name_prefix="exitplan-calibrate") as pool:
        done = sum(pool.map(one_get, wanted))
    elapsed = timer() - started
    request_s = workers * elapsed / done if done else None
    stream_rate = None
    largest = objects[-1]
    budget = CALIBRATION_BYTES if not bwlimit else min(CALIBRATION_BYTES, bwlimit)
    length = min(int(largest["Size"]), budget)
    if length >= CALIBRATION_MIN_BYTES:
        started = timer()
        try:
            body = s3.get_object(
                Bucket=buckets[0], Key=largest["Key"], Range=f"bytes=0-{length - 1}"
            )["Body"].read()
            seconds = timer() - started
            if seconds > 0:
                stream_rate = len(body) / seconds
        except Exception as exc:
            log.info("calibration: ranged GET %s failed: %s", largest["Key"], exc)
    if request_s is None and stream_rate is None:
        return None
    egress = None
    if stream_rate is not None:
        egress = stream_rate * min(model.concurrency, CALIBRATION_STREAMS)
        # The engine checksums every byte (md5 and sha256) on this machine's cores:
        # on a fast link that, not the network, is the limit.
        egress = min(egress, hashing_rate(timer) * min(model.concurrency, os.cpu_count() or 1))
        if model.egress.samples == 0 and "defaults" not in model.sources:
            # A drill measured the whole path: keep the lower of the two.
            egress = min(egress, model.egress.mean)
    parts = []
    if request_s is not None:
        parts.append(f"S3 GET {request_s * 1000:.0f} ms a slot on {workers} threads")
    if stream_rate is not None:
        parts.append(f"one stream {human_rate(stream_rate)}")
    what = "calibration: " + ", ".join(parts)
    model.calibrate(
        egress_bytes_per_s=egress,
        request_s={"s3": request_s} if request_s is not None else None,
        what=what,
    )
    return what


def hashing_rate(timer: Callable[[], float] = time.perf_counter) -> float:
    """Bytes per second one core checksums as the engine does (md5 and sha256)."""
    block = bytes(4 * 1024 * 1024)
    started = timer()
    hashlib.md5(block, usedforsecurity=False).digest()
    hashlib.sha256(block).digest()
    seconds = max(timer() - started, 1e-6)
    return len(block) / seconds


def make_plan(
    *,
    account: Any,
    prioritizer: Prioritizer,
    kinds: Sequence[str],
    part_size: int,
    concurrency: int,
    bwlimit: int | None,
    deadline: Deadline | None,
    clock: Clock,
    journal: Any = None,
    facts: Sequence[Fact] | None = None,
    calibration: bool = True,
) -> tuple[DeadlinePlan, CostModel]:
    """Size every kind's work, seed and calibrate the model, and plan against ``deadline``."""
    seeds = seeds_from_journal(journal)
    model = seeded_model(concurrency=concurrency, bwlimit=bwlimit, seeds=seeds)
    facts = list(facts if facts is not None else collect_inventory(account))
    known = journal.known_sizes() if journal is not None and hasattr(journal, "known_sizes") else {}
    units = units_from_facts(
        facts,
        prioritizer,
        kinds=kinds,
        part_size=part_size,
        known_sizes=known,
        ebs_data_bytes=lambda region, snapshot: snapshot_data_bytes(account, region, snapshot),
    )
    if calibration:
        buckets = sorted(
            (u for u in units if u.kind == "s3" and u.items),
            key=lambda u: (u.tier_rank, -u.bytes),
        )
        calibrate(model, account, [u.name for u in buckets], bwlimit=bwlimit)
    rows = by_tier_and_kind(units, list(kinds))
    plan = plan_deadline(
        rows,
        model,
        now=clock.now(),
        deadline=deadline,
        stages=seeds.stages,
        stages_basis=f"measured by {seeds.stages_from}" if seeds.stages_from else "",
    )
    return plan, model
