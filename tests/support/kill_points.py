"""One exporter's export in a process of its own, killed with SIGKILL at a named point.

    python -m tests.support.kill_points --endpoint URL --work DIR --kind dynamodb \\
        [--kill-after-verified DEST_KEY]

The journal (``DIR/journal.sqlite``) and the run id (``DIR/run_id``) carry
over from one process to the next, as they do for ``exitplan resume``; the
destination is ``DIR/vault``. With ``--kill-after-verified``, the process
makes the journal durable the moment that item is verified (as a batch commit
would have) and kills itself before anything else happens.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from orchestrator.clock import SystemClock
from orchestrator.events import Event, EventBus, ItemFinished
from orchestrator.export.exporters.base import ExportContext, load_exporter
from orchestrator.export.transfer import Destination, TransferEngine, TransferSettings
from orchestrator.plan.priorities import Prioritizer
from orchestrator.run.journal import Journal
from orchestrator.run.progress import RunProgress
from providers.aws import AwsAccount
from providers.storage import LocalObjectStore


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--kind", required=True)
    parser.add_argument("--kill-after-verified", metavar="DEST_KEY")
    args = parser.parse_args(argv)

    journal = Journal(args.work / "journal.sqlite")
    run_file = args.work / "run_id"
    if run_file.exists():
        run_id = run_file.read_text().strip()
        journal.reopen_run(run_id)
    else:
        run_id = journal.start_run("export", None, {})
        run_file.write_text(run_id)
    events = EventBus()

    def kill_at_the_point(event: Event) -> None:
        if (
            isinstance(event, ItemFinished)
            and event.status == "verified"
            and event.key == args.kill_after_verified
        ):
            journal.flush()
            os.kill(os.getpid(), signal.SIGKILL)

    events.subscribe(kill_at_the_point)
    engine = TransferEngine(
        destinations=[Destination("vault", LocalObjectStore("vault", args.work / "vault"))],
        journal=journal,
        run_id=run_id,
        events=events,
        progress=RunProgress(
            run_id=run_id, journal=journal, events=events, clock=SystemClock(), deadline=None
        ),
        settings=TransferSettings(concurrency=4, max_attempts=2, max_backoff_s=0.01),
    )
    account = AwsAccount(regions=["us-east-1"], endpoint_url=args.endpoint)
    exporter = load_exporter(args.kind)(
        account, tier_of=Prioritizer([]), context=ExportContext(run_id=run_id)
    )
    try:
        engine.export(exporter)
    finally:
        engine.close()
    counts = journal.item_counts(run_id)
    journal.finish_run(run_id, "failed" if counts["failed"] or counts["in-flight"] else "done")
    journal.close()
    return 1 if counts["failed"] or counts["in-flight"] else 0


if __name__ == "__main__":
    sys.exit(main())
