"""One export run for tests: a journal, local destinations, the real engine, the events seen."""

from __future__ import annotations

from pathlib import Path

from orchestrator.clock import SystemClock
from orchestrator.events import EventBus, ItemFinished
from orchestrator.export.exporters.base import Exporter
from orchestrator.export.transfer import Destination, TransferEngine, TransferSettings
from orchestrator.run.cancel import CancelToken
from orchestrator.run.journal import Journal
from orchestrator.run.progress import RunProgress
from providers.storage import LocalObjectStore


class ExportHarness:
    """Destinations named ``names`` are directories under ``tmp`` (libcloud's LOCAL driver)."""

    def __init__(self, tmp: Path, names: tuple[str, ...] = ("vault",)) -> None:
        self.tmp = tmp
        self.journal = Journal(tmp / "journal.sqlite")
        self.run_id = self.journal.start_run("migrate", None, {})
        self.events = EventBus()
        self.seen: list[ItemFinished] = []
        self.events.subscribe(
            lambda e: self.seen.append(e) if isinstance(e, ItemFinished) else None
        )
        self.progress = RunProgress(
            run_id=self.run_id,
            journal=self.journal,
            events=self.events,
            clock=SystemClock(),
            deadline=None,
        )
        self.destinations = [Destination(n, LocalObjectStore(n, tmp / n)) for n in names]
        self.cancel = CancelToken()

    def engine(self, concurrency: int = 8) -> TransferEngine:
        return TransferEngine(
            destinations=self.destinations,
            journal=self.journal,
            run_id=self.run_id,
            events=self.events,
            progress=self.progress,
            settings=TransferSettings(concurrency=concurrency, max_backoff_s=0.01),
            cancel=self.cancel,
        )

    def export(self, exporter: Exporter, concurrency: int = 4) -> None:
        """Run ``exporter`` to the end and make the journal durable."""
        engine = self.engine(concurrency)
        try:
            engine.export(exporter)
        finally:
            engine.close()
        self.journal.flush()

    def statuses(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for event in self.seen:
            counts[event.status] = counts.get(event.status, 0) + 1
        return counts
