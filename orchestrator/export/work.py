"""Where the copy coordinator gets its work: the seam between the transfer engine and the planner.

The coordinator (``orchestrator.export.transfer``) starts items, gets their
outcomes back from workers and is the only one to write the journal. It
asks a ``WorkSource`` which item to start next; the source decides the
order (tier, then least laxity), admission (never start an item that cannot
finish before the cutoff) and descoping (with a reason the journal keeps),
and learns from every outcome (the rates its forecast is fitted on).

``KindByKind`` is the plain source: every exporter's items in the order the
exporters come, everything admitted. The planner's scheduler is the other.

A kind whose listing fails must not stop the others: a source reads each
exporter's listing through a ``Listing`` (or does the same itself), which
ends it with the error kept, and hands the ends out through
``take_listing_ends``; the coordinator records a failed kind with its
reason and goes on, and marks a finished one as fully listed.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from orchestrator.export.exporters.base import (
    Exporter,
    ExportItem,
    RangedSource,
    SourceStream,
)


class Wait(enum.Enum):
    """Nothing to start right now, but there may be later (rates may recover)."""

    WAIT = "wait"


@dataclass(frozen=True)
class Outcome:
    """How an item ended, as the coordinator saw it; what a forecast is fitted on."""

    item: ExportItem
    status: str  # verified | skipped (already verified) | failed | unchecked
    bytes_read: int
    seconds: float
    #: Requests made to the source for it (GETs, blocks, pages), where the worker counted.
    requests: int = 1


@dataclass(frozen=True)
class Descoped:
    """An item the source will not start, and why (kept in the journal, shown everywhere)."""

    item: ExportItem
    reason: str


@dataclass(frozen=True)
class ListingEnd:
    """A kind's listing ended: every item handed out, or cut short by ``error``."""

    kind: str
    error: BaseException | None = None


class Listing:
    """One exporter's items, read lazily; a failing listing ends with its error kept.

    ``next()`` is the next item or None once the listing ended; ``end`` then
    says how (never raised: the source goes on with the next kind).
    """

    def __init__(self, exporter: Exporter) -> None:
        self.exporter = exporter
        self._items: Iterator[ExportItem] | None = None
        self.end: ListingEnd | None = None

    def next(self) -> ExportItem | None:
        if self.end is not None:
            return None
        try:
            if self._items is None:
                self._items = iter(self.exporter.list_items())
            return next(self._items)
        except StopIteration:
            self.end = ListingEnd(self.exporter.kind)
        except Exception as exc:
            self.end = ListingEnd(self.exporter.kind, exc)
        return None


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

    def take_listing_ends(self) -> Sequence[ListingEnd]:
        """Kinds whose listing ended since the last call, failed ones with their error."""
        ...


class KindByKind:
    """Each exporter's items in turn, all admitted: the engine without a planner."""

    def __init__(self, exporters: Sequence[Exporter]) -> None:
        self._exporters = {e.kind: e for e in exporters}
        self._listings = [Listing(e) for e in exporters]
        self._ends: list[ListingEnd] = []

    def exporter(self, kind: str) -> Exporter:
        return self._exporters[kind]

    def next_item(self, now: datetime) -> ExportItem | Wait | None:
        while self._listings:
            listing = self._listings[0]
            item = listing.next()
            if item is not None:
                return item
            assert listing.end is not None
            self._ends.append(listing.end)
            self._listings.pop(0)
        return None

    def take_descoped(self) -> Sequence[Descoped]:
        return ()

    def settled(self, outcome: Outcome) -> None:
        pass

    def take_listing_ends(self) -> Sequence[ListingEnd]:
        ends, self._ends = self._ends, []
        return ends


# -- sharding: one export split over machines without a scheduler ---------------------


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (1-based): the items whose key hashes to it.

    An item goes by the key of the item it depends on, so a DynamoDB table's
    meta lands in the same shard as its data. The hash is sha256, so every
    machine splits the same listing the same way.
    """

    index: int
    count: int

    @classmethod
    def parse(cls, text: str, field: str = "--shard") -> Shard:
        """``"2/4"`` -> Shard(2, 4); ``ConfigError`` naming ``field`` otherwise."""
        from orchestrator.errors import ConfigError

        left, sep, right = text.strip().partition("/")
        if not sep or not left.strip().isdigit() or not right.strip().isdigit():
            raise ConfigError(f"{field}: {text!r} is not a shard; write K/N, e.g. 1/4")
        shard = cls(int(left), int(right))
        if not 1 <= shard.index <= shard.count:
            raise ConfigError(f"{field}: {text!r}: in K/N, K must be from 1 to N, e.g. 1/4")
        return shard

    @property
    def label(self) -> str:
        return f"{self.index}-of-{self.count}"

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def holds(self, item: ExportItem) -> bool:
        key = (item.depends_on or item.dest_key).encode()
        return int.from_bytes(hashlib.sha256(key).digest()[:8], "big") % self.count == (
            self.index - 1
        )


class ShardOf(Exporter):
    """An exporter listing only the items of one shard; everything else is the inner one's."""

    def __init__(self, inner: Exporter, shard: Shard) -> None:
        super().__init__(inner.account, tier_of=inner.tier_of, context=inner.context)
        self.inner = inner
        self.shard = shard
        self.kind = inner.kind  # type: ignore[misc]
        self.portable = inner.portable  # type: ignore[misc]

    def list_items(self) -> Iterator[ExportItem]:
        return (item for item in self.inner.list_items() if self.shard.holds(item))

    def open(self, item: ExportItem) -> SourceStream:
        return self.inner.open(item)

    def open_ranged(self, item: ExportItem) -> RangedSource | None:
        return self.inner.open_ranged(item)

    def item_settled(self, item: ExportItem, status: str) -> None:
        self.inner.item_settled(item, status)

    def recall(self, item: ExportItem, record: Mapping[str, Any]) -> None:
        self.inner.recall(item, record)

    def warnings(self) -> list[str]:
        return self.inner.warnings()

    def describe(self) -> str:
        return f"{self.inner.describe()} (shard {self.shard})"

    def __getattr__(self, name: str) -> Any:
        # Whatever else a work source asks of an exporter (an estimate, say).
        if name == "inner" or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.inner, name)
