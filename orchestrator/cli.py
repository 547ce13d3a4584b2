"""The ``exitplan`` command: parses arguments, calls the engine, renders its events.

This is the only module that knows about terminals. The engine reports
through events; here they become rich progress bars on a terminal, or plain
timestamped lines when output is piped (CI logs, ``tee``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
import time
import traceback
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

import botocore.exceptions

from orchestrator import __version__
from orchestrator.clock import Clock, SystemClock
from orchestrator.config import (
    DEFAULT_SAFETY_MARGIN,
    Config,
    default_sandbox_config,
    load_config,
    parse_bwlimit,
    parse_concurrency,
    write_sandbox_config,
)
from orchestrator.errors import ConfigError, ExitplanError
from orchestrator.events import (
    Event,
    EventBus,
    ExportPlanned,
    ItemFinished,
    Projection,
    RunWarning,
    StepFinished,
    StepStarted,
)
from orchestrator.replay.events import ReplayStarted, ReplayStepDone
from orchestrator.run.deadline import format_duration, parse_deadline, parse_duration

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse's own usage errors: exit 2 too
        self.print_usage(sys.stderr)
        raise ConfigError(f"{self.prog}: {message}")


def _human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


# -- rendering -------------------------------------------------------------


class PlainRenderer:
    """One line per step and a progress line every few seconds; for logs and pipes."""

    def __init__(self, out: TextIO, every_s: float = 5.0) -> None:
        self.out = out
        self.every_s = every_s
        self._last = 0.0
        self._lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        line = None
        if isinstance(event, StepStarted):
            line = f"step {event.step}: started"
        elif isinstance(event, StepFinished):
            line = f"step {event.step}: {event.status}" + (
                f" ({event.detail})" if event.detail else ""
            )
        elif isinstance(event, ItemFinished) and event.status in ("failed", "unchecked"):
            line = f"{event.status} {event.key}: {event.error}"
        elif isinstance(event, RunWarning):
            line = f"warning: {event.message}"
        elif isinstance(event, ReplayStepDone | ReplayStarted):
            line = _replay_text(event)
        elif isinstance(event, Projection):
            now = time.monotonic()
            if now - self._last < self.every_s:
                return
            self._last = now
            line = _projection_text(event)
        if line:
            with self._lock:
                stamp = datetime.now().strftime("%H:%M:%S")
                print(f"{stamp} {line}", file=self.out, flush=True)

    def close(self) -> None:
        pass


def _replay_text(event: ReplayStepDone | ReplayStarted) -> str:
    """One line per playbook step (already redacted by the engine); a diff below it."""
    if isinstance(event, ReplayStarted):
        return f"replay {event.playbook} on {event.host} ({event.mode}, {event.steps} steps)"
    kind = "handler" if event.handler else "step"
    marker = f" [{event.marker}]" if event.marker else ""
    tries = f" after {event.attempts} tries" if event.attempts > 1 else ""
    text = f"  {kind} {event.step}{marker}: {event.status}{tries}: {event.detail}"
    return text + ("\n" + event.diff.rstrip("\n") if event.diff else "")


def _projection_text(event: Projection) -> str:
    rate = f"{_human_bytes(event.bytes_per_second)}/s"
    left = _human_bytes(event.remaining_bytes)
    if event.projected_finish is None:
        return f"progress: {left} left at {rate}; no finish estimate yet"
    if event.p90_finish is not None and event.cutoff is not None:
        margin = format_duration(event.cutoff - event.p90_finish)
        text = (
            f"progress: {left} left at {rate}; finish P50 {event.projected_finish:%H:%M:%S}, "
            f"P90 {event.p90_finish:%H:%M:%S}; cutoff {event.cutoff:%H:%M:%S}, margin {margin}; "
            f"{event.verdict or ('on track' if event.will_make_it else 'LATE')}"
        )
        if event.descoped_items:
            text += f"; {event.descoped_items} descoped ({_human_bytes(event.descoped_bytes)})"
        return text
    text = f"progress: {left} left at {rate}; projected finish {event.projected_finish:%Y-%m-%d %H:%M:%S %Z}"
    if event.deadline is not None:
        verdict = "makes" if event.will_make_it else "MISSES"
        margin = format_duration(event.deadline - event.projected_finish)
        text += f"; {verdict} the deadline (margin {margin})"
    return text


class RichRenderer:
    """Progress bars per kind plus the deadline outlook, on a terminal."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TransferSpeedColumn,
        )

        self.console = Console(stderr=True)
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[note]}"),
            console=self.console,
        )
        self._tasks: dict[str, Any] = {}
        self._descoped: dict[str, int] = {}
        self._outlook = self.progress.add_task("deadline", total=None, note="", visible=False)
        self.progress.start()

    def _task(self, kind: str) -> Any:
        if kind not in self._tasks:
            self._tasks[kind] = self.progress.add_task(kind, total=None, note="")
        return self._tasks[kind]

    def __call__(self, event: Event) -> None:
        if isinstance(event, ItemFinished):
            task = self._task(event.kind)
            if event.status in ("skipped", "verified", "unchecked"):
                self.progress.advance(task, event.size)
                if event.status == "unchecked":
                    self.console.print(f"[yellow]unchecked[/] {event.key}: {event.error}")
            elif event.status == "descoped":
                self._descoped[event.kind] = self._descoped.get(event.kind, 0) + 1
                self.progress.update(task, note=f"{self._descoped[event.kind]} descoped")
            else:
                self.console.print(f"[red]failed[/] {event.key}: {event.error}")
        elif isinstance(event, ExportPlanned):
            self.progress.update(self._task(event.kind), total=event.bytes)
        elif isinstance(event, StepStarted):
            self.console.print(f"[cyan]▶[/] {event.step}")
        elif isinstance(event, StepFinished):
            colour = {"done": "green", "skipped": "dim"}.get(event.status, "red")
            detail = f" — {event.detail}" if event.detail else ""
            self.console.print(f"[{colour}]{event.status}[/] {event.step}{detail}")
        elif isinstance(event, RunWarning):
            self.console.print(f"[yellow]warning[/] {event.message}")
        elif isinstance(event, ReplayStepDone | ReplayStarted):
            from rich.markup import escape

            self.console.print(escape(_replay_text(event)))
        elif isinstance(event, Projection):
            self.progress.update(
                self._outlook, visible=True, description="outlook", note=_projection_text(event)
            )

    def close(self) -> None:
        self.progress.stop()


# -- config and arguments --------------------------------------------------


def _load(args: argparse.Namespace) -> Config:
    """The config (a file, or the built-in sandbox here) with the flags applied."""
    config = load_config(Path(args.config)) if args.config else default_sandbox_config(Path.cwd())
    overrides: dict[str, Any] = {}
    if getattr(args, "workspace", None):
        overrides["workspace"] = Path(args.workspace).resolve()
    transfer = config.transfer
    concurrency = _concurrency(args)
    if concurrency is not None:
        transfer = replace(transfer, concurrency=concurrency)
    if getattr(args, "bwlimit", None) is not None:
        transfer = replace(transfer, bwlimit=_bwlimit(args))
    workers = _workers(args)
    if workers is not None:
        transfer = replace(transfer, workers=workers)
    overrides["transfer"] = transfer
    shard = _shard(args)
    if shard is not None:
        # Each shard keeps its own journal: shards never share one by accident.
        base = overrides.get("workspace", config.workspace)
        overrides["workspace"] = Path(base) / "shards" / shard.label
    if getattr(args, "safety_margin", None) is not None:
        overrides["safety_margin"] = parse_duration(args.safety_margin, "--safety-margin")
    return replace(config, **overrides)


#: ``--workers``: local Dask worker processes, at least one.
MAX_WORKERS = 256


def _workers(args: argparse.Namespace) -> int | None:
    """``--workers N``: a local Dask cluster of N worker processes (needs the dask extra)."""
    value = getattr(args, "workers", None)
    if value is None:
        return None
    text = str(value).strip()
    if not text.isdigit() or not 1 <= int(text) <= MAX_WORKERS:
        raise ConfigError(
            f"--workers: {value!r} is not a number of worker processes; write a whole "
            f"number from 1 to {MAX_WORKERS}, e.g. --workers 2"
        )
    from orchestrator.export.executors.dask_executor import require_dask

    require_dask("--workers")
    return int(text)


def _shard(args: argparse.Namespace) -> Any:
    """``--shard K/N`` as a ``Shard``, or None."""
    text = getattr(args, "shard", None)
    if text is None:
        return None
    from orchestrator.export.work import Shard

    return Shard.parse(text, "--shard")


def _concurrency(args: argparse.Namespace) -> int | None:
    value = getattr(args, "concurrency", None)
    return None if value is None else parse_concurrency(value, "--concurrency")


def _bwlimit(args: argparse.Namespace) -> int | None:
    """``--bwlimit``: bytes per second, or None for ``off`` (lifts a config's limit)."""
    return parse_bwlimit(args.bwlimit, "--bwlimit")


def _deadline(
    args: argparse.Namespace, config: Config, clock: Clock, required: bool
) -> datetime | None:
    text = getattr(args, "deadline", None)
    name = "--deadline"
    if not text and config.deadline:
        text, name = config.deadline, f"{config.source_file}: deadline"
    if not text:
        if required:
            raise ConfigError(
                "migrate needs a deadline: pass --deadline (e.g. --deadline +30h or "
                "--deadline 2021-01-10T23:59-08:00) or set `deadline:` in the config"
            )
        return None
    now = clock.now()
    at = parse_deadline(text, now, name=name)
    left = at - now
    if left <= config.safety_margin:
        # The cutoff (deadline less margin) has passed already: nothing would start.
        suggestion = format_duration(max(timedelta(seconds=1), left / 10))
        raise ConfigError(
            f"{name} {text!r} is {format_duration(left)} away, no more than the safety margin "
            f"({format_duration(config.safety_margin)}, from --safety-margin or `safety_margin:` "
            f"in the config, default {DEFAULT_SAFETY_MARGIN}): no work would start. Give a "
            f"later deadline or a smaller margin, e.g. --safety-margin {suggestion}"
        )
    return at


def _kinds(text: str | None) -> tuple[str, ...] | None:
    """``--only s3,route53`` -> ("s3", "route53"); checked by the engine."""
    if text is None:
        return None
    return tuple(dict.fromkeys(k.strip() for k in text.split(",") if k.strip()))


def _renderer(args: argparse.Namespace) -> Any:
    if getattr(args, "quiet", False):
        return None
    if sys.stderr.isatty():
        return RichRenderer()
    return PlainRenderer(sys.stderr)


# -- commands --------------------------------------------------------------


def cmd_config_validate(args: argparse.Namespace, clock: Clock) -> int:
    config = load_config(Path(args.file))
    if config.deadline:
        parse_deadline(config.deadline, clock.now(), name=f"{args.file}: deadline")
    names = ", ".join(d.name for d in config.destinations)
    print(f"{args.file}: valid ({len(config.destinations)} destination(s): {names})")
    return 0


def cmd_config_init(args: argparse.Namespace, clock: Clock) -> int:
    path = Path(args.path)
    write_sandbox_config(path)
    print(f"wrote {path}: the built-in sandbox's configuration, commented; edit it, then run")
    print(f"  exitplan migrate --config {path} --deadline +2h")
    return 0


def cmd_inventory(args: argparse.Namespace, clock: Clock) -> int:
    from orchestrator.inventory import collect_inventory, fact_to_json, summarize_inventory
    from orchestrator.run.commands import open_source

    config = _load(args)
    with open_source(config) as account:
        if args.output == "json":
            out = sys.stdout
            out.write("[")
            for index, fact in enumerate(collect_inventory(account)):
                out.write(
                    ("," if index else "") + "\n  " + json.dumps(fact_to_json(fact), sort_keys=True)
                )
            out.write("\n]\n")
            return 0

        def remember(stream: Any) -> Any:
            for fact in stream:
                print(f"{fact.region:<12} {fact.kind:<14} {fact.id}  {_fact_note(fact.attributes)}")
                yield fact

        summary = summarize_inventory(remember(collect_inventory(account)))
        print()
        for kind, numbers in sorted(summary.as_counts().items()):
            extra = f", {_human_bytes(numbers['bytes'])}" if numbers.get("bytes") else ""
            print(f"{kind:<14} {numbers['count']}{extra}")
    return 0


def _fact_note(attributes: dict[str, Any]) -> str:
    keys = (
        "objects",
        "bytes",
        "instance_type",
        "engine",
        "item_count",
        "record_count",
        "type",
        "size_gib",
        "versioning",
    )
    parts = [f"{k}={attributes[k]}" for k in keys if k in attributes]
    return " ".join(parts)


def cmd_migrate(args: argparse.Namespace, clock: Clock) -> int:
    """migrate, export and plan (a dry run of migrate): the settings, then the engine."""
    from orchestrator.run.commands import preview_run, settings_for

    config = _load(args)
    command = "export" if args.command == "export" else "migrate"
    dry_run = bool(getattr(args, "dry_run", False))
    deadline = _deadline(args, config, clock, required=command == "migrate" and not dry_run)
    settings = settings_for(
        command,
        config,
        deadline=deadline,
        kinds=_kinds(getattr(args, "only", None)),
        sandbox_base=Path.cwd(),
        yes=bool(getattr(args, "yes", False)),
        force=bool(getattr(args, "force", False)),
        shard=_shard(args),
    )
    if dry_run:
        from orchestrator.plan.forecast import plan_json, plan_lines
        from orchestrator.run.commands import plan_preview

        previews = preview_run(config, settings, clock)
        plan = plan_preview(config, settings, clock)
        if args.output == "json":
            document = _preview_json(config, settings, previews, clock)
            document["plan"] = plan_json(plan)
            print(json.dumps(document, indent=2))
            return _plan_exit_code(plan)
        print("dry run: nothing will be copied or written")
        source = (
            "built-in sandbox (moto)"
            if config.source.aws.sandbox
            else ", ".join(config.source.aws.regions)
        )
        print(f"source:       {source}")
        for destination in config.destinations:
            print(f"destination:  {destination.name} ({destination.driver})")
        for index, preview in enumerate(previews, start=1):
            print(f"step {index}: {preview.step:<10} {preview.what}")
        if deadline is not None:
            print(
                f"deadline:     {deadline.isoformat()} (in {format_duration(deadline - clock.now())})"
            )
        print()
        for line in plan_lines(plan):
            print(line)
        return _plan_exit_code(plan)
    return _execute(args, clock, config, settings, resume_run_id=None)


def _plan_exit_code(plan: Any) -> int:
    """3 when even the critical tier cannot fit before the cutoff (the plan says why)."""
    from orchestrator.plan.forecast import INFEASIBLE

    return 3 if plan.verdict == INFEASIBLE else 0


def _preview_json(
    config: Config, settings: Any, previews: list[Any], clock: Clock
) -> dict[str, Any]:
    return {
        "dry_run": True,
        "command": settings.command,
        "source": "sandbox" if config.source.aws.sandbox else list(config.source.aws.regions),
        "destinations": [{"name": d.name, "driver": d.driver} for d in config.destinations],
        "deadline": settings.deadline.isoformat() if settings.deadline else None,
        "steps": [{"id": p.step, "title": p.title, "what": p.what} for p in previews],
    }


def _execute(
    args: argparse.Namespace,
    clock: Clock,
    config: Config,
    settings: Any,
    *,
    resume_run_id: str | None,
) -> int:
    from orchestrator.run.cancel import CancelToken
    from orchestrator.run.commands import cancel_on_signals, execute_run

    events = EventBus()
    renderer = _renderer(args)
    if renderer is not None:
        events.subscribe(renderer)
    cancel = CancelToken()

    def say_stopping(reason: Any) -> None:
        print(
            f"\n{reason.value}: finishing the journal; press Ctrl-C again to quit at once",
            file=sys.stderr,
        )

    try:
        with cancel_on_signals(cancel, say_stopping):
            outcome = execute_run(
                config,
                settings,
                events=events,
                clock=clock,
                cancel=cancel,
                resume_run_id=resume_run_id,
            )
    finally:
        if renderer is not None:
            renderer.close()
    if args.output == "json":
        print(json.dumps(outcome.report, indent=2))
    else:
        _print_summary(outcome.report, outcome.report_path)
    return outcome.exit_code


def _print_summary(report: dict[str, Any], path: Path) -> None:
    totals = report["totals"]
    print()
    print(f"run {report['run_id']}: {report['status']} in {report['duration']}")
    for kind in report["kinds"]:
        state = "complete" if kind["complete"] else "INCOMPLETE"
        print(
            f"  {kind['kind']:<10} {kind['saved_items']:>7} of {kind['listed_items']:<7} items "
            f"{_human_bytes(kind['saved_bytes']):>11} saved "
            f"({kind['already_verified_items']} already verified, {kind['failed_items']} failed) {state}"
        )
    print(
        f"  saved {totals['saved_items']} items, {_human_bytes(totals['saved_bytes'])}; copied this run {_human_bytes(totals['copied_bytes'])}"
    )
    for destination in report["destinations"]:
        print(f"  destination {destination['name']}: {destination['where']}")
    chosen = (report.get("placement") or {}).get("chosen")
    if chosen:
        where = (
            "this machine"
            if chosen["transport"] == "local"
            else f"{chosen['address']}:{chosen['port']}"
        )
        print(f"  host: {chosen['candidate']} ({chosen['target']}) at {where}")
    service = report.get("service")
    if service and service.get("url"):
        answering = "answering" if service.get("answering") else "NOT answering"
        print(f"  service: {service['url']} {answering} on {service['host']}")
        for check in service.get("checks", []):
            if check["kind"] == "health":
                continue
            verdict = "equal to" if check["equal"] else "DIFFERENT from"
            served = check["served"] if check["kind"] == "rows" else check["served"][:16] + "..."
            print(f"    {check['name']}: served {served}, {verdict} the source's")
    for step in report["steps"]:
        if step["status"] in ("failed", "cancelled"):
            print(f"  step {step['name']}: {step['status']}: {step['detail']}")
    for step in report.get("dns", []):
        if step["name"] == "flip" and step["status"] == "done":
            print(f"  names: {step['detail']}")
    deadline = report["deadline"]
    if deadline:
        if deadline["met"]:
            verdict = "met"
        elif (deadline.get("margin_left_s") or 0) > 0:
            verdict = "met, but inside the safety margin"
        else:
            verdict = "MISSED"
        print(
            f"  deadline {deadline['at']}: {verdict}, margin left {deadline['margin_left']} "
            f"(safety margin {deadline['safety_margin']})"
        )
    for group in report["data"]:
        reasons = group.get("descoped", [])
        if not reasons:
            continue
        # Reasons carry each item's figures: the largest few say why, report.json has all.
        reasons = sorted(reasons, key=lambda d: -d["bytes"])
        label = group["kind"] + (f" [{group['tier']}]" if group.get("tier") else "")
        items = sum(d["items"] for d in reasons)
        nbytes = sum(d["bytes"] for d in reasons)
        print(f"  descoped {label}: {items} items, {_human_bytes(nbytes)}:")
        for descoped in reasons[:SHOWN_REASONS]:
            print(
                f"    {descoped['items']} items, {_human_bytes(descoped['bytes'])}: "
                f"{descoped['reason']}"
            )
        if len(reasons) > SHOWN_REASONS:
            print(f"    and {len(reasons) - SHOWN_REASONS} more reasons (report.json lists them)")
    for error in report.get("prediction_errors", []):
        ratio = error.get("error_ratio")
        share = f" ({ratio:+.0%} of the predicted duration)" if ratio is not None else ""
        print(
            f"  prediction ({error['scope']}): finish {error['predicted_finish']}, actual "
            f"{error['actual_finish']}: off by {error['error_s']:+.1f}s{share}"
        )
    for failure in report["failed"][:10]:
        print(f"  failed {failure['destination']}:{failure['key']}: {failure['error']}")
    for saved in report.get("unchecked", [])[:10]:
        print(f"  unchecked {saved['destination']}:{saved['key']}: {saved['why']}")
    if report.get("to_roll_back"):
        print(
            f"  {len(report['to_roll_back'])} thing(s) created outside the workspace; `exitplan rollback {report['run_id']}` removes them"
        )
    print(f"  report: {path} (junit.xml and report.html beside it)")
    if report["status"] != "done":
        print("  carry on with: exitplan resume " + report["run_id"])


def cmd_drill(args: argparse.Namespace, clock: Clock) -> int:
    """exitplan drill: the whole path into scratch targets, timed, judged, cleaned up."""
    from orchestrator.run.commands import settings_for
    from orchestrator.run.deadline import parse_duration

    if args.what == "history":
        return cmd_drill_history(args, clock)
    config = _load(args)
    if args.evaluate:
        return _drill_evaluate(args, config, clock)
    notice = parse_duration(args.notice, "--notice")
    if notice.total_seconds() <= 0:
        raise ConfigError("--notice: must be longer than 0, e.g. --notice 30h")
    settings = replace(
        settings_for(
            "drill",
            config,
            deadline=clock.now() + notice,
            kinds=_kinds(getattr(args, "only", None)),
            sandbox_base=Path.cwd(),
        ),
        scenario=args.scenario,
        notice_s=notice.total_seconds(),
    )
    return _execute(args, clock, config, settings, resume_run_id=None)


def _drill_evaluate(args: argparse.Namespace, config: Config, clock: Clock) -> int:
    from orchestrator.drill.evaluate import evaluate_plan

    evaluation = evaluate_plan(config, clock)
    if args.output == "json":
        print(
            json.dumps(
                {"ok": evaluation.ok, "findings": [f.__dict__ for f in evaluation.findings]},
                indent=2,
            )
        )
    else:
        for finding in evaluation.findings:
            mark = "ok  " if finding.ok else "FAIL"
            detail = f": {finding.detail}" if finding.detail else ""
            print(f"{mark} {finding.area:<11} {finding.name}{detail}")
        failed = sum(1 for f in evaluation.findings if not f.ok)
        print(
            f"{len(evaluation.findings)} checks, {failed} failed"
            if failed
            else "the exit plan is workable"
        )
    return 0 if evaluation.ok else 3


def cmd_drill_history(args: argparse.Namespace, clock: Clock) -> int:
    from orchestrator.drill.history import overdue_warning, trend
    from orchestrator.run.commands import existing_journal

    config = _load(args)
    with existing_journal(config) as journal:
        records = journal.drills()
    every = getattr(getattr(config, "drill", None), "every", None)
    summary = trend(records)
    warning = overdue_warning(records, every, clock.now())
    if args.output == "json":
        data = {
            "drills": [
                {
                    "run_id": r.run_id,
                    "scenario": r.scenario,
                    "started_at": r.started_at.isoformat(),
                    "finished_at": r.finished_at.isoformat(),
                    "passed": r.passed,
                    **dict(r.figures),
                }
                for r in records
            ],
            "trend": {
                "drills": summary.drills,
                "rto_s_per_gib": summary.rto_s_per_gib,
                "rto_change_s": summary.rto_change_s,
                "last_passed_at": summary.last_passed_at.isoformat()
                if summary.last_passed_at
                else None,
            },
            "warning": warning,
        }
        print(json.dumps(data, indent=2))
        return 0
    if not records:
        print("no drills yet: run `exitplan drill`")
    for r in records:
        rto = r.figures.get("rto_s")
        rto_text = "service never up" if rto is None else format_duration(timedelta(seconds=rto))
        moved = _human_bytes(float(r.figures.get("bytes_verified") or 0))
        verdict = "passed" if r.passed else "FAILED"
        print(
            f"{r.started_at:%Y-%m-%d %H:%M} {r.run_id}  {r.scenario:<14} RTO {rto_text:>10}  {moved:>10}  {verdict}"
        )
    if summary.rto_s_per_gib is not None:
        print(f"trend: RTO grows {summary.rto_s_per_gib:.1f} s per GiB moved")
    if warning:
        print(f"warning: {warning}")
    return 0


def cmd_resume(args: argparse.Namespace, clock: Clock) -> int:
    from orchestrator.run.commands import (
        SettingOverrides,
        existing_journal,
        recorded_run,
        resumed,
    )

    config = _load(args)
    with existing_journal(config) as journal:
        run = recorded_run(journal, args.run)
    if run.status == "done":
        print(f"run {run.id} is already done; nothing to resume")
        return 0
    overrides = SettingOverrides(
        deadline=parse_deadline(args.deadline, clock.now()) if args.deadline else None,
        concurrency=_concurrency(args),
        bwlimit=_bwlimit(args) if args.bwlimit is not None else None,
        bwlimit_given=args.bwlimit is not None,
        kinds=_kinds(args.only),
        workers=_workers(args),
    )
    run_config, settings = resumed(run, overrides)
    return _execute(args, clock, run_config, settings, resume_run_id=run.id)


def cmd_status(args: argparse.Namespace, clock: Clock) -> int:
    from orchestrator.run.commands import existing_journal, run_status
    from orchestrator.run.serde import to_json

    config = _load(args)
    with existing_journal(config) as journal:
        view = run_status(journal, args.run, clock)
    run = view.run
    data = {
        "run_id": run.id,
        "command": run.command,
        "status": run.status,
        "started_at": run.started_at.isoformat(),
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
        "deadline": run.deadline.isoformat() if run.deadline else None,
        "items": view.items,
        "kinds": [k.__dict__ for k in view.kinds],
        "bytes_per_second": round(view.bytes_per_second, 1),
        "remaining_bytes": view.remaining_bytes,
        "projected_finish": view.projected_finish.isoformat() if view.projected_finish else None,
        "will_make_it": view.will_make_it,
        "margin_kept_seconds": view.margin_kept.total_seconds()
        if view.margin_kept is not None
        else None,
        "undo_pending": view.undo_pending,
        "outlook": view.outlook,
        "descoped": [
            {"kind": k, "tier": t, "reason": r, "items": n, "bytes": b}
            for k, t, r, n, b in view.descoped
        ],
        "steps": [{"name": s.step, "status": s.status, "detail": s.detail} for s in view.steps],
        "settings": to_json(view.settings),
    }
    if args.output == "json":
        print(json.dumps(data, indent=2))
        return 0
    print(
        f"run {run.id} ({run.command}): {run.status}, started {run.started_at:%Y-%m-%d %H:%M:%S %Z}"
    )
    for step in data["steps"]:
        print(f"  step {step['name']:<16} {step['status']:<10} {step['detail']}")
    for k in view.kinds:
        print(
            f"  {k.kind:<10} {k.done_items + k.skipped_items}/{k.listed_items}{'' if k.listing_done else '+'} items, "
            f"{_human_bytes(k.done_bytes + k.skipped_bytes)} of {_human_bytes(k.listed_bytes)}, {k.failed_items} failed"
        )
    print("  items: " + ", ".join(f"{state} {n}" for state, n in view.items.items()))
    if run.deadline:
        if run.finished_at is not None and run.status != "running":
            assert view.margin_kept is not None
            kept = format_duration(view.margin_kept)
            verdict = "before" if view.margin_kept.total_seconds() >= 0 else "AFTER"
            print(
                f"  finished {run.finished_at.isoformat(timespec='seconds')}, {kept} {verdict} "
                f"the deadline {run.deadline.isoformat()}"
            )
        elif view.outlook is not None:
            print(f"  deadline {run.deadline.isoformat()}: {_outlook_text(view.outlook)}")
        elif view.projected_finish is None:
            print(f"  deadline {run.deadline.isoformat()}: no throughput measured yet")
        else:
            verdict = "on track" if view.will_make_it else "WILL MISS"
            print(
                f"  deadline {run.deadline.isoformat()}: projected finish "
                f"{view.projected_finish.isoformat(timespec='seconds')}: {verdict}"
            )
    for kind, tier, reason, items, nbytes in view.descoped:
        print(f"  descoped {kind} [{tier}]: {items} items, {_human_bytes(nbytes)}: {reason}")
    if view.undo_pending:
        print(
            f"  {view.undo_pending} thing(s) created outside the workspace; `exitplan rollback {run.id}` removes them"
        )
    return 0


def _outlook_text(outlook: dict[str, Any]) -> str:
    """The scheduler's outlook as one line: P50/P90 finish, the cutoff, the margin, the verdict."""
    from orchestrator.plan.scheduler import Outlook

    try:
        return Outlook.from_json(outlook).line()
    except (TypeError, ValueError, KeyError):
        return "outlook unreadable (written by another exitplan)"


def cmd_rollback(args: argparse.Namespace, clock: Clock) -> int:
    from orchestrator.run.commands import existing_journal, rollback_run

    config = _load(args)
    with existing_journal(config) as journal:
        run_id, outcomes = rollback_run(journal, args.run, clock)
    if args.output == "json":
        print(json.dumps({"run_id": run_id, "undone": [o.__dict__ for o in outcomes]}, indent=2))
    else:
        if not outcomes:
            print(f"run {run_id}: nothing to undo")
        for outcome in outcomes:
            print(f"{outcome.state:<7} {outcome.description}: {outcome.message}")
    return 1 if any(o.state == "failed" for o in outcomes) else 0


def cmd_replay(args: argparse.Namespace, clock: Clock) -> int:
    """``exitplan replay``: the arguments, then the engine; renders its events."""
    from orchestrator.replay.command import replay_command
    from orchestrator.replay.runner import ReplayOptions
    from orchestrator.run.cancel import CancelToken
    from orchestrator.run.commands import cancel_on_signals

    if args.diff and not args.check:
        raise ConfigError("--diff shows what --check would change: pass --check --diff")
    if args.from_step and args.only:
        raise ConfigError("--from and --only do not go together: pick one")
    config = _load(args)
    approve = None
    if args.yes:
        approve = _approve_all
    elif sys.stdin.isatty():
        approve = _ask
    options = ReplayOptions(
        check=args.check, diff=args.diff, from_step=args.from_step, only=args.only, approve=approve
    )
    events = EventBus()
    renderer = None if args.quiet else PlainRenderer(sys.stdout, every_s=0)
    if renderer is not None:
        events.subscribe(renderer)
    cancel = CancelToken()
    with cancel_on_signals(cancel, lambda reason: None):
        outcome = replay_command(
            config,
            args.run,
            playbook=Path(args.playbook) if args.playbook else None,
            identity=Path(args.identity) if args.identity else None,
            options=options,
            events=events,
            clock=clock,
            cancel=cancel,
        )
    result = outcome.result
    if result is None:
        print(
            f"replay of run {outcome.run_id} stopped: {outcome.interrupted}; run it again to carry on"
        )
        return outcome.exit_code
    changed = result.count("would-change" if args.check else "changed")
    verb = "would change" if args.check else "changed"
    print(f"{result.summary()}")
    print(f"{changed} {verb}, {len(result.failed)} failed")
    if result.service_url and not args.check and result.finished:
        print(f"service: {result.service_url}")
    if not result.finished and not args.check:
        print(
            f"not finished: `exitplan replay {outcome.run_id}` carries on at the first unfinished step"
        )
    return outcome.exit_code


def _approve_all(prompt: str) -> bool:
    return True


def _ask(prompt: str) -> bool:
    answer = input(f"{prompt} [y/N] ")
    return answer.strip().lower() in ("y", "yes")


def cmd_verify(args: argparse.Namespace, clock: Clock) -> int:
    """Re-read every stored object; mark what is missing or changed as damaged in
    the journal (no longer verified), and with ``--repair`` copy exactly those
    again by resuming the newest run. Exit 0 when everything is sound (or was
    repaired), 1 otherwise."""
    from orchestrator.export.manifest import verify_destination
    from orchestrator.run.commands import existing_journal, open_destinations, reopen_for_repair

    config = _load(args)
    damaged = 0
    with existing_journal(config) as journal:
        destinations = open_destinations(config)
        if args.destination:
            destinations = [d for d in destinations if d.name == args.destination]
            if not destinations:
                raise ConfigError(
                    f"--destination {args.destination!r}: no such destination in the config"
                )
        for destination in destinations:
            result = verify_destination(journal, destination.name, destination.store)
            status = "ok" if result.ok else "DAMAGED"
            unchecked = (
                f"; {result.unchecked} stored unchecked (the source had no checksum for them)"
                if result.unchecked
                else ""
            )
            print(
                f"{destination.name}: {status}: {result.checked} objects, {_human_bytes(result.checked_bytes)} re-read; "
                f"{len(result.missing)} missing, {len(result.mismatched)} changed{unchecked}"
            )
            for key in result.missing[:20]:
                print(f"  missing {key}")
            for key in result.mismatched[:20]:
                print(f"  changed {key}")
            damaged += len(result.damaged)
        if damaged:
            reopen_for_repair(journal, damaged)
    if not damaged:
        return 0
    if not args.repair:
        print(
            f"{damaged} object(s) marked damaged in the journal (no longer verified); "
            "`exitplan resume` or `exitplan verify --repair` copies exactly those again"
        )
        return 1
    print(f"{damaged} object(s) marked damaged in the journal; copying them again")
    resume_args = argparse.Namespace(**vars(args))
    resume_args.command = "resume"
    resume_args.run = None
    for name in ("concurrency", "bwlimit", "only"):
        setattr(resume_args, name, None)
    resume_args.output = "text"
    return cmd_resume(resume_args, clock)


def cmd_merge(args: argparse.Namespace, clock: Clock) -> int:
    """Join the manifests of a sharded export (``export --shard K/N`` on each machine)
    into ``manifest/manifest.jsonl`` at every destination. Exit 0 when every
    destination got its manifest, 1 when a shard is missing or two disagree."""
    from orchestrator.export.manifest import MANIFEST_KEY, merge_shard_manifests
    from orchestrator.run.commands import open_destinations

    config = _load(args)
    results = {}
    for destination in open_destinations(config):
        results[destination.name] = merge_shard_manifests(destination.store)
    if args.output == "json":
        print(
            json.dumps(
                {
                    name: {
                        "merged": outcome.ok,
                        "shards": outcome.shards,
                        "of": outcome.count,
                        "items": outcome.rows,
                        "bytes": outcome.size,
                        "problem": outcome.problem,
                    }
                    for name, outcome in results.items()
                },
                indent=2,
            )
        )
    else:
        for name, outcome in results.items():
            if outcome.ok:
                print(
                    f"{name}: {outcome.count} shard manifest(s) merged into {MANIFEST_KEY}: "
                    f"{outcome.rows} item(s), {_human_bytes(outcome.size)}"
                )
            else:
                print(f"{name}: not merged: {outcome.problem}")
    return 0 if all(o.ok for o in results.values()) else 1


def cmd_probe(args: argparse.Namespace, clock: Clock) -> int:
    from orchestrator.placement.probe import format_table
    from orchestrator.placement.steps import probe_now

    config = _load(args)
    if not config.candidates:
        where = args.config or "the sandbox"
        raise ConfigError(
            f"{where}: no candidates to probe; add `candidates:` (ssh-pool hosts or a "
            "libcloud provider) to the config"
        )
    report = probe_now(config, clock, budget_s=args.budget)
    if args.output == "json":
        print(report.to_json())
    else:
        print(format_table(report))
    return 0 if report.fitting else 1


def cmd_secrets_decrypt(args: argparse.Namespace, clock: Clock) -> int:
    from orchestrator.export.exporters.secrets import decrypt_bundle_to_text

    bundle, identity = Path(args.bundle), Path(args.identity)
    for path, what in ((bundle, "bundle"), (identity, "--identity")):
        if not path.is_file():
            raise ConfigError(f"{what}: no file at {path}")
    print(decrypt_bundle_to_text(bundle, identity))
    return 0


def cmd_iam_policy(args: argparse.Namespace, clock: Clock) -> int:
    from orchestrator.export.iam_policy import policy_json, policy_rows

    if args.output == "json":
        sys.stdout.write(policy_json(allow_snapshots=args.allow_snapshots))
        return 0
    for action, access, purpose in policy_rows(allow_snapshots=args.allow_snapshots):
        print(f"{action:<45} {access:<15} {purpose}")
    return 0


# -- the parser ------------------------------------------------------------


#: Descoping reasons printed per kind and tier at the end of a run.
SHOWN_REASONS = 3

_WORKERS_HELP = "copy on a local Dask cluster of N worker processes (pip install 'exitplan[dask]')"


def build_parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument(
        "--config",
        "-c",
        metavar="FILE",
        help="exitplan YAML config (default: the built-in sandbox)",
    )
    common.add_argument("--workspace", metavar="DIR", help="where the journal and reports live")
    common.add_argument("--verbose", "-v", action="store_true", help="log details to stderr")
    common.add_argument("--quiet", "-q", action="store_true", help="no progress output")

    parser = _Parser(prog="exitplan", description="Get a service out of AWS before the deadline.")
    parser.add_argument("--version", action="version", version=f"exitplan {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("inventory", parents=[common], help="list what the source account holds")
    p.add_argument("--output", choices=("text", "json"), default="text")
    p.set_defaults(func=cmd_inventory)

    for name, helptext in (
        ("migrate", "inventory, export and report, racing the deadline"),
        ("export", "export everything to the destinations (deadline optional)"),
    ):
        p = sub.add_parser(name, parents=[common], help=helptext)
        p.add_argument(
            "--deadline", help='e.g. "+30h", "2021-01-10T23:59-08:00", "2021-01-10 23:59 PST"'
        )
        p.add_argument(
            "--dry-run", action="store_true", help="show the plan; copy and write nothing"
        )
        p.add_argument(
            "--concurrency", help="parallel transfers, 1 to 512 (default from config: 16)"
        )
        p.add_argument("--bwlimit", help="cap on bytes read per second, e.g. 50MiB")
        p.add_argument(
            "--safety-margin",
            metavar="DURATION",
            help="time kept spare before the deadline, e.g. 20s, 30m (default from config)",
        )
        p.add_argument("--only", metavar="KINDS", help="only these kinds, e.g. s3,route53")
        p.add_argument(
            "--yes",
            action="store_true",
            help="make the DNS changes (default: plan them and show the plan); the sandbox and drills apply",
        )
        p.add_argument(
            "--force",
            action="store_true",
            help="allow changes past the thresholds (over 30%% of a zone of 10+ records, any NS change)",
        )
        p.add_argument("--workers", metavar="N", help=_WORKERS_HELP)
        if name == "export":
            p.add_argument(
                "--shard",
                metavar="K/N",
                help="export only shard K of N of the items (its own workspace); "
                "then `exitplan merge`",
            )
        p.add_argument("--output", choices=("text", "json"), default="text")
        p.set_defaults(func=cmd_migrate)

    p = sub.add_parser(
        "plan",
        parents=[common],
        help="what a migrate would do and whether it fits the deadline; writes nothing "
        "(exit 3: even the critical tier cannot fit)",
    )
    p.add_argument("--deadline")
    p.add_argument("--concurrency", help="parallel transfers the plan counts on")
    p.add_argument("--bwlimit", help="cap on bytes read per second the plan counts on")
    p.add_argument("--safety-margin", metavar="DURATION", help="e.g. 20s, 30m")
    p.add_argument("--only", metavar="KINDS", help="only these kinds, e.g. s3,route53")
    p.add_argument("--output", choices=("text", "json"), default="text")
    p.set_defaults(func=cmd_migrate, dry_run=True)

    p = sub.add_parser("resume", parents=[common], help="carry on an interrupted run")
    p.add_argument("run", nargs="?", help="run id (default: the newest)")
    p.add_argument("--deadline", help="a new deadline, if the recorded one has passed")
    p.add_argument("--concurrency")
    p.add_argument("--bwlimit")
    p.add_argument("--only", metavar="KINDS", help="only these kinds, e.g. s3,route53")
    p.add_argument("--workers", metavar="N", help=_WORKERS_HELP)
    p.add_argument("--shard", metavar="K/N", help="resume this shard (its own workspace)")
    p.add_argument("--output", choices=("text", "json"), default="text")
    p.set_defaults(func=cmd_resume)

    p = sub.add_parser(
        "merge",
        parents=[common],
        help="join the manifests of a sharded export into one at every destination",
    )
    p.add_argument("--output", choices=("text", "json"), default="text")
    p.set_defaults(func=cmd_merge)

    p = sub.add_parser(
        "rollback", parents=[common], help="remove what a run created outside its workspace"
    )
    p.add_argument("run", nargs="?", help="run id (default: the newest)")
    p.add_argument("--output", choices=("text", "json"), default="text")
    p.set_defaults(func=cmd_rollback)

    p = sub.add_parser(
        "drill",
        parents=[common],
        help="run the exit into scratch targets, measure RTO/RPO, clean up, report",
    )
    p.add_argument("what", nargs="?", choices=("history",), help="history: the drills kept")
    p.add_argument(
        "--scenario",
        default="stressed-exit",
        choices=("stressed-exit",),
        help="stressed-exit: the provider ends the account at short notice",
    )
    p.add_argument("--notice", default="30h", help="notice the scenario gives (default 30h)")
    p.add_argument(
        "--evaluate",
        action="store_true",
        help="check that every part of the plan would work today; moves no data",
    )
    p.add_argument("--only", metavar="KINDS", help="only these kinds, e.g. s3,route53")
    p.add_argument("--concurrency")
    p.add_argument("--bwlimit")
    p.add_argument("--workers", metavar="N", help=_WORKERS_HELP)
    p.add_argument("--output", choices=("text", "json"), default="text")
    p.set_defaults(func=cmd_drill)

    p = sub.add_parser("status", parents=[common], help="progress and projected finish of a run")
    p.add_argument("run", nargs="?", help="run id (default: the newest)")
    p.add_argument("--output", choices=("text", "json"), default="text")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser(
        "replay", parents=[common], help="replay the playbook onto the run's host, from its export"
    )
    p.add_argument("run", nargs="?", help="run id (default: the newest)")
    p.add_argument("--playbook", metavar="FILE", help="default: the config's playbook:")
    p.add_argument("--from", dest="from_step", metavar="ID", help="start at this step")
    p.add_argument("--only", metavar="ID", help="run this step (or handler) alone")
    p.add_argument("--check", action="store_true", help="change nothing; say what would change")
    p.add_argument("--diff", action="store_true", help="with --check: show file diffs (redacted)")
    p.add_argument("--yes", action="store_true", help="approve every pause step in advance")
    p.add_argument("--identity", metavar="FILE", help="age identity for the secrets bundle")
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser(
        "verify",
        parents=[common],
        help="re-read every saved object, check its sha256, mark what is damaged",
    )
    p.add_argument("--destination", help="only this destination")
    p.add_argument(
        "--repair",
        action="store_true",
        help="copy the damaged objects again (resumes the newest run)",
    )
    p.add_argument("--deadline", help="deadline of the repair, if the recorded one has passed")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("probe", parents=[common], help="check and rank the candidate hosts")
    p.add_argument("--output", choices=("text", "json"), default="text")
    p.add_argument(
        "--budget", type=float, default=120.0, help="seconds the whole probe may take (default 120)"
    )
    p.set_defaults(func=cmd_probe)

    p = sub.add_parser("iam-policy", help="print the read-only IAM policy the export needs (JSON)")
    p.add_argument(
        "--output",
        choices=("json", "text"),
        default="json",
        help="json: the policy document (default); text: each action and what it is for",
    )
    p.add_argument(
        "--allow-snapshots",
        action="store_true",
        help="also allow the export's only writes: EBS and RDS snapshots of what has none",
    )
    p.set_defaults(func=cmd_iam_policy)

    p = sub.add_parser("secrets", help="work with exported secrets bundles")
    secrets_sub = p.add_subparsers(dest="secrets_command", required=True, parser_class=_Parser)
    d = secrets_sub.add_parser("decrypt", help="print an age-encrypted secrets bundle as JSON")
    d.add_argument("bundle", help="a secrets/<region>/bundle.json.age file from a destination")
    d.add_argument("--identity", required=True, help="age identity file (AGE-SECRET-KEY-...)")
    d.set_defaults(func=cmd_secrets_decrypt)

    p = sub.add_parser("config", help="work with config files")
    config_sub = p.add_subparsers(dest="config_command", required=True, parser_class=_Parser)
    v = config_sub.add_parser("validate", help="check a config file; exit 2 with the line if not")
    v.add_argument("file")
    v.set_defaults(func=cmd_config_validate)
    i = config_sub.add_parser(
        "init", help="write the sandbox's configuration as a commented YAML file to start from"
    )
    i.add_argument("path", nargs="?", default="exitplan.yaml")
    i.set_defaults(func=cmd_config_init)
    return parser


class _ConsoleFormatter(logging.Formatter):
    """Log lines for the console: the message without a traceback. The run's
    log file (``runs/<run>/exitplan.log``) keeps them; ``-v`` shows them here."""

    def __init__(self, verbose: bool) -> None:
        super().__init__("%(levelname)s %(name)s: %(message)s")
        self.verbose = verbose

    def format(self, record: logging.LogRecord) -> str:
        if self.verbose or not (record.exc_info or record.exc_text):
            return super().format(record)
        plain = logging.makeLogRecord(record.__dict__)
        plain.exc_info, plain.exc_text = None, None
        return super().format(plain) + " (details in the run's exitplan.log, or rerun with -v)"


def _log_to_console(verbose: bool) -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler.formatter, _ConsoleFormatter):
            root.removeHandler(handler)  # main() called again in one process
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(_ConsoleFormatter(verbose))
    root.addHandler(console)
    root.setLevel(logging.INFO if verbose else logging.WARNING)


def _what_the_journal_holds(args: argparse.Namespace | None, started: datetime) -> str:
    """After an internal error: what a resume can carry on, read from the journal,
    never assumed. Empty when this command keeps no journal."""
    if args is None or getattr(args, "command", None) not in ("migrate", "export", "resume"):
        return ""
    try:
        config = _load(args)
        path = Path(config.workspace) / "journal.sqlite"
        if not path.exists():
            return (
                "nothing was written to the journal; run the command again once the cause is fixed"
            )
        from orchestrator.run.journal import Journal

        with Journal(path) as journal:
            run = journal.get_run(getattr(args, "run", None))
            counts = journal.item_counts(run.id) if run is not None else {}
    except Exception:  # the journal itself may be what failed
        return "the journal could not be read back; `exitplan status` says what it holds"
    if run is None or (args.command != "resume" and run.started_at < started):
        return "no run was recorded in the journal; run the command again once the cause is fixed"
    return (
        f"run {run.id} is in the journal ({counts.get('verified', 0)} items verified, "
        f"{counts.get('in-flight', 0)} in flight); `exitplan resume` carries it on"
    )


def main(argv: Sequence[str] | None = None, clock: Clock | None = None) -> int:
    clock = clock or SystemClock()
    started = clock.now()
    args: argparse.Namespace | None = None
    try:
        args = build_parser().parse_args(argv)
        _log_to_console(bool(getattr(args, "verbose", False)))
        code = int(args.func(args, clock))
    except ExitplanError as exc:
        print(f"exitplan: error: {exc}", file=sys.stderr)
        code = exc.exit_code
    except KeyboardInterrupt:
        print("exitplan: interrupted", file=sys.stderr)
        code = 130
    except BrokenPipeError:
        # The reader went away (`exitplan inventory | head`): nothing to say.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 141
    except (
        botocore.exceptions.EndpointConnectionError,
        botocore.exceptions.ConnectTimeoutError,
    ) as exc:
        # Expected: the source is down or the endpoint is wrong. No traceback.
        print(
            f"exitplan: error: cannot reach the source: {exc}; check source.aws.endpoint_url "
            "(or the network) and run the command again",
            file=sys.stderr,
        )
        held = _what_the_journal_holds(args, started)
        if held:
            print(held, file=sys.stderr)
        code = 1
    except Exception as exc:  # a bug: say so plainly, and only what is true
        if getattr(args, "verbose", False):
            traceback.print_exc()
        print(f"exitplan: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        held = _what_the_journal_holds(args, started)
        if held:
            print(held, file=sys.stderr)
        if not getattr(args, "verbose", False):
            print("Rerun with -v for the traceback.", file=sys.stderr)
        code = 1
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
