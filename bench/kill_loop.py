"""Kill a sandbox `migrate` with SIGKILL at random moments, resume it each time, and check
that nothing is lost or left behind.

    python bench/kill_loop.py --kills 10 [--seed 7] [--workdir DIR] [--keep]

One trial: `exitplan migrate --deadline +2h` on the built-in sandbox in a fresh
directory, killed (SIGKILL, no chance to clean up) at a random moment between
0 and --window seconds after it starts (the first seconds included, while the
account is still being set up), then `exitplan resume` run (and killed again
for the next kill of the same trial, when --kills-per-trial > 1) until one
resume is allowed to finish. Each trial then checks:

- the run ended `done` (exit 0) and every sandbox object is at the destination,
  byte-identical to the source (sha256 against the in-process sandbox account);
- no process that exitplan started is still running (PostgreSQL servers, the
  sandbox service's processes are allowed only while the run says it keeps
  them: they are listed by `exitplan status` as things to roll back);
- no secret value of the sandbox is in clear in any file under the trial's
  directory or exitplan's own directories in the system temp directory
  (scratch PostgreSQL clusters, RDS dump directories; the sandbox's canaries);
- no staging (`.exitplan-partial`) or scratch file is left.

The CI runs a short version (tests/e2e/test_kill_loop.py); the figures of a
full run are recorded in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from orchestrator.export.exporters.rds import (  # noqa: E402
    SCRATCH_DIR_PREFIX as RDS_SCRATCH_DIR_PREFIX,
)
from orchestrator.export.exporters.s3 import destination_key  # noqa: E402
from orchestrator.postgres import CLUSTER_DIR_PREFIX  # noqa: E402
from orchestrator.sandbox.account import SECRET_CANARIES, sandbox_account  # noqa: E402

STAGING_MARKERS = (".exitplan-partial",)


@dataclass
class Trial:
    number: int
    kills_at: list[float] = field(default_factory=list)
    resume_codes: list[int] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0


def exitplan(cwd: Path, *args: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    # Output to a file: an unread pipe would stall a chatty run.
    with (cwd / "exitplan.out").open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "orchestrator.cli", *args, "--quiet"],
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def kill_after(proc: subprocess.Popen[bytes], seconds: float) -> bool:
    """SIGKILL ``proc`` after ``seconds`` unless it ended first; True if it was killed."""
    try:
        proc.wait(timeout=seconds)
        return False
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        return True


def sandbox_objects() -> dict[str, str]:
    """destination key -> sha256 of every object version in the sandbox account."""
    expected: dict[str, str] = {}
    with sandbox_account() as account:
        s3 = account.client("s3")
        for bucket in (b["Name"] for b in s3.list_buckets()["Buckets"]):
            for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
                for version in page.get("Versions", []):
                    vid = version.get("VersionId")
                    vid = None if vid in (None, "null") else vid
                    body = s3.get_object(
                        Bucket=bucket, Key=version["Key"], **({"VersionId": vid} if vid else {})
                    )["Body"].read()
                    key = destination_key(bucket, version["Key"], vid, bool(version["IsLatest"]))
                    expected[key] = hashlib.sha256(body).hexdigest()
    return expected


#: What exitplan itself makes in the temp dir.
OWN_TEMP_DIRS = (f"{CLUSTER_DIR_PREFIX}*", f"{RDS_SCRATCH_DIR_PREFIX}*")


def our_processes(root: Path) -> list[str]:
    """Processes whose command line or working directory is under ``root``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if str(root) in cmdline or cwd.startswith(str(root)):
            found.append(f"{entry.name}: {cmdline.strip()[:160]}")
    return found


def files_holding(paths: list[Path], needles: tuple[str, ...]) -> list[str]:
    hits = []
    encoded = [n.encode() for n in needles]
    for base in paths:
        for path in base.rglob("*"):
            try:
                if not path.is_file() or path.stat().st_size > 256 * 1024 * 1024:
                    continue
                data = path.read_bytes()
            except OSError:
                continue
            if any(needle in data for needle in encoded):
                hits.append(str(path))
    return hits


def run_trial(
    number: int, root: Path, rng: random.Random, args: argparse.Namespace, expected: dict[str, str]
) -> Trial:
    trial = Trial(number)
    cwd = root / f"trial-{number:02d}"
    cwd.mkdir(parents=True)
    started = time.monotonic()
    proc = exitplan(cwd, "migrate", "--deadline", "+2h")
    for _ in range(args.kills_per_trial):
        at = rng.uniform(0.0, args.window)
        if not kill_after(proc, at):
            break
        trial.kills_at.append(round(at, 2))
        # Killed before the journal existed (the first fraction of a second), nothing
        # started: `resume` says to run `migrate` first, and so does an operator.
        started_run = (cwd / ".exitplan" / "journal.sqlite").exists()
        proc = (
            exitplan(cwd, "resume")
            if started_run
            else exitplan(cwd, "migrate", "--deadline", "+2h")
        )
    code = proc.wait(timeout=args.timeout)
    trial.resume_codes.append(code)
    if code != 0:
        err = (cwd / "exitplan.out").read_text(errors="replace")[-1500:]
        trial.problems.append(f"final run exited {code}: {err}")
    vault = cwd / "exitplan-sandbox"
    for key, digest in expected.items():
        path = vault / key
        if not path.is_file():
            trial.problems.append(f"missing {key}")
        elif hashlib.sha256(path.read_bytes()).hexdigest() != digest:
            trial.problems.append(f"corrupt {key}")
    leftovers = [
        str(p) for p in cwd.rglob("*") if any(m in p.parts for m in STAGING_MARKERS) and p.is_file()
    ]
    leftovers += [str(p) for p in (cwd / ".exitplan" / "runs").glob("*/scratch/*")]
    trial.problems += [f"left behind: {p}" for p in leftovers[:20]]
    if trial.problems:  # keep the service's logs before the rollback removes them
        for log in cwd.glob("exitplan-target*/log/*"):
            (cwd / f"kept-{log.name}").write_bytes(log.read_bytes())
    rolled = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "rollback", "--quiet"],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    if rolled.returncode != 0:
        trial.problems.append(f"rollback exited {rolled.returncode}: {rolled.stdout[-500:]}")
    trial.problems += [f"still running: {p}" for p in our_processes(cwd)]
    # After the rollback: the trial's directory, and what exitplan keeps in the temp dir
    # (scratch PostgreSQL clusters). The replayed service's own config (0600 files on
    # the host) is gone with the rollback.
    # exitplan's own places in the temp dir: scratch PostgreSQL clusters and RDS dump
    # directories (anything else named exitplan-* there, a checkout or the sandbox's
    # snapshot cache of the source account, is not a run's doing).
    tmp = Path(tempfile.gettempdir())
    scratch = [p for pattern in OWN_TEMP_DIRS for p in tmp.glob(pattern) if p.is_dir()]
    trial.problems += [
        f"secret in clear: {p}" for p in files_holding([cwd, *scratch], SECRET_CANARIES)
    ]
    trial.seconds = round(time.monotonic() - started, 1)
    return trial


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=10, help="trials (one migrate each)")
    parser.add_argument("--kills-per-trial", type=int, default=1)
    parser.add_argument("--window", type=float, default=25.0, help="kill within this many seconds")
    parser.add_argument("--seed", type=int, default=20210110)
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--json", type=Path, help="write the trials here")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    root = args.workdir or Path(tempfile.mkdtemp(prefix="exitplan-kill-loop-"))
    expected = sandbox_objects()
    trials = []
    for number in range(args.kills):
        trial = run_trial(number, root, rng, args, expected)
        trials.append(trial)
        verdict = "ok" if not trial.problems else f"{len(trial.problems)} problem(s)"
        print(f"trial {number}: killed at {trial.kills_at} s, {trial.seconds} s in all: {verdict}")
        for problem in trial.problems[:10]:
            print(f"  {problem}")
    failed = [t for t in trials if t.problems]
    print(
        f"{len(trials)} trials, {len(failed)} with problems; {len(expected)} objects checked each"
    )
    if args.json:
        args.json.write_text(json.dumps([t.__dict__ for t in trials], indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
