"""How far the deadline planner's forecast is from what happens (issue 11).

For each workload, `exitplan` runs with a deadline far enough away that
nothing is descoped, and its report's ``prediction_errors`` say how far the
predicted export finish was from the actual one: the plan made before the
export started (``export: the plan``) and the projection a tenth of the way
in (``export: 10% in``). Error = (actual - predicted) / predicted duration:
positive when the export took longer than forecast.

Workloads:

- ``sandbox``: ``exitplan migrate`` on the built-in sandbox (every kind: S3,
  RDS, DynamoDB, Route 53, secrets, EC2, EBS).
- ``W1``, ``W2``, ``W1+W2``: ``exitplan export --only s3`` of the S3
  workloads of ``bench/s3_export.py`` from a moto server on 127.0.0.1.

Each with ``--bwlimit`` (so the egress is the known limit a real link would
be) and without. Results go to ``bench/RESULTS.md`` (section "Deadline
planner: prediction error") and ``bench/plan_accuracy.json``.

    python bench/plan_accuracy.py [--rounds 2] [--workloads sandbox,W1,W2,W1+W2]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
sys.path.insert(0, str(BENCH_DIR))

import s3_export  # noqa: E402  (bench/ is not a package)

RESULTS = BENCH_DIR / "RESULTS.md"
SECTION = "# Deadline planner: prediction error"


@dataclass
class Case:
    workload: str
    bwlimit: str | None


@dataclass
class Measured:
    case: Case
    exit_code: int
    duration_s: float | None = None
    errors: dict[str, float] = field(default_factory=dict)
    note: str = ""


def exitplan_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO_ROOT)}


def run_exitplan(argv: list[str], cwd: Path, env: dict[str, str]) -> tuple[int, dict[str, Any]]:
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", *argv],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    try:
        report = json.loads(done.stdout)
    except ValueError:
        report = {}
    return done.returncode, report


def measured_from(case: Case, code: int, report: dict[str, Any]) -> Measured:
    result = Measured(case, code)
    export = next((s for s in report.get("steps", []) if s["name"] == "export"), None)
    if export and export.get("finished_at") and export.get("started_at"):
        result.duration_s = (
            datetime.datetime.fromisoformat(export["finished_at"])
            - datetime.datetime.fromisoformat(export["started_at"])
        ).total_seconds()
    for error in report.get("prediction_errors", []):
        if error.get("error_ratio") is not None:
            result.errors[error["scope"]] = float(error["error_ratio"])
    descoped = report.get("totals", {}).get("descoped_items", 0)
    if descoped:
        result.note = f"{descoped} items descoped"
    if not result.errors:
        result.note = (result.note + "; " if result.note else "") + "no prediction in the report"
    return result


def sandbox_case(case: Case) -> Measured:
    with tempfile.TemporaryDirectory(prefix="plan-accuracy-") as tmp:
        cwd = Path(tmp)
        argv = ["migrate", "--deadline", "+1h", "--safety-margin", "1m", "--quiet"]
        argv += ["--output", "json"]
        if case.bwlimit:
            argv += ["--bwlimit", case.bwlimit]
        code, report = run_exitplan(argv, cwd, exitplan_env())
        for run in sorted((cwd / ".exitplan" / "runs").glob("*")):
            subprocess.run(
                [sys.executable, "-m", "orchestrator.cli", "rollback", run.name],
                cwd=cwd,
                env=exitplan_env(),
                capture_output=True,
                timeout=300,
            )
        return measured_from(case, code, report)


def s3_case(case: Case, source: Any, workload: Any, seed: int) -> Measured:
    s3_export.seed_workload(source, workload, seed)
    with tempfile.TemporaryDirectory(prefix="plan-accuracy-") as tmp:
        state = Path(tmp)
        config = state / "bench.yaml"
        config.write_text(
            "source:\n"
            f"  aws: {{regions: [{s3_export.REGION}], endpoint_url: {json.dumps(source.endpoint)}}}\n"
            f"workspace: {json.dumps(str(state / 'workspace'))}\n"
            "safety_margin: 1m\n"
            "destinations:\n"
            f"  - {{name: bench, storage: {{driver: local, path: {json.dumps(str(state / 'dest'))}}}}}\n",
            encoding="utf-8",
        )
        argv = ["export", "--config", str(config), "--only", "s3", "--deadline", "+1h"]
        argv += ["--quiet", "--output", "json"]
        if case.bwlimit:
            argv += ["--bwlimit", case.bwlimit]
        env = {**s3_export.base_env(source, state), "PYTHONPATH": str(REPO_ROOT)}
        code, report = run_exitplan(argv, state, env)
        return measured_from(case, code, report)


def table(results: Sequence[Measured]) -> list[str]:
    scopes = ["export: the plan", "export: 10% in"]
    lines = [
        "| workload | --bwlimit | runs | export s (median) | "
        + " | ".join(f"error, {s} (median; runs)" for s in scopes)
        + " | notes |",
        "|---|---|---|---|" + "---|" * len(scopes) + "---|",
    ]
    by_case: dict[tuple[str, str | None], list[Measured]] = {}
    for r in results:
        by_case.setdefault((r.case.workload, r.case.bwlimit), []).append(r)
    for (workload, bwlimit), runs in by_case.items():
        durations = [r.duration_s for r in runs if r.duration_s is not None]
        cells = []
        for scope in scopes:
            values = [r.errors[scope] for r in runs if scope in r.errors]
            if values:
                each = ", ".join(f"{v:+.0%}" for v in values)
                cells.append(f"{statistics.median(values):+.0%} ({each})")
            else:
                cells.append("-")
        notes = "; ".join(
            sorted(
                {r.note for r in runs if r.note}
                | {f"exit {r.exit_code}" for r in runs if r.exit_code not in (0, 3)}
            )
        )
        took = f"{statistics.median(durations):.1f}" if durations else "-"
        lines.append(
            f"| {workload} | {bwlimit or 'none'} | {len(runs)} | {took} | "
            + " | ".join(cells)
            + f" | {notes} |"
        )
    return lines


def replace_section(text: str, body: str) -> str:
    """``text`` with its section ``SECTION`` (up to the next heading of level 1 or 2)
    replaced by ``body``, or with ``body`` appended when there is none; the rest is
    kept byte for byte."""
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.rstrip("\n") == SECTION), None)
    if start is None:
        return text.rstrip("\n") + "\n\n" + body
    end = next(
        (i for i in range(start + 1, len(lines)) if lines[i].startswith(("# ", "## "))),
        len(lines),
    )
    after = "".join(lines[end:])
    return "".join(lines[:start]) + body + ("\n" + after if after else "")


def write_results(
    results: Sequence[Measured],
    started: datetime.datetime,
    took_s: float,
    facts: dict[str, str],
) -> None:
    body = [
        SECTION,
        "",
        f"Run {started:%Y-%m-%d %H:%M %Z} in {took_s / 60:.1f} min with:",
        "",
        "```",
        shlex.join(["python", "bench/plan_accuracy.py", *sys.argv[1:]]),
        "```",
        "",
        "Error = (actual - predicted) / predicted export duration; positive: the export "
        "took longer than forecast. Target: within 15%. Deadline +1h, safety margin 1m "
        "(nothing is descoped). W1/W2/W1+W2 are `bench/s3_export.py`'s workloads "
        "(exported with `--only s3` from moto on 127.0.0.1); sandbox is `exitplan "
        "migrate` on the built-in sandbox.",
        "",
        f"Machine: {facts.get('nproc')} cores, load average at start {facts.get('load average at start', '?')}.",
        "",
        *table(results),
        "",
    ]
    text = RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else ""
    RESULTS.write_text(replace_section(text, "\n".join(body)), encoding="utf-8")
    (BENCH_DIR / "plan_accuracy.json").write_text(
        json.dumps(
            [
                {
                    "workload": r.case.workload,
                    "bwlimit": r.case.bwlimit,
                    "exit_code": r.exit_code,
                    "export_s": r.duration_s,
                    "errors": r.errors,
                    "note": r.note,
                }
                for r in results
            ],
            indent=2,
        )
        + "\n",
        encoding="utf-8",
    )


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workloads", default="sandbox,W1,W2,W1+W2")
    parser.add_argument("--seed", type=int, default=20261122)
    parser.add_argument("--no-write", action="store_true", help="print, do not write RESULTS.md")
    args = parser.parse_args(argv)
    wanted = [w.strip() for w in args.workloads.split(",") if w.strip()]
    started = datetime.datetime.now().astimezone()
    clock = time.monotonic()
    facts = s3_export.machine()  # the load average at the start, not the end
    w1 = s3_export.small_objects(2000, 4, 64, args.seed)
    w2 = s3_export.large_objects(8, 64)
    workloads = {
        "W1": (s3_export.Workload("W1", "bench-w1", tuple(w1)), "4MiB"),
        "W2": (s3_export.Workload("W2", "bench-w2", tuple(w2)), "16MiB"),
        "W1+W2": (s3_export.Workload("W1+W2", "bench-both", tuple(w1 + w2)), "16MiB"),
    }
    results: list[Measured] = []
    for _round in range(args.rounds):
        if "sandbox" in wanted:
            for bwlimit in ("2MiB", None):
                results.append(sandbox_case(Case("sandbox", bwlimit)))
                print(results[-1], flush=True)
        s3_wanted = [w for w in wanted if w in workloads]
        if s3_wanted:
            with s3_export.moto_source() as source:
                for name in s3_wanted:
                    workload, bwlimit = workloads[name]
                    for limit in (bwlimit, None):
                        results.append(s3_case(Case(name, limit), source, workload, args.seed))
                        print(results[-1], flush=True)
    took = time.monotonic() - clock
    for line in table(results):
        print(line)
    if not args.no_write:
        write_results(results, started, took, facts)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
