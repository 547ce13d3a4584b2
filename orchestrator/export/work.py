"""Where the copy coordinator gets its work: the seam between the transfer engine and the planner.

The coordinator (``orchestrator.export.transfer``) starts items, gets their
outcomes back from workers and is the only one to write the journal. It
asks a ``WorkSource`` which item to start next; the source decides the
order (tier, then least laxity), admission (never start an item that cannot
finish before the cutoff) and descoping (with a reason the journal keeps),
and learns from every outcome (the rates its forecast is fitted on).

``KindByKind`` is the plain source: every exporter's items in the order the
exporters come, everything admitted. The planner's scheduler is the other.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from orchestrator.export.exporters.base import Exporter, ExportItem


class Wait(enum.Enum):
    """Nothing to start right now, but there may be later (rates may recover)."""

    WAIT = "wait"


@dataclass(frozen=True)
class Outcome:
    """How an item ended, as the coordinator saw it; what a forecast is fitted on."""

    item: ExportItem
    status: str  # verified | skipped (already verified) | failed | unchecked | cancelled
    bytes_read: int
    seconds: float
    #: Requests made to the source for it (GETs, blocks, pages), where the worker counted.
    requests: int = 1


@dataclass(frozen=True)
class Descoped:
    """An item the source will not start, and why (kept in the journal, shown everywhere)."""

    item: ExportItem
    reason: str


class WorkSource(Protocol):
    """Items to copy, in the order to start them. Called from the coordinator's thread only."""

    def exporter(self, kind: str) -> Exporter:
        """The exporter that opens items of ``kind``."""
        ...

    def next_item(self, now: datetime) -> ExportItem | Wait | None:
        """The next item to start; ``Wait.WAIT`` when none may start yet; None when done."""
        ...

    def take_descoped(self) -> Sequence[Descoped]:
        """Items descoped since the last call (the coordinator journals them)."""
        ...

    def settled(self, outcome: Outcome) -> None:
        """An item ended; rates and plans may change."""
        ...


class KindByKind:
    """Each exporter's items in turn, all admitted: the engine without a planner."""

    def __init__(self, exporters: Sequence[Exporter]) -> None:
        self._exporters = {e.kind: e for e in exporters}
        self._listings: Iterator[ExportItem] = (
            item for exporter in exporters for item in exporter.list_items()
        )

    def exporter(self, kind: str) -> Exporter:
        return self._exporters[kind]

    def next_item(self, now: datetime) -> ExportItem | Wait | None:
        return next(self._listings, None)

    def take_descoped(self) -> Sequence[Descoped]:
        return ()

    def settled(self, outcome: Outcome) -> None:
        pass
