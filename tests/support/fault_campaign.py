"""A fault campaign: objects of every shape copied through the fault proxy at a high rate.

The source is a moto server seeded with objects of six shapes, in turn:

==================  ========================================================
``crc32``           one part, S3 keeps a full-object CRC32 (the SDKs' default)
``md5``             one part, no checksum: the ETag (an md5) is all there is
``ranged``          one part, larger than the export's part size: ranged GETs
``uniform``         uploaded in 5 MiB parts and a short last one, no checksum
``uneven``          parts of different sizes (6+5+5, 5+5.5+0.5, 5+9+1, 5+6+6,
                    5 and a little), no checksum: only part by part can it be
                    checked
``composite``       uneven parts uploaded with CRC32s: a COMPOSITE checksum
==================  ========================================================

Each round of the export runs in its own process (as ``exitplan export`` and
``exitplan resume`` would), through the fault proxy, into one local
destination; a round copies what the journal does not have stored yet. The
parent then checks every object: stored objects must be byte-identical to
the source (a "corrupt verified" object is the one outcome that must never
happen), and counts what is still failed after the last round and the
largest peak RSS of any round.

``python -m tests.support.fault_campaign --objects 500`` runs the campaign
of bench/RESULTS.md and prints its result as JSON; tests call
``run_campaign`` with fewer objects.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import resource
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import boto3
import botocore.config

from tests.support.faulty_proxy import FAULTS, FaultSchedule, faulty_proxy
from tests.support.moto_server import moto_server

REPO = Path(__file__).resolve().parents[2]
BUCKET = "campaign"
MiB = 1024 * 1024
#: The export reads objects larger than this as ranged parts.
PART_SIZE = 8 * MiB
SHAPES = ("crc32", "md5", "ranged", "uniform", "uneven", "composite")
#: Part layouts of the uneven shapes, in bytes (every part but the last >= 5 MiB).
UNEVEN_LAYOUTS = (
    (6 * MiB, 5 * MiB, 5 * MiB),
    (5 * MiB, 5 * MiB + MiB // 2, MiB // 2),
    (5 * MiB, 9 * MiB, 1 * MiB),
    (5 * MiB, 6 * MiB, 6 * MiB),
    (5 * MiB, 300_000),
)


@dataclass
class CampaignResult:
    objects: int
    rate: float
    faults: list[str]
    rounds_run: int
    shapes: dict[str, int]
    identical: int
    unchecked: int
    #: Stored (verified or unchecked) but not byte-identical to the source.
    corrupt_stored: list[str]
    #: Still not stored after the last round.
    failed: list[str]
    missing_from_journal: list[str]
    staging_left: int
    peak_rss_mib: float
    seconds: float
    injected: dict[str, int]
    round_seconds: list[float] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.corrupt_stored and not self.failed and not self.missing_from_journal


def _client(endpoint: str, *, checksums: bool) -> Any:
    config = botocore.config.Config(
        s3={"addressing_style": "path"},
        request_checksum_calculation="when_supported" if checksums else "when_required",
    )
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=config,
    )


def _bytes(rng: random.Random, size: int) -> bytes:
    return rng.randbytes(size)


def _multipart(s3: Any, key: str, parts: Sequence[bytes], algorithm: str | None) -> None:
    extra = {"ChecksumAlgorithm": algorithm} if algorithm else {}
    upload = s3.create_multipart_upload(Bucket=BUCKET, Key=key, **extra)
    done = []
    for number, data in enumerate(parts, 1):
        response = s3.upload_part(
            Bucket=BUCKET,
            Key=key,
            UploadId=upload["UploadId"],
            PartNumber=number,
            Body=data,
            **extra,
        )
        part = {"ETag": response["ETag"], "PartNumber": number}
        if algorithm:
            part[f"Checksum{algorithm}"] = response[f"Checksum{algorithm}"]
        done.append(part)
    s3.complete_multipart_upload(
        Bucket=BUCKET, Key=key, UploadId=upload["UploadId"], MultipartUpload={"Parts": done}
    )


def seed(endpoint: str, count: int, seed_value: int = 14) -> dict[str, tuple[str, str]]:
    """Upload ``count`` objects, the shapes in turn; returns key -> (shape, sha256).

    The large shapes come round once in ``big_every`` objects so that the
    campaign stays mostly small objects, as buckets are.
    """
    with_crc = _client(endpoint, checksums=True)
    plain = _client(endpoint, checksums=False)
    with_crc.create_bucket(Bucket=BUCKET)
    rng = random.Random(seed_value)
    seeded: dict[str, tuple[str, str]] = {}
    big_every = 10
    big_shapes = ("ranged", "uniform", "uneven", "composite")
    big = 0
    for index in range(count):
        if index % big_every == big_every - 1:
            shape = big_shapes[big % len(big_shapes)]
            big += 1
        else:
            shape = ("crc32", "md5")[index % 2]
        key = f"{shape}/{index:04d}.bin"
        if shape in ("crc32", "md5"):
            data = _bytes(rng, rng.randrange(1, 256 * 1024))
            (with_crc if shape == "crc32" else plain).put_object(Bucket=BUCKET, Key=key, Body=data)
        elif shape == "ranged":
            data = _bytes(rng, PART_SIZE + rng.randrange(1, 4 * MiB))
            plain.put_object(Bucket=BUCKET, Key=key, Body=data)
        elif shape == "uniform":
            parts = [_bytes(rng, 5 * MiB) for _ in range(2)] + [_bytes(rng, rng.randrange(1, MiB))]
            data = b"".join(parts)
            _multipart(plain, key, parts, None)
        else:
            layout = UNEVEN_LAYOUTS[big % len(UNEVEN_LAYOUTS)]
            parts = [_bytes(rng, size) for size in layout]
            data = b"".join(parts)
            _multipart(plain, key, parts, "CRC32" if shape == "composite" else None)
        seeded[key] = (shape, hashlib.sha256(data).hexdigest())
    return seeded


def export_round(endpoint: str, work: Path, max_attempts: int, concurrency: int) -> dict[str, Any]:
    """One round, in this process: the real engine and S3 exporter, one local vault."""
    from orchestrator.clock import SystemClock
    from orchestrator.events import EventBus
    from orchestrator.export.exporters.base import ExportContext
    from orchestrator.export.exporters.s3 import S3Exporter
    from orchestrator.export.transfer import Destination, TransferEngine, TransferSettings
    from orchestrator.plan.priorities import Prioritizer
    from orchestrator.run.journal import Journal
    from orchestrator.run.progress import RunProgress
    from providers.aws import AwsAccount
    from providers.storage import LocalObjectStore

    started = time.monotonic()
    journal = Journal(work / "journal.sqlite")
    run_file = work / "run_id"
    if run_file.exists():
        run_id = run_file.read_text().strip()
        journal.reopen_run(run_id)
    else:
        run_id = journal.start_run("export", None, {})
        run_file.write_text(run_id)
    events = EventBus()
    engine = TransferEngine(
        destinations=[Destination("vault", LocalObjectStore("vault", work / "vault"))],
        journal=journal,
        run_id=run_id,
        events=events,
        progress=RunProgress(
            run_id=run_id, journal=journal, events=events, clock=SystemClock(), deadline=None
        ),
        settings=TransferSettings(
            concurrency=concurrency, max_attempts=max_attempts, max_backoff_s=0.05
        ),
    )
    account = AwsAccount(regions=["us-east-1"], endpoint_url=endpoint)
    exporter = S3Exporter(
        account,
        tier_of=Prioritizer([]),
        context=ExportContext(run_id=run_id, part_size=PART_SIZE),
    )
    try:
        engine.export(exporter)
    finally:
        engine.close()
        journal.finish_run(run_id, "done")
        journal.close()
    return {"seconds": round(time.monotonic() - started, 2), "peak_rss_kib": peak_rss_kib()}


def peak_rss_kib() -> int:
    """This process's peak resident set, in KiB.

    VmHWM is of this process's own memory. ``ru_maxrss`` is not, in a process
    started by one holding a lot (the moto server here): Linux carries the
    parent's peak across the fork and exec into the child's figure.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _stored(work: Path) -> dict[str, tuple[str, str]]:
    """dest_key -> (state, sha256) for every item in the journal."""
    with sqlite3.connect(work / "journal.sqlite") as db:
        return {
            key: (state, sha or "")
            for key, state, sha in db.execute("SELECT dest_key, state, sha256 FROM items")
        }


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(MiB):
            digest.update(chunk)
    return digest.hexdigest()


def run_campaign(
    work: Path,
    *,
    objects: int,
    rate: float = 0.5,
    faults: Sequence[str] = FAULTS,
    rounds: int = 3,
    max_attempts: int = 8,
    concurrency: int = 8,
    seed_value: int = 14,
) -> CampaignResult:
    """Seed a moto server, export through the fault proxy in up to ``rounds``
    processes (each carrying on the last, as a resume does), and judge every object."""
    work.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    round_seconds: list[float] = []
    peak_kib = 0
    with moto_server() as endpoint:
        seeded = seed(endpoint, objects, seed_value)
        schedule = FaultSchedule(rate=rate, seed=seed_value, faults=faults)
        rounds_run = 0
        with faulty_proxy(endpoint, schedule) as proxy_url:
            for _ in range(rounds):
                rounds_run += 1
                env = {
                    **{k: v for k, v in os.environ.items() if k != "AWS_PROFILE"},
                    "PYTHONPATH": str(REPO),
                    "AWS_ACCESS_KEY_ID": "testing",
                    "AWS_SECRET_ACCESS_KEY": "testing",
                    "AWS_DEFAULT_REGION": "us-east-1",
                }
                done = subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "tests.support.fault_campaign",
                        "--export-round",
                        proxy_url,
                        "--work",
                        str(work),
                        "--max-attempts",
                        str(max_attempts),
                        "--concurrency",
                        str(concurrency),
                    ],
                    env=env,
                    cwd=REPO,
                    capture_output=True,
                    text=True,
                    timeout=1800,
                )
                if done.returncode != 0:
                    raise RuntimeError(f"export round failed: {done.stderr[-3000:]}")
                figures = json.loads(done.stdout.strip().splitlines()[-1])
                peak_kib = max(peak_kib, int(figures["peak_rss_kib"]))
                round_seconds.append(float(figures["seconds"]))
                states = _stored(work)
                if all(state in ("verified", "unchecked") for state, _ in states.values()) and len(
                    states
                ) == len(seeded):
                    break
    states = _stored(work)
    vault = work / "vault"
    identical = unchecked = 0
    corrupt: list[str] = []
    failed: list[str] = []
    missing: list[str] = []
    for key, (_, sha) in seeded.items():
        dest_key = f"s3/{BUCKET}/{key}"
        if dest_key not in states:
            missing.append(key)
            continue
        state, _ = states[dest_key]
        if state not in ("verified", "unchecked"):
            failed.append(key)
            continue
        path = vault / dest_key
        if not path.is_file() or _sha256(path) != sha:
            corrupt.append(key)
            continue
        identical += 1
        unchecked += state == "unchecked"
    return CampaignResult(
        objects=objects,
        rate=rate,
        faults=list(faults),
        rounds_run=rounds_run,
        shapes=dict(Counter(shape for shape, _ in seeded.values())),
        identical=identical,
        unchecked=unchecked,
        corrupt_stored=corrupt,
        failed=failed,
        missing_from_journal=missing,
        staging_left=sum(1 for p in vault.glob("*/.exitplan-partial/*") if p.is_file()),
        peak_rss_mib=round(peak_kib / 1024, 1),
        seconds=round(time.monotonic() - started, 1),
        injected=dict(schedule.injected),
        round_seconds=round_seconds,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--export-round", metavar="ENDPOINT", help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help="working directory (default: a new temp dir)")
    parser.add_argument("--objects", type=int, default=500)
    parser.add_argument("--rate", type=float, default=0.5)
    parser.add_argument("--flips-only", action="store_true")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-attempts", type=int, default=8)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seed", type=int, default=14)
    args = parser.parse_args(argv)
    if args.export_round:
        print(
            json.dumps(
                export_round(args.export_round, args.work, args.max_attempts, args.concurrency)
            )
        )
        return 0
    import tempfile

    work = args.work or Path(tempfile.mkdtemp(prefix="exitplan-campaign-"))
    result = run_campaign(
        work,
        objects=args.objects,
        rate=args.rate,
        faults=("flip",) if args.flips_only else FAULTS,
        rounds=args.rounds,
        max_attempts=args.max_attempts,
        concurrency=args.concurrency,
        seed_value=args.seed,
    )
    print(json.dumps({**asdict(result), "ok": result.ok, "work": str(work)}, indent=2))
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
