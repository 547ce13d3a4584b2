"""How long `exitplan inventory` takes on the built-in sandbox, cold and warm.

Each run is ``/usr/bin/time -v python -m orchestrator.cli inventory`` in a new
empty directory; a second table times a process that only starts the sandbox
(``running_sandbox()``: imports, then seed or load) and stops it. Variants:

- ``before``: a checkout of the code to compare with (``--before DIR``, e.g.
  ``git archive <commit> | tar -x -C DIR``), which seeds moto on every run;
- ``cold``: this work tree with an empty sandbox cache (it seeds and saves);
- ``warm``: this work tree with the cache a previous run saved.

Rounds are interleaved; the table shows medians. Every run's inventory output
must be identical (same ids, same sizes), or the benchmark fails.

    python bench/sandbox_start.py --before /tmp/exitplan-main --rounds 3
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

TREE = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Sample:
    wall_s: float
    cpu_s: float
    rss_mib: float
    output: str


def _seconds(clock: str) -> float:
    parts = [float(p) for p in clock.split(":")]
    total = 0.0
    for part in parts:
        total = total * 60 + part
    return total


#: A process that starts the sandbox and stops it: what every command pays first.
_SANDBOX_ONLY = (
    "from orchestrator.sandbox.account import running_sandbox\n"
    "with running_sandbox() as sandbox:\n"
    "    print(sandbox.summary.bucket('microblog-user-media'))\n"
)


def run_inventory(code: Path, cache_dir: Path | None, *, sandbox_only: bool = False) -> Sample:
    workdir = Path(tempfile.mkdtemp(prefix="exitplan-bench-"))
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env["PYTHONPATH"] = str(code)
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        env["EXITPLAN_CACHE_DIR"] = str(cache_dir) if cache_dir else "off"
        command = ["-c", _SANDBOX_ONLY] if sandbox_only else ["-m", "orchestrator.cli", "inventory"]
        done = subprocess.run(
            ["/usr/bin/time", "-v", sys.executable, *command],
            cwd=workdir,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise SystemExit(f"inventory failed in {code}:\n{done.stderr[-3000:]}")
        fields = dict(
            line.strip().rsplit(": ", 1) for line in done.stderr.splitlines() if ": " in line
        )
        return Sample(
            wall_s=_seconds(fields["Elapsed (wall clock) time (h:mm:ss or m:ss)"]),
            cpu_s=float(fields["User time (seconds)"]) + float(fields["System time (seconds)"]),
            rss_mib=int(fields["Maximum resident set size (kbytes)"]) / 1024,
            output=done.stdout,
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, help="a checkout of the code to compare with")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    tables: dict[str, dict[str, list[Sample]]] = {
        what: {"before": [], "cold": [], "warm": []} for what in ("inventory", "sandbox")
    }
    warm_cache = Path(tempfile.mkdtemp(prefix="exitplan-bench-cache-"))
    try:
        run_inventory(TREE, warm_cache)  # fills the cache the warm runs load
        for _ in range(args.rounds):
            for what, samples in tables.items():
                only = what == "sandbox"
                if args.before:
                    samples["before"].append(run_inventory(args.before, None, sandbox_only=only))
                cold_cache = Path(tempfile.mkdtemp(prefix="exitplan-bench-cache-"))
                try:
                    samples["cold"].append(run_inventory(TREE, cold_cache, sandbox_only=only))
                finally:
                    shutil.rmtree(cold_cache, ignore_errors=True)
                samples["warm"].append(run_inventory(TREE, warm_cache, sandbox_only=only))
        cache_mib = sum(f.stat().st_size for f in warm_cache.iterdir()) / 1024**2
    finally:
        shutil.rmtree(warm_cache, ignore_errors=True)

    for what, samples in tables.items():
        if len({s.output for runs in samples.values() for s in runs}) != 1:
            raise SystemExit(f"{what}: the variants printed different results")
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"`python bench/sandbox_start.py --rounds {args.rounds}`: median of {args.rounds}")
    print(f"(range in brackets); nproc {os.cpu_count()}, Python {platform.python_version()},")
    print(f"load average {load} at the end; sandbox cache file {cache_mib:.0f} MiB; every")
    print("variant printed the same inventory.")
    for what, samples in tables.items():
        title = {
            "inventory": "`exitplan inventory`, the whole command",
            "sandbox": "a process that only starts and stops the sandbox",
        }[what]
        print(f"\n{title}:\n")
        print("| variant | wall s | CPU s (user+sys) | peak RSS MiB |")
        print("|---|---:|---:|---:|")
        for name, runs in samples.items():
            if not runs:
                continue
            wall = statistics.median(s.wall_s for s in runs)
            cpu = statistics.median(s.cpu_s for s in runs)
            rss = max(s.rss_mib for s in runs)
            spread = f" ({min(s.wall_s for s in runs):.2f}-{max(s.wall_s for s in runs):.2f})"
            print(f"| {name} | {wall:.2f}{spread} | {cpu:.2f} | {rss:.0f} |")


if __name__ == "__main__":
    main()
