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
import signal
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

import botocore.exceptions

from orchestrator import __version__
from orchestrator.clock import Clock, SystemClock
from orchestrator.config import Config, default_sandbox_config, load_config, parse_size
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
from orchestrator.export.transfer import CancelToken
from orchestrator.run.deadline import format_duration, parse_deadline

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


def _projection_text(event: Projection) -> str:
    rate = f"{_human_bytes(event.bytes_per_second)}/s"
    left = _human_bytes(event.remaining_bytes)
    if event.projected_finish is None:
        return f"progress: {left} left at {rate}; no finish estimate yet"
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
        elif isinstance(event, Projection):
            self.progress.update(
                self._outlook, visible=True, description="outlook", note=_projection_text(event)
            )

    def close(self) -> None:
        self.progress.stop()


# -- config and arguments --------------------------------------------------


def _load(args: argparse.Namespace) -> Config:
    config = load_config(Path(args.config)) if args.config else default_sandbox_config(Path.cwd())
    overrides: dict[str, Any] = {}
    if getattr(args, "workspace", None):
        overrides["workspace"] = Path(args.workspace).resolve()
    transfer = config.transfer
    if getattr(args, "concurrency", None):
        if not 1 <= args.concurrency <= 512:
            raise ConfigError("--concurrency: must be between 1 and 512")
        transfer = replace(transfer, concurrency=args.concurrency)
    if getattr(args, "bwlimit", None):
        transfer = replace(transfer, bwlimit=parse_size(args.bwlimit, "--bwlimit"))
    overrides["transfer"] = transfer
    return replace(config, **overrides)


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
    return parse_deadline(text, clock.now(), name=name)


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


def _run_migration(args: argparse.Namespace, clock: Clock, resume_run: str | None) -> int:
    from orchestrator.export.exporters.base import exporter_kinds
    from orchestrator.run.commands import (
        MigrationRequest,
        plan_summary,
        prioritizer_for,
        run_migration,
    )

    config = _load(args)
    deadline = _deadline(args, config, clock, required=args.command == "migrate" and not resume_run)
    if getattr(args, "dry_run", False):
        prioritizer = prioritizer_for(config)
        print("dry run: nothing will be copied or written")
        print(
            f"source:       {'built-in sandbox (moto)' if config.source.aws.sandbox else ', '.join(config.source.aws.regions)}"
        )
        for destination in config.destinations:
            print(f"destination:  {destination.name} ({destination.driver})")
        for entry in plan_summary(prioritizer, list(_kinds(args.only) or exporter_kinds())):
            print(f"export {entry['order']}:     {entry['kind']}")
        if deadline is not None:
            print(
                f"deadline:     {deadline.isoformat()} (in {format_duration(deadline - clock.now())})"
            )
        return 0
    if config.source.aws.sandbox:
        config = _with_sandbox_recipient(config)
    kinds = _kinds(getattr(args, "only", None))
    whole_path = args.command != "export"
    invocation = {
        "command": "migrate" if whole_path else "export",
        "kinds": list(kinds) if kinds else None,
        "config": str(Path(args.config).resolve()) if args.config else None,
        "deadline": deadline.isoformat() if deadline else None,
        "workspace": str(config.workspace),
        "concurrency": config.transfer.concurrency,
        "bwlimit": config.transfer.bwlimit,
    }
    events = EventBus()
    renderer = _renderer(args)
    if renderer is not None:
        events.subscribe(renderer)
    cancel = CancelToken()
    previous = _install_interrupt(cancel)
    try:
        result = run_migration(
            MigrationRequest(
                config,
                deadline,
                resume_run_id=resume_run,
                invocation=invocation,
                kinds=kinds,
                whole_path=whole_path,
            ),
            events=events,
            clock=clock,
            cancel=cancel,
        )
    finally:
        signal.signal(signal.SIGINT, previous)
        if renderer is not None:
            renderer.close()
    if args.output == "json":
        print(json.dumps(result.report, indent=2))
    else:
        _print_summary(result.report, result.report_path)
    return result.exit_code


SANDBOX_IDENTITY = "sandbox-identity.age"


def _with_sandbox_recipient(config: Config) -> Config:
    """The sandbox encrypts its secrets to a key of its own, kept in the workspace.

    So a new user sees secrets exported the only way exitplan exports them,
    encrypted, and can read them back with `exitplan secrets decrypt`.
    """
    from orchestrator.age import generate_identity, load_identity

    path = Path(config.workspace) / SANDBOX_IDENTITY
    if path.exists():
        recipient = load_identity(path).recipients[0]
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        recipient = generate_identity(path)
    destinations = tuple(
        replace(d, recipients=d.recipients or (recipient,)) for d in config.destinations
    )
    return replace(config, destinations=destinations)


def _kinds(text: str | None) -> tuple[str, ...] | None:
    """``--only s3,route53`` -> ("s3", "route53"), checked against the exporters."""
    from orchestrator.export.exporters.base import exporter_kinds

    if not text:
        return None
    kinds = tuple(dict.fromkeys(k.strip() for k in text.split(",") if k.strip()))
    unknown = [k for k in kinds if k not in exporter_kinds()]
    if unknown or not kinds:
        raise ConfigError(
            f"--only {text!r}: unknown kind(s) {', '.join(unknown) or '(none given)'}; "
            f"choose from {', '.join(exporter_kinds())}"
        )
    return kinds


def _install_interrupt(cancel: CancelToken) -> Any:
    def on_interrupt(signum: int, frame: FrameType | None) -> None:
        if cancel.is_set():
            raise KeyboardInterrupt
        print("\ninterrupted: finishing the journal; Ctrl-C again to quit at once", file=sys.stderr)
        cancel.cancel("interrupted (Ctrl-C)")

    return signal.signal(signal.SIGINT, on_interrupt)


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
    deadline = report["deadline"]
    if deadline.get("deadline"):
        verdict = "met" if deadline["met"] else "MISSED"
        print(
            f"  deadline {deadline['deadline']}: {verdict}, margin left {deadline['margin_left']} (safety margin {deadline['safety_margin']})"
        )
    for failure in report["failed"][:10]:
        print(f"  failed {failure['destination']}:{failure['key']}: {failure['error']}")
    for saved in report.get("unchecked", [])[:10]:
        print(f"  unchecked {saved['destination']}:{saved['key']}: {saved['why']}")
    print(f"  report: {path}")
    if report["status"] not in ("done",):
        print("  carry on with: exitplan resume " + report["run_id"])


def cmd_migrate(args: argparse.Namespace, clock: Clock) -> int:
    return _run_migration(args, clock, resume_run=None)


def cmd_resume(args: argparse.Namespace, clock: Clock) -> int:
    config = _load(args)
    journal = _existing_journal(config)
    with journal:
        run = journal.get_run(args.run)
    if run is None:
        raise ConfigError(
            f"no run {args.run!r} in {journal.path}"
            if args.run
            else f"no runs in {journal.path} to resume"
        )
    if run.status == "done":
        print(f"run {run.id} is already done; nothing to resume")
        return 0
    if run.invocation.get("config") and not args.config:
        args.config = run.invocation["config"]
    if not getattr(args, "deadline", None) and run.deadline is not None:
        args.deadline = run.deadline.isoformat()
    if not getattr(args, "concurrency", None):
        args.concurrency = run.invocation.get("concurrency")
    if run.invocation.get("command") == "export":
        args.command = "export"
    if not getattr(args, "only", None) and run.invocation.get("kinds"):
        args.only = ",".join(run.invocation["kinds"])
    return _run_migration(args, clock, resume_run=run.id)


def _existing_journal(config: Config) -> Any:
    from orchestrator.run.journal import Journal

    path = Path(config.workspace) / "journal.sqlite"
    if not path.exists():
        raise ConfigError(
            f"no journal at {path}: run `exitplan migrate` first, or pass --workspace"
        )
    return Journal(path)


def cmd_status(args: argparse.Namespace, clock: Clock) -> int:
    from orchestrator.run.progress import forecast

    config = _load(args)
    with _existing_journal(config) as journal:
        run = journal.get_run(args.run)
        if run is None:
            raise ConfigError(f"no run {args.run!r} in {journal.path}")
        kinds = journal.progress(run.id)
        counts = journal.item_counts(run.id)
        end = run.finished_at or clock.now()
        elapsed = (end - run.started_at).total_seconds()
        outlook = forecast(
            remaining_bytes=sum(k.remaining_bytes for k in kinds),
            copied_bytes=sum(k.copied_bytes for k in kinds),
            elapsed_s=elapsed,
            now=clock.now(),
            deadline=run.deadline,
            safety_margin=config.safety_margin,
        )
        data = {
            "run_id": run.id,
            "status": run.status,
            "started_at": run.started_at.isoformat(),
            "finished_at": run.finished_at.isoformat() if run.finished_at else None,
            "deadline": run.deadline.isoformat() if run.deadline else None,
            "items": counts,
            "kinds": [k.__dict__ for k in kinds],
            "bytes_per_second": round(outlook.bytes_per_second, 1),
            "remaining_bytes": outlook.remaining_bytes,
            "projected_finish": outlook.projected_finish.isoformat()
            if outlook.projected_finish
            else None,
            "will_make_it": outlook.will_make_it,
            "steps": [
                {"name": n, "status": s, "detail": d} for n, s, _, _, d in journal.steps(run.id)
            ],
        }
    if args.output == "json":
        print(json.dumps(data, indent=2))
        return 0
    print(
        f"run {run.id} ({run.command}): {run.status}, started {run.started_at:%Y-%m-%d %H:%M:%S %Z}"
    )
    for step in data["steps"]:
        print(f"  step {step['name']:<16} {step['status']:<10} {step['detail']}")
    for k in kinds:
        print(
            f"  {k.kind:<10} {k.done_items + k.skipped_items}/{k.listed_items}{'' if k.listing_done else '+'} items, "
            f"{_human_bytes(k.done_bytes + k.skipped_bytes)} of {_human_bytes(k.listed_bytes)}, {k.failed_items} failed"
        )
    print("  items: " + ", ".join(f"{state} {n}" for state, n in counts.items()))
    if run.deadline:
        if outlook.projected_finish is None:
            print(f"  deadline {run.deadline.isoformat()}: no throughput measured yet")
        else:
            verdict = "on track" if outlook.will_make_it else "WILL MISS"
            print(
                f"  deadline {run.deadline.isoformat()}: projected finish "
                f"{outlook.projected_finish.isoformat(timespec='seconds')} — {verdict}"
            )
    return 0


def cmd_verify(args: argparse.Namespace, clock: Clock) -> int:
    """Re-read every stored object; mark what is missing or changed as damaged in
    the journal (no longer verified), and with ``--repair`` copy exactly those
    again by resuming the newest run. Exit 0 when everything is sound (or was
    repaired), 1 otherwise."""
    from orchestrator.export.manifest import verify_destination
    from orchestrator.run.commands import open_destinations

    config = _load(args)
    damaged = 0
    with _existing_journal(config) as journal:
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
        newest = journal.get_run()
        if damaged and newest is not None and newest.status == "done":
            # Its outcome no longer holds; `resume` carries it on.
            journal.finish_run(newest.id, "failed")
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


def cmd_probe(args: argparse.Namespace, clock: Clock) -> int:
    from orchestrator.placement.probe import (
        compute_providers_from_config,
        format_table,
        probe_candidates,
    )
    from orchestrator.run.commands import (
        PROBE_BUDGET_S,
        open_source,
        service_requirements,
        take_inventory,
    )

    config = _load(args)
    if not config.candidates:
        where = args.config or "the sandbox"
        raise ConfigError(
            f"{where}: no candidates to probe; add `candidates:` (ssh-pool hosts or a "
            "libcloud provider) to the config"
        )
    providers = compute_providers_from_config(config.candidates)
    with open_source(config) as account, tempfile.TemporaryDirectory() as scratch:
        inventory = take_inventory(account, Path(scratch) / "inventory.jsonl")
    requirements = service_requirements(inventory)
    report = probe_candidates(
        list(providers.values()), requirements, budget_s=args.budget or PROBE_BUDGET_S, clock=clock
    )
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


# -- the parser ------------------------------------------------------------


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
            "--concurrency", type=int, help="parallel transfers (default from config: 16)"
        )
        p.add_argument("--bwlimit", help="cap on bytes read per second, e.g. 50MiB")
        p.add_argument("--only", metavar="KINDS", help="only these kinds, e.g. s3,route53")
        p.add_argument("--output", choices=("text", "json"), default="text")
        p.set_defaults(func=cmd_migrate)

    p = sub.add_parser("plan", parents=[common], help="what would be saved, in which order")
    p.add_argument("--deadline")
    p.add_argument("--output", choices=("text", "json"), default="text")
    p.set_defaults(func=cmd_migrate, dry_run=True, concurrency=None, bwlimit=None, only=None)

    p = sub.add_parser("resume", parents=[common], help="carry on an interrupted run")
    p.add_argument("run", nargs="?", help="run id (default: the newest)")
    p.add_argument("--deadline", help="a new deadline, if the recorded one has passed")
    p.add_argument("--concurrency", type=int)
    p.add_argument("--bwlimit")
    p.add_argument("--only", metavar="KINDS", help="only these kinds, e.g. s3,route53")
    p.add_argument("--output", choices=("text", "json"), default="text")
    p.set_defaults(func=cmd_resume)

    p = sub.add_parser("status", parents=[common], help="progress and projected finish of a run")
    p.add_argument("run", nargs="?", help="run id (default: the newest)")
    p.add_argument("--output", choices=("text", "json"), default="text")
    p.set_defaults(func=cmd_status)

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
    p.add_argument("--budget", type=float, help="seconds the whole probe may take (default 120)")
    p.set_defaults(func=cmd_probe)

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
