"""Where exitplan's time goes exporting W1 from moto: one py-spy profile, summed up.

Seeds ``s3_export.py``'s W1 (2,000 objects of 4 to 64 KiB) into a moto
server in this process, then runs ``exitplan export --only s3`` under
``py-spy record`` (``--gil`` by default: samples of the thread that holds the
GIL, i.e. where the process spends its Python CPU; ``--idle`` adds waiting
threads). The collapsed stacks are written beside a summary that puts each
sample in the first category (``CATEGORIES``, in order) any of its frames
matches, and prints the share of each.

    python bench/profile_export.py [--mode gil|idle] [--rate 250] [--out bench/.work/profile]

Needs py-spy (``pip install py-spy``; a benchmark tool, not a dependency).
"""

from __future__ import annotations

import argparse
import collections
import json
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent)]

import s3_export as bench  # noqa: E402  (this directory, put on the path above)

#: (label, substrings of a frame "function (file:line)"); the first match wins,
#: so the narrower categories come first.
CATEGORIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("start-up: imports", ("_find_and_load", "_call_with_frames_removed")),
    ("listing (botocore paginator and parser)", ("paginate", "botocore/parsers", "dateutil")),
    ("SigV4 signing", ("botocore/auth.py", "hmac", "sign")),
    ("HTTP: headers (email.parser)", ("email/", "parse_headers")),
    ("HTTP: request/response", ("http/client", "urllib3", "socket.py")),
    ("sha256/md5/crc", ("hashlib", "digest", "crc32", "checksum")),
    ("journal", ("journal.py",)),
    ("destination write (libcloud local)", ("libcloud", "providers/local", "providers/storage")),
    ("events/progress", ("events.py", "progress.py")),
    ("planner/scheduler", ("orchestrator/plan/", "export/work.py")),
    ("coordinator (transfer.py)", ("transfer.py",)),
    ("thread hand-offs (queue, threading)", ("queue.py", "threading.py", "thread.py")),
    ("report/manifest", ("manifest.py", "report/")),
)


def categorise(collapsed: Path) -> list[tuple[str, int]]:
    """Samples per category from py-spy's ``raw`` output (``stack;frames count``)."""
    counts: collections.Counter[str] = collections.Counter()
    for line in collapsed.read_text(encoding="utf-8").splitlines():
        stack, _, number = line.rpartition(" ")
        if not stack:
            continue
        frames = stack.split(";")
        label = "other"
        for name, needles in CATEGORIES:
            if any(needle in frame for frame in frames for needle in needles):
                label = name
                break
        counts[label] += int(number)
    return counts.most_common()


def leaf_functions(collapsed: Path, top: int) -> list[tuple[str, int]]:
    counts: collections.Counter[str] = collections.Counter()
    for line in collapsed.read_text(encoding="utf-8").splitlines():
        stack, _, number = line.rpartition(" ")
        if stack:
            counts[stack.split(";")[-1]] += int(number)
    return counts.most_common(top)


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="profile_export.py", description=__doc__.split("\n")[0])
    parser.add_argument("--mode", choices=("gil", "idle"), default="gil")
    parser.add_argument("--rate", type=int, default=250, help="samples per second")
    parser.add_argument("--out", type=Path, default=bench.DEFAULT_WORK_DIR / "profile")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    workload = bench.Workload("W1", "bench-w1", tuple(bench.small_objects(2000, 4, 64, args.seed)))
    tool = bench.Exitplan(None)
    collapsed = args.out / f"w1-moto-{args.mode}.txt"
    with bench.moto_source() as source:
        expected = bench.seed_workload(source, workload, args.seed)
        # Warm moto's backends (the benchmark's warm-up), then the measured run.
        for label in ("warm-up", "profiled"):
            job = bench.CopyJob(
                source, workload.bucket, args.out / label / "dest", args.out / label
            )
            job.dest.mkdir(parents=True)
            invocation = tool.copy(job)
            argv_run = invocation.argv
            if label == "profiled":
                argv_run = [py_spy, "record", "--format", "raw", "--rate", str(args.rate)]
                argv_run += ["--gil"] if args.mode == "gil" else ["--idle"]
                argv_run += ["--output", str(collapsed), "--", *invocation.argv]
            done = subprocess.run(argv_run, env=invocation.env, capture_output=True, check=False)
            bench.log(f"{label}: exit {done.returncode}")
            check = bench.verify_copy(invocation.root, expected)
            if not check.ok:
                raise SystemExit(f"{label}: copy not verified: {check.problems[:3]}")
        bench.empty_account(source)
    total = sum(n for _, n in categorise(collapsed))
    summary = {
        "mode": args.mode,
        "samples": total,
        "categories": {name: n for name, n in categorise(collapsed)},
        "leaves": {name: n for name, n in leaf_functions(collapsed, 25)},
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n", "utf-8")
    print(f"{total} samples ({args.mode}); {collapsed}")
    for name, n in categorise(collapsed):
        print(f"{100 * n / total:5.1f}%  {name}")
    print("top leaf functions:")
    for name, n in leaf_functions(collapsed, 25):
        print(f"{100 * n / total:5.1f}%  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
