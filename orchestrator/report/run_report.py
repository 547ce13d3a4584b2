"""Reports of a run: what was saved, how many bytes, how long, the deadline margin.

``build_report`` reads the journal (never holding item lists) and returns a
JSON-able dict; ``write_report_json`` publishes it atomically. Reports hold
names, counts and checksums, never secret values.
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from orchestrator.run.deadline import format_duration
from orchestrator.run.journal import Journal


def build_report(
    journal: Journal,
    run_id: str,
    *,
    finished_at: datetime,
    status: str,
    safety_margin: timedelta,
    destinations: list[dict[str, str]],
    plan: list[dict[str, Any]],
    seams: dict[str, str],
) -> dict[str, Any]:
    run = journal.get_run(run_id)
    assert run is not None, f"run {run_id} is not in the journal"
    kinds = []
    totals = {"saved_items": 0, "saved_bytes": 0, "copied_bytes": 0, "failed_items": 0}
    for progress in journal.progress(run_id):
        saved_items = progress.done_items + progress.skipped_items
        saved_bytes = progress.done_bytes + progress.skipped_bytes
        kinds.append(
            {
                "kind": progress.kind,
                "listed_items": progress.listed_items,
                "listed_bytes": progress.listed_bytes,
                "saved_items": saved_items,
                "saved_bytes": saved_bytes,
                "copied_this_run_items": progress.done_items,
                "copied_this_run_bytes": progress.copied_bytes,
                "already_verified_items": progress.skipped_items,
                "failed_items": progress.failed_items,
                "complete": progress.listing_done and saved_items == progress.listed_items,
            }
        )
        totals["saved_items"] += saved_items
        totals["saved_bytes"] += saved_bytes
        totals["copied_bytes"] += progress.copied_bytes
        totals["failed_items"] += progress.failed_items
    duration = finished_at - run.started_at
    deadline_view: dict[str, Any] = {"deadline": None}
    if run.deadline is not None:
        margin = run.deadline - finished_at
        deadline_view = {
            "deadline": run.deadline.isoformat(),
            "safety_margin": format_duration(safety_margin),
            "margin_left": format_duration(margin),
            "margin_left_seconds": round(margin.total_seconds(), 3),
            "met": margin >= safety_margin,
        }
    return {
        "run_id": run_id,
        "command": run.command,
        "status": status,
        "started_at": run.started_at.isoformat(),
        "finished_at": finished_at.isoformat(),
        "duration_seconds": round(duration.total_seconds(), 3),
        "duration": format_duration(duration),
        "deadline": deadline_view,
        "plan": plan,
        "destinations": destinations,
        "kinds": kinds,
        "totals": {**totals, "unchecked_items": journal.item_counts(run_id)["unchecked"]},
        "failed": [
            {"destination": d, "key": k, "error": e} for d, k, e in journal.failed_items(run_id)
        ],
        # Saved, but the source had nothing to check the bytes against: never "verified".
        "unchecked": [
            {"destination": d, "key": k, "why": w} for d, k, w in journal.unchecked_items(run_id)
        ],
        "steps": [
            {"name": n, "status": s, "started_at": a, "finished_at": f, "detail": d}
            for n, s, a, f, d in journal.steps(run_id)
        ],
        "next": seams,
    }


def write_report_json(path: Path, report: dict[str, Any]) -> None:
    """Write ``report`` to ``path`` atomically (a reader never sees half a report)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".report-", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(report, handle, indent=2, sort_keys=False)
        handle.write("\n")
    os.replace(tmp, path)
