"""Benchmark: exitplan's export on a local Dask cluster against its thread executor.

The same source, workloads, verification and measurement as ``s3_export.py``
(a moto server in this process; every copy checked by count and sha256; wall
time around the child, start-up included), for three ways of running
``exitplan export``:

  exitplan        the thread executor (the default)
  exitplan-dask1  ``--workers 1``: a LocalCluster of one worker process
  exitplan-dask2  ``--workers 2``: two worker processes

on W1 (2,000 objects of 4 to 64 KiB), W2 (8 x 64 MiB) and W0 (the first 20
objects of W1), interleaved round-robin. W0 gives each executor's fixed cost
(start-up, and for Dask the cluster); W1 minus W0 gives the cost per object,
and Dask's minus the threads' is what Dask adds per object. With the
executor's batches (``DEFAULT_BATCH_ITEMS`` objects to a task) that is the
cost per task as exitplan sees it.

A second measure isolates Dask from exitplan: a LocalCluster like the one
``--workers 1`` starts, given N trivial tasks through the same sliding window
(twice its threads submitted at once) with one worker event per task, as
exitplan's tasks report their items: wall time per task, for a batch size to
be chosen from.

The results replace the section "## Dask executor" of ``bench/RESULTS.md``
(inserted before the first top-level section after the transfer benchmark
when there is none); the raw runs go to ``bench/.work/dask_export.json``.

    python bench/dask_export.py [--rounds 3] [--tasks 2000]
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import queue
import shlex
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# This directory (s3_export) and the work tree (orchestrator), whatever else is installed.
sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]

import s3_export as bench  # noqa: E402  (this directory, put on the path above)

SECTION = "## Dask executor"
TOOL_NAMES = ("exitplan", "exitplan-dask1", "exitplan-dask2")


def dask_task_cost(tasks: int, threads: int) -> dict[str, float]:
    """Wall seconds per trivial task on a one-process LocalCluster of ``threads``
    threads, submitted through a window of twice the threads, each task sending
    one worker event (as exitplan's tasks report their items)."""
    from distributed import Client, LocalCluster, get_worker

    def task(i: int, topic: str) -> int:
        get_worker().log_event(topic, {"op": "item", "i": i})
        return i

    results: dict[str, float] = {}
    with (
        LocalCluster(
            n_workers=1,
            threads_per_worker=threads,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.ERROR,
        ) as cluster,
        Client(cluster) as client,
    ):
        for label, with_event in (("task", False), ("task + event", True)):
            topic = f"bench-{label}"
            events: queue.SimpleQueue[Any] = queue.SimpleQueue()
            if with_event:
                client.subscribe_topic(topic, events.put)
            done: queue.SimpleQueue[Any] = queue.SimpleQueue()
            window = 2 * threads
            started = time.perf_counter()
            submitted = finished = 0
            while finished < tasks:
                while submitted < tasks and submitted - finished < window:
                    future = client.submit(
                        task if with_event else _plain, submitted, topic, pure=False
                    )
                    future.add_done_callback(done.put)
                    submitted += 1
                done.get().result()
                finished += 1
            if with_event:
                seen = 0
                while seen < tasks:
                    events.get(timeout=30)
                    seen += 1
            results[label] = (time.perf_counter() - started) / tasks
    return results


def _plain(i: int, topic: str) -> int:
    return i


def section(
    runs: Sequence[bench.Run],
    workloads: Sequence[bench.Workload],
    task_cost: dict[str, float],
    args: argparse.Namespace,
    load: str,
    started: datetime.datetime,
) -> list[str]:
    from orchestrator.export.executors.dask_executor import DEFAULT_BATCH_ITEMS

    lines = [
        SECTION,
        "",
        f"Run {started:%Y-%m-%d %H:%M %Z} with:",
        "",
        "```",
        shlex.join(["python", *sys.argv]),
        "```",
        "",
        "`exitplan export --only s3` from the moto server of `s3_export.py` (in the",
        "benchmark's process), with the thread executor and with `--workers 1` and",
        "`--workers 2` (a LocalCluster of 1 or 2 worker processes, 16 threads each);",
        f"median of {args.rounds} interleaved runs, every copy checked (count and sha256).",
        f"nproc {os.cpu_count()}; load average at start: {load}. `wall / exitplan`:",
        "over the thread executor's wall time in the same run. CPU is what `wait4` gives",
        "for the exitplan process, which includes the worker processes only as far as",
        "it reaped them.",
    ]
    for workload in workloads:
        copies = [r for r in runs if r.workload == workload.name]
        lines += ["", f"### {workload.name}: {workload.describe()}", ""]
        lines += bench.copy_table(copies, list(TOOL_NAMES))

    def median_wall(workload: str, tool: str) -> float:
        return statistics.median(
            r.child.wall_s for r in runs if r.workload == workload and r.tool == tool
        )

    w1 = next(w for w in workloads if w.name == "W1")
    w0 = next(w for w in workloads if w.name == "W0")
    extra = len(w1.objects) - len(w0.objects)
    per_object = {t: (median_wall("W1", t) - median_wall("W0", t)) / extra for t in TOOL_NAMES}
    fixed = {t: median_wall("W0", t) for t in TOOL_NAMES}
    lines += [
        "",
        "### Dask: the cost of a task",
        "",
        f"From the runs above: fixed cost = W0's wall time ({len(w0.objects)} objects);",
        f"cost per object = (W1 - W0) / {extra}; what Dask adds per task = its cost per",
        f"object over the threads', times the executor's batch ({DEFAULT_BATCH_ITEMS} objects).",
        "",
    ]
    rows = []
    for t in TOOL_NAMES:
        added = per_object[t] - per_object["exitplan"]
        rows.append(
            [
                t,
                f"{fixed[t]:.2f}",
                f"{fixed[t] - fixed['exitplan']:+.2f}",
                f"{1000 * per_object[t]:.2f}",
                f"{1000 * added:+.2f}" if t != "exitplan" else "-",
                f"{1000 * added * DEFAULT_BATCH_ITEMS:+.1f}" if t != "exitplan" else "-",
            ]
        )
    header = ["executor", "W0 wall s (fixed cost)", "over threads s", "wall ms/object"]
    header += ["Dask adds ms/object", f"Dask adds ms/task ({DEFAULT_BATCH_ITEMS} objects)"]
    lines += bench.table(header, rows)
    lines += [
        "",
        f"Dask alone (`dask_task_cost`: {args.tasks} trivial tasks on a LocalCluster of one",
        "worker process, 16 threads, a window of 32 submitted at once):",
        "",
    ]
    lines += bench.table(
        ["task", "wall ms per task"],
        [[label, f"{1000 * seconds:.2f}"] for label, seconds in task_cost.items()],
    )
    lines.append("")
    return lines


def replace_section(path: Path, new: list[str]) -> None:
    """Put ``new`` in place of ``SECTION`` in ``path`` (up to the next heading of level 1
    or 2), or before the first top-level heading after the first line; the rest of the
    file is kept byte for byte."""
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    block = "\n".join(new) + "\n"
    start = next((i for i, line in enumerate(lines) if line.rstrip("\n") == SECTION), None)
    if start is not None:
        end = next(
            (
                i
                for i in range(start + 1, len(lines))
                if lines[i].startswith("## ") or lines[i].startswith("# ")
            ),
            len(lines),
        )
    else:
        start = end = next(
            (i for i in range(1, len(lines)) if lines[i].startswith("# ")), len(lines)
        )
    path.write_text("".join(lines[:start]) + block + "\n" + "".join(lines[end:]), "utf-8")


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="dask_export.py", description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="runs per executor (default: 3)")
    parser.add_argument(
        "--tasks", type=int, default=2000, help="trivial tasks for Dask alone (default: 2000)"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--work-dir", type=Path, default=bench.DEFAULT_WORK_DIR / "dask")
    parser.add_argument("--results", type=Path, default=bench.DEFAULT_RESULTS)
    args = parser.parse_args(argv)
    started = datetime.datetime.now().astimezone()
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    w1 = bench.small_objects(2000, 4, 64, args.seed)
    workloads = [
        bench.Workload("W0", "bench-w0", tuple(w1[:20])),
        bench.Workload("W1", "bench-w1", tuple(w1)),
        bench.Workload("W2", "bench-w2", tuple(bench.large_objects(8, 64))),
    ]
    tools = bench.build_tools(TOOL_NAMES, "moto", None)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    with bench.moto_source() as source:
        runner = bench.Bench(source, tools, args.work_dir, args.seed)
        for workload in workloads:
            runner.rounds(workload, args.rounds, noop=False)
        bench.empty_account(source)
    bench.log(f"Dask alone: {args.tasks} trivial tasks")
    task_cost = dask_task_cost(args.tasks, 16)
    bench.log(", ".join(f"{k}: {1000 * v:.2f} ms" for k, v in task_cost.items()))
    replace_section(args.results, section(runner.runs, workloads, task_cost, args, load, started))
    (args.work_dir / "dask_export.json").write_text(
        json.dumps([r.as_json() for r in runner.runs], indent=1) + "\n", encoding="utf-8"
    )
    bench.log(f"results: {args.results}")
    return 0 if all(r.verified and r.child.exit_code == 0 for r in runner.runs) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
