"""The deadline scheduler: a ``WorkSource`` that saves what matters first and knows
early what will not fit.

Order: items of every kind are merged by tier (the ``priorities:`` rank),
then, within the critical tier, smallest first (many small critical items
are saved before one bulky one can hold them up), and within other tiers
least laxity first (with one cutoff for all, the item with the least slack
is the largest: it starts while there is room for it).

Admission: an item is started only if the whole admitted workload, with it,
drains by the cutoff at P90: the cost of what is in flight, of the
higher tiers not yet listed (reserved from the plan, so bulk work never
eats the critical tier's time however late its items are listed) and of
the item itself. Items of the critical tier are started whenever their own
P50 finish is before the hard deadline: they are never descoped.

Re-planning: every ``replan_every_s`` on the run's clock the egress is
measured (bytes that flowed since the last re-plan), the cost model is
updated from finished items, and the projection is re-made. When its P90
finish slips past the cutoff, the least important pending work is held
back (descoped, with the numbers) until it fits again: small edits, never
a new plan; when rates recover, held work is re-admitted, most important
first. At the cutoff nothing new starts and everything not started is
descoped for good. The hard stop at the deadline is the watchdog's.

Every item not started is journaled ``descoped`` with its reason (through
``take_descoped``); the latest outlook (P50/P90, margin, verdict) is kept in
the journal for ``exitplan status`` and read by the progress display.
"""

from __future__ import annotations

import heapq
import itertools
import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from orchestrator.clock import Clock
from orchestrator.events import EventBus, RunWarning
from orchestrator.export.exporters.base import Exporter, ExportItem
from orchestrator.export.work import Descoped, Listing, ListingEnd, Outcome, Wait
from orchestrator.plan import live
from orchestrator.plan.cost import SETUP_KINDS, CostModel, Work, human_bytes, human_rate
from orchestrator.plan.forecast import DeadlinePlan
from orchestrator.plan.workload import snapshot_data_bytes
from orchestrator.run.deadline import Deadline, format_duration

log = logging.getLogger(__name__)

#: Items at least this large move at the egress's pace, not their requests'.
LARGE_ITEM_BYTES = 1024 * 1024

#: The pipe counts as full while the flow is at least this share of the egress.
PIPE_FULL_SHARE = 0.7

#: Re-plans in a row past the cutoff before work is held back.
SLIPS_TO_DESCOPE = 2

#: Requests a window needs before it says what a request costs.
MIN_WINDOW_REQUESTS = 16

#: Held work comes back only this long after the last item was held back.
READMIT_AFTER_S = 10.0

#: Verdicts of an outlook.
ON_TRACK = "on track"
DESCOPING = "descoping"
INFEASIBLE = "infeasible"
CUTOFF = "cutoff reached"
DONE = "done"


@dataclass(frozen=True)
class Outlook:
    """The scheduler's answer to "will we make it?" at one moment (JSON-able)."""

    at: datetime
    deadline: datetime
    cutoff: datetime
    finish_p50: datetime
    finish_p90: datetime
    verdict: str
    remaining_bytes: int
    egress_p50: float
    egress_p90: float
    in_flight: int
    pending: int
    descoped_items: int
    descoped_bytes: int
    #: The P90 finish of the critical tier alone (None once it is all done).
    critical_finish_p90: datetime | None = None

    @property
    def margin_p90_s(self) -> float:
        return (self.cutoff - self.finish_p90).total_seconds()

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for name, value in data.items():
            if isinstance(value, datetime):
                data[name] = value.isoformat()
        data["margin_p90_s"] = round(self.margin_p90_s, 3)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Outlook:
        values = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        for name in ("at", "deadline", "cutoff", "finish_p50", "finish_p90", "critical_finish_p90"):
            if isinstance(values.get(name), str):
                values[name] = datetime.fromisoformat(values[name])
        return cls(**values)

    def line(self) -> str:
        """``P50 12:03:04, P90 12:05:00; cutoff 12:30:00, margin 24m 59s; on track``."""
        margin = format_duration(timedelta(seconds=self.margin_p90_s))
        text = (
            f"P50 {self.finish_p50:%H:%M:%S}, P90 {self.finish_p90:%H:%M:%S}; cutoff "
            f"{self.cutoff:%H:%M:%S}, margin at P90 {margin}; {self.verdict}"
        )
        if self.descoped_items:
            text += f"; {self.descoped_items} descoped ({human_bytes(self.descoped_bytes)})"
        return text


@dataclass
class _Entry:
    item: ExportItem
    rank: int
    work: Work
    seq: int
    #: Already stored at every destination: the coordinator skips it, costs nothing.
    stored: bool = False
    state: str = "pending"  # pending | ready | in-flight | held | descoped | done
    started_mono: float = 0.0
    #: Share of its cost done, by the fluid model (every item in flight gets an
    #: equal share of the pipe), advanced whenever the scheduler is called.
    done_share: float = 0.0
    cost50: float = 0.0
    cost90: float = 0.0
    reason: str = ""
    followers: list[_Entry] = field(default_factory=list)


@dataclass
class _Group:
    listed_items: int = 0
    listed_bytes: int = 0
    skipped_items: int = 0
    skipped_bytes: int = 0


class DeadlineScheduler:
    """A ``WorkSource`` (``orchestrator.export.work``); see the module docstring.

    Called from the coordinator's thread only. ``stored(item)`` says whether
    the journal has the item at every destination it goes to (skipped by
    the coordinator, so it costs nothing here).
    """

    def __init__(
        self,
        *,
        run_id: str,
        exporters: Sequence[Exporter],
        deadline: Deadline,
        clock: Clock,
        model: CostModel,
        events: EventBus,
        plan: DeadlinePlan | None = None,
        journal: Any = None,
        stored: Callable[[ExportItem], bool] | None = None,
        part_size: int = 16 * 1024 * 1024,
        replan_every_s: float = 2.0,
        listing_batch: int = 256,
    ) -> None:
        self.run_id = run_id
        self._exporters = {e.kind: e for e in exporters}
        self._listings: deque[Listing] = deque(Listing(e) for e in exporters)
        self.deadline = deadline
        self.cutoff = deadline.cutoff
        self.clock = clock
        self.model = model
        self.events = events
        self.plan = plan
        self.journal = journal
        self._stored = stored or (lambda item: False)
        self.part_size = part_size
        self.replan_every_s = replan_every_s
        self.listing_batch = listing_batch
        self._seq = itertools.count()
        self._heap: list[tuple[tuple[float, ...], int, _Entry]] = []
        self._ready: deque[_Entry] = deque()
        self._by_key: dict[str, _Entry] = {}
        self._in_flight: dict[str, _Entry] = {}
        self._held: dict[str, _Entry] = {}
        self._new_descoped: list[Descoped] = []
        self._ends: list[ListingEnd] = []
        self._descoped_items = 0
        self._descoped_bytes = 0
        self._groups: dict[tuple[str, str], _Group] = {}
        self._ebs_sizes: dict[str, tuple[int, int] | None] = {}
        self.protected_rank = plan.rows[0].tier_rank if plan and plan.rows else 0
        #: (tier, kind) -> (items, Work) the plan expects: reserved until listed.
        self._planned: dict[tuple[str, str], tuple[int, int, Work]] = {}
        for row in plan.rows if plan else ():
            self._planned[(row.tier, row.kind)] = (
                row.tier_rank,
                row.items,
                Work(row.kind, row.bytes, row.requests, row.setups),
            )
        self._last_replan = float("-inf")
        self._last_hold_mono = float("-inf")
        #: Bytes per second that flowed in the last measured window.
        self._flow = 0.0
        #: Re-plans in a row whose P90 finish passed the cutoff.
        self._slipping = 0
        #: (kind, requests) of the items that finished since the last measurement.
        self._window_requests: list[tuple[str, int]] = []
        self._fluid_mono = clock.monotonic()
        self._window_s = max(0.0, (self.cutoff - clock.now()).total_seconds())
        self._last_copied: tuple[float, int] | None = None
        self._outlook: Outlook | None = None
        self._warned: set[str] = set()
        self._finished = False
        self.cutoff_passed = False
        live.register_scheduler(run_id, self)

    # -- the WorkSource protocol ---------------------------------------------

    def exporter(self, kind: str) -> Exporter:
        return self._exporters[kind]

    def next_item(self, now: datetime) -> ExportItem | Wait | None:
        if self._finished:
            return None
        self._advance_fluid()
        if now >= self.cutoff and not self.cutoff_passed:
            self._soft_cutoff(now)
        if self.cutoff_passed:
            self._drain_listings_descoping(now)
            return self._end(now)
        self._pull_listing()
        self._replan_if_due(now)
        while True:
            if self._ready:
                return self._start(self._ready.popleft(), now)
            picked = self._pick(now)
            if picked is not None:
                return self._start(picked, now)
            if self._listings:
                self._pull_listing()
                continue
            break
        if self._in_flight:
            return Wait.WAIT
        return self._end(now)

    def take_descoped(self) -> Sequence[Descoped]:
        """What was descoped since the last call.

        The coordinator calls this often, also while every slot is busy (every
        second or so): it is the re-plan's heartbeat, and past the cutoff it
        descopes everything not started, so what never starts is journaled
        with its reason before the hard stop.
        """
        now = self.clock.now()
        self._advance_fluid()
        if now >= self.cutoff and not self._finished:
            if not self.cutoff_passed:
                self._soft_cutoff(now)
            self._drain_listings_descoping(now)
        elif not self._finished:
            # Also the re-plan's heartbeat while every slot is busy with long items.
            self._replan_if_due(now)
        taken, self._new_descoped = self._new_descoped, []
        return taken

    def settled(self, outcome: Outcome) -> None:
        self._advance_fluid()
        entry = self._in_flight.pop(outcome.item.dest_key, None)
        if entry is None:
            return
        entry.state = "done"
        if outcome.status in ("verified", "unchecked") and not entry.stored:
            # A worker that did not count its requests reports one: the estimate is better.
            requests = outcome.requests if outcome.requests > 1 else entry.work.requests
            self._window_requests.append((entry.item.kind, requests))
            self.model.observe_item(
                entry.item.kind,
                bytes_read=outcome.bytes_read,
                requests=max(1, requests),
                seconds=outcome.seconds,
                setups=entry.work.setups,
            )
        self._replan_if_due(self.clock.now())

    # -- what the progress display and status read ---------------------------

    def outlook(self) -> Outlook | None:
        return self._outlook

    # -- listing ---------------------------------------------------------------

    def take_listing_ends(self) -> Sequence[ListingEnd]:
        """Kinds whose listing ended since the last call; a failed one with its error
        (the other kinds go on)."""
        ends, self._ends = self._ends, []
        return ends

    def _pull_listing(self, batch: int | None = None) -> None:
        """List up to ``batch`` more items, round-robin over the exporters still listing."""
        budget = batch or self.listing_batch
        while budget > 0 and self._listings:
            listing = self._listings[0]
            item = listing.next()
            if item is None:  # one kind's listing failing must not stop the others
                assert listing.end is not None
                if listing.end.error is not None:
                    log.warning("listing %s failed: %s", listing.end.kind, listing.end.error)
                self._listings.popleft()
                self._listing_done(listing.end.kind)
                self._ends.append(listing.end)
                continue
            self._listings.rotate(-1)
            self._add(listing.exporter, item)
            budget -= 1

    def _listing_done(self, kind: str) -> None:
        for (tier, planned_kind), (rank, _items, _work) in list(self._planned.items()):
            if planned_kind == kind:
                self._planned[(tier, planned_kind)] = (rank, 0, Work(kind, 0, 0, 0))

    def _add(self, exporter: Exporter, item: ExportItem) -> None:
        rank = exporter.tier_of.rank(item.source)
        stored = self._stored(item)
        work = Work(item.kind, 0, 0, 0) if stored else self._work(exporter, item)
        entry = _Entry(item, rank, work, next(self._seq), stored=stored)
        group = self._groups.setdefault((item.kind, item.tier), _Group())
        group.listed_items += 1
        group.listed_bytes += item.size or 0
        if stored:
            group.skipped_items += 1
            group.skipped_bytes += item.size or 0
        planned = self._planned.get((item.tier, item.kind))
        if planned is not None:
            prank, items, pwork = planned
            if items > 0:
                # What is listed is no longer reserved.
                left = max(0, items - 1)
                share = left / items
                self._planned[(item.tier, item.kind)] = (
                    prank,
                    left,
                    Work(
                        pwork.kind,
                        int(pwork.bytes * share),
                        int(pwork.requests * share),
                        round(pwork.setups * share),
                    ),
                )
        self._by_key[item.dest_key] = entry
        parent = self._by_key.get(item.depends_on) if item.depends_on else None
        if parent is not None and parent.state in ("pending", "held", "follower"):
            parent.followers.append(entry)
            entry.state = "follower"
            if parent.state == "held":
                entry.state = "held-follower"
                entry.reason = f"depends on {parent.item.dest_key}, descoped"
                self._journal_descoped(entry, entry.reason)
            return
        if parent is not None and parent.state == "descoped":
            self._descope(entry, f"depends on {parent.item.dest_key}, descoped: {parent.reason}")
            return
        if parent is not None:
            entry.state = "ready"
            self._ready.append(entry)
            return
        self._push(entry)

    def _work(self, exporter: Exporter, item: ExportItem) -> Work:
        size = item.size
        if item.kind == "ebs":
            sized = self._ebs_data(exporter, item)
            if sized is not None:
                nbytes, blocks = sized
                return Work("ebs", nbytes, blocks + 1, 1)
            size = size or 0
            return Work("ebs", size, size // (512 * 1024) + 1, 1)
        if size is None:
            size = self._expected_size(item)
        setups = 1 if item.kind in SETUP_KINDS and item.depends_on is None else 0
        return Work(item.kind, size, 1 + size // max(1, self.part_size), setups)

    def _ebs_data(self, exporter: Exporter, item: ExportItem) -> tuple[int, int] | None:
        snapshot = item.source.get("snapshot_id")
        region = item.source.get("region")
        if not snapshot or not region:
            return None
        if snapshot not in self._ebs_sizes:
            account = getattr(exporter, "account", None)
            self._ebs_sizes[snapshot] = (
                snapshot_data_bytes(account, str(region), str(snapshot)) if account else None
            )
        return self._ebs_sizes[snapshot]

    def _expected_size(self, item: ExportItem) -> int:
        """A generated item's size: an earlier run's, else the plan's average for its group."""
        if self.journal is not None and hasattr(self.journal, "known_sizes"):
            if not hasattr(self, "_known"):
                self._known = self.journal.known_sizes()
            known = self._known.get(item.dest_key)
            if known is not None:
                return int(known)
        if self.plan is not None:
            for row in self.plan.rows:
                if row.tier == item.tier and row.kind == item.kind and row.items:
                    return row.bytes // row.items
        return 0

    # -- ordering and admission ------------------------------------------------

    def _key(self, entry: _Entry) -> tuple[float, ...]:
        cost = self.model.cost_s(entry.work, pessimistic=True)
        if entry.stored:
            return (float(entry.rank), -1.0)
        if entry.rank <= self.protected_rank:
            return (float(entry.rank), cost)  # small critical items first
        return (float(entry.rank), -cost)  # least laxity: the largest first

    def _push(self, entry: _Entry) -> None:
        entry.state = "pending"
        heapq.heappush(self._heap, (self._key(entry), entry.seq, entry))

    def _pick(self, now: datetime) -> _Entry | None:
        """The first pending entry that may start; those that may not are held."""
        while self._heap:
            _key, _seq, entry = heapq.heappop(self._heap)
            if entry.state != "pending":
                continue
            reason = self._refusal(entry, now)
            if reason is None:
                return entry
            self._hold(entry, reason)
        return None

    def _advance_fluid(self) -> None:
        """Move every item in flight on by its share of the pipe since the last call."""
        mono = self.clock.monotonic()
        elapsed = mono - self._fluid_mono
        self._fluid_mono = mono
        if elapsed <= 0 or not self._in_flight:
            return
        per_item = elapsed / len(self._in_flight)
        for entry in self._in_flight.values():
            cost = self.model.cost_s(entry.work, pessimistic=False)
            if cost > 0:
                entry.done_share = min(1.0, entry.done_share + per_item / cost)

    def _remaining(self, entry: _Entry, pessimistic: bool) -> float:
        cost = self.model.cost_s(entry.work, pessimistic=pessimistic)
        return max(0.05 * cost, cost * (1.0 - entry.done_share))

    def _in_flight_remaining(self, pessimistic: bool) -> float:
        return sum(self._remaining(e, pessimistic) for e in self._in_flight.values())

    def _critical_finish_with(self, extra: float) -> float:
        """Seconds until the critical work in flight is done at P90 if an item costing
        ``extra`` starts beside it (processor sharing: every item in flight slows it
        by as much of its own remainder as overlaps)."""
        protected = [e for e in self._in_flight.values() if e.rank <= self.protected_rank]
        if not protected:
            return 0.0
        longest = max(self._remaining(e, True) for e in protected)
        others = sum(
            min(self._remaining(e, True), longest)
            for e in self._in_flight.values()
            if e.rank > self.protected_rank
        )
        sharing = sum(self._remaining(e, True) for e in protected) - longest
        return longest + min(sharing, longest * len(protected)) + others + min(extra, longest)

    def _reserved(self, *, before_rank: int | None, pessimistic: bool) -> float:
        """Seconds of planned work not yet listed, in tiers ranked before ``before_rank``."""
        total = 0.0
        for rank, items, work in self._planned.values():
            if items and (before_rank is None or rank < before_rank):
                total += self.model.cost_s(work, pessimistic=pessimistic)
        return total

    def _refusal(self, entry: _Entry, now: datetime) -> str | None:
        """Why ``entry`` may not start now, or None when it may."""
        if entry.stored:
            return None
        cost90 = self.model.cost_s(entry.work, pessimistic=True)
        if entry.rank <= self.protected_rank:
            # Never descoped: whatever it gets before the deadline is saved, and
            # the hard stop checkpoints the rest for `exitplan resume`.
            return None
        alone = self.model.alone_s(entry.work, pessimistic=True)
        backlog = self._in_flight_remaining(True) + self._reserved(
            before_rank=entry.rank, pessimistic=True
        )
        finish90 = now + timedelta(seconds=max(alone, backlog + cost90))
        critical = now + timedelta(seconds=self._critical_finish_with(cost90))
        if finish90 <= self.cutoff and critical <= self.cutoff:
            return None
        if finish90 <= self.cutoff:
            return (
                f"it would slow the critical work in flight past the cutoff "
                f"{self.cutoff:%H:%M:%S} (its P90 finish {critical:%H:%M:%S})"
            )
        return (
            f"its P90 finish {finish90:%H:%M:%S} passes the cutoff {self.cutoff:%H:%M:%S} "
            f"({human_bytes(entry.work.bytes)} after {format_duration(timedelta(seconds=backlog))} "
            f"of work ahead, at {self.model.describe_rates()})"
        )

    def _start(self, entry: _Entry, now: datetime) -> ExportItem:
        entry.state = "in-flight"
        entry.started_mono = self.clock.monotonic()
        entry.cost50 = self.model.cost_s(entry.work, pessimistic=False)
        entry.cost90 = self.model.cost_s(entry.work, pessimistic=True)
        self._in_flight[entry.item.dest_key] = entry
        for follower in entry.followers:
            follower.state = "ready"
            self._ready.append(follower)
        entry.followers = []
        return entry.item

    # -- descoping ---------------------------------------------------------------

    def _hold(self, entry: _Entry, reason: str) -> None:
        """Descoped for now: journaled with the reason, re-admitted if rates recover."""
        self._last_hold_mono = self.clock.monotonic()
        entry.state = "held"
        entry.reason = reason
        self._held[entry.item.dest_key] = entry
        self._journal_descoped(entry, reason)
        for follower in entry.followers:
            follower.state = "held-follower"
            follower.reason = f"depends on {entry.item.dest_key}, descoped"
            self._journal_descoped(follower, follower.reason)

    def _descope(self, entry: _Entry, reason: str) -> None:
        """Descoped for good (the soft cutoff, or what it depends on is)."""
        was_held = entry.state in ("held", "held-follower")
        changed = reason != entry.reason
        entry.state = "descoped"
        entry.reason = reason
        self._held.pop(entry.item.dest_key, None)
        if not was_held or changed:
            self._journal_descoped(entry, reason, count=not was_held)
        for follower in entry.followers:
            self._descope(follower, f"depends on {entry.item.dest_key}, descoped")
        entry.followers = []

    def _journal_descoped(self, entry: _Entry, reason: str, *, count: bool = True) -> None:
        self._new_descoped.append(Descoped(entry.item, reason))
        if count:
            self._descoped_items += 1
            self._descoped_bytes += entry.item.size or entry.work.bytes

    def _readmit(self, entry: _Entry) -> None:
        self._held.pop(entry.item.dest_key, None)
        self._descoped_items -= 1 + len(entry.followers)
        self._descoped_bytes -= (entry.item.size or entry.work.bytes) + sum(
            f.item.size or f.work.bytes for f in entry.followers
        )
        for follower in entry.followers:
            follower.state = "follower"
        self._push(entry)

    def _soft_cutoff(self, now: datetime) -> None:
        self.cutoff_passed = True
        reason = (
            f"not started by the cutoff {self.cutoff:%Y-%m-%d %H:%M:%S %Z} (the deadline less "
            "the safety margin): no new work starts after it"
        )
        pending = [e for _k, _s, e in self._heap if e.state == "pending"]
        pending += [e for e in self._ready if e.state == "ready"]
        pending += list(self._held.values())
        self._heap = []
        self._ready.clear()
        for entry in [e for e in pending if e.stored]:
            entry.state = "ready"
            self._ready.append(entry)
        pending = [e for e in pending if not e.stored]
        for entry in pending:
            self._descope(
                entry, reason if entry.state != "held" else f"{entry.reason}; then {reason}"
            )
        if pending:
            self.events.emit(
                RunWarning(
                    message=f"cutoff {self.cutoff:%H:%M:%S} reached: {len(pending)} item(s) "
                    "not started are descoped; what is running finishes or stops at the deadline"
                )
            )

    def _drain_listings_descoping(self, now: datetime) -> None:
        reason = (
            f"listed after the cutoff {self.cutoff:%Y-%m-%d %H:%M:%S %Z}: no new work starts "
            "after it"
        )
        while self._listings:
            self._pull_listing(batch=10_000)
            for _k, _s, entry in self._heap:
                if entry.state == "pending" and entry.stored:
                    entry.state = "ready"
                    self._ready.append(entry)
                elif entry.state == "pending":
                    self._descope(entry, reason)
            self._heap = []
            for entry in [e for e in self._ready if not e.stored]:
                self._ready.remove(entry)
                self._descope(entry, reason)

    def _end(self, now: datetime) -> ExportItem | Wait | None:
        stored = [e for e in self._ready if e.stored]
        if stored:
            entry = stored[0]
            self._ready.remove(entry)
            return self._start(entry, now)
        if self._in_flight:
            return Wait.WAIT
        if self._fill_idle_pipe(now):
            return self._start(self._ready.popleft(), now)
        for entry in list(self._held.values()):
            self._descope(entry, entry.reason)
        self._finished = True
        self._save(now, final=True)
        return None

    def _fill_idle_pipe(self, now: datetime) -> bool:
        """Nothing runs, nothing else waits, and the cutoff is ahead: start the held
        items that fit the time left at the rates measured so far (P50), the most
        important and cheapest first. An idle pipe saves nothing, and with nothing
        beside them the pessimistic bound that held them back no longer applies.
        True when some were re-admitted (they are in ``_ready``)."""
        if not self._held or now >= self.cutoff:
            return False
        # A tenth of the time left stays spare, as in a re-admission after a re-plan.
        slack = 0.9 * (self.cutoff - now).total_seconds()
        readmitted = []
        for entry in sorted(
            self._held.values(),
            key=lambda e: (e.rank, self.model.cost_s(e.work, pessimistic=False)),
        ):
            if not _readmittable(entry):
                continue
            cost = self.model.cost_s(entry.work, pessimistic=False)
            if cost > slack:
                continue
            slack -= cost
            readmitted.append(entry)
        for entry in readmitted:
            self._readmit(entry)
            entry.state = "ready"  # its heap entry is skipped: it starts from here
            self._ready.append(entry)
        if readmitted:
            self.events.emit(
                RunWarning(
                    message=f"re-admitting {len(readmitted)} descoped item(s): nothing else is "
                    f"running and they fit before the cutoff {self.cutoff:%H:%M:%S} at the "
                    f"measured rates ({self.model.describe_rates()})"
                )
            )
        return bool(readmitted)

    # -- re-planning ---------------------------------------------------------------

    def _replan_if_due(self, now: datetime) -> None:
        mono = self.clock.monotonic()
        if mono - self._last_replan < self.replan_every_s:
            return
        self._last_replan = mono
        self._measure_egress(mono)
        self._replan(now)

    def _measure_egress(self, mono: float) -> None:
        progress = live.progress_for(self.run_id)
        if progress is None:
            return
        copied = sum(k.copied_bytes for k in progress.snapshot())
        last = self._last_copied
        self._last_copied = (mono, copied)
        if last is None or mono - last[0] < 0.5 or not self._in_flight:
            return
        self._flow = (copied - last[1]) / (mono - last[0])
        finished, self._window_requests = self._window_requests, []
        requests = sum(r for _k, r in finished)
        busy = len(self._in_flight) >= self.model.concurrency or bool(self._pending_entries())
        pipe_full = self._flow >= PIPE_FULL_SHARE * self.model.egress_rate(False)
        if busy and not pipe_full and requests >= MIN_WINDOW_REQUESTS:
            self.model.observe_requests(
                sorted({k for k, _r in finished}), requests=requests, seconds=mono - last[0]
            )
        # The flow says what the pipe carries only while large items dominate it;
        # many small objects are bound by their requests, not by the egress.
        # Or while the flow is near what the pipe is thought to carry: then bytes
        # are the limit whatever the sizes, and the flow is what it carries.
        held = [e.work.bytes * (1 - e.done_share) for e in self._in_flight.values()]
        large = sum(b for b in held if b >= LARGE_ITEM_BYTES)
        near_full = self._flow >= PIPE_FULL_SHARE * self.model.egress_rate(False)
        if held and (large >= 0.8 * sum(held) or near_full) and copied > last[1]:
            self.model.observe_egress(self._flow)

    def _pending_entries(self) -> list[_Entry]:
        entries = [e for _k, _s, e in self._heap if e.state == "pending"]
        entries += [e for e in self._ready if e.state == "ready"]
        return entries

    def _projection(self, pessimistic: bool, entries: list[_Entry]) -> tuple[float, float]:
        """(seconds until everything admitted is done, until the critical tier is)."""
        by_rank: dict[int, list[Work]] = {}
        for entry in entries:
            by_rank.setdefault(entry.rank, []).append(entry.work)
        for rank, _items, work in self._planned.values():
            by_rank.setdefault(rank, []).append(work)
        total = self._in_flight_remaining(pessimistic)
        critical_waiting = 0.0
        for rank in sorted(by_rank):
            cost = self._cost_of(by_rank[rank], pessimistic)
            total += cost
            if rank <= self.protected_rank:
                critical_waiting += cost
        critical = critical_waiting
        if pessimistic:
            critical += self._critical_finish_with(0.0)
        else:
            critical += sum(
                self._remaining(e, False)
                for e in self._in_flight.values()
                if e.rank <= self.protected_rank
            )
        return total, critical

    def _cost_of(self, works: list[Work], pessimistic: bool) -> float:
        by_kind: dict[str, list[int]] = {}
        for work in works:
            agg = by_kind.setdefault(work.kind, [0, 0, 0])
            agg[0] += work.bytes
            agg[1] += work.requests
            agg[2] += work.setups
        return sum(
            self.model.cost_s(Work(kind, *agg), pessimistic=pessimistic)
            for kind, agg in by_kind.items()
        )

    def _replan(self, now: datetime) -> None:
        entries = self._pending_entries()
        total90, critical90 = self._projection(True, entries)
        finish90 = now + timedelta(seconds=total90)
        # One re-plan past the cutoff may be a stall; two in a row are a trend.
        self._slipping = self._slipping + 1 if finish90 > self.cutoff else 0
        if self._slipping >= SLIPS_TO_DESCOPE:
            self._descope_to_fit(now, entries)
        elif finish90 <= self.cutoff and self._held:
            self._readmit_what_fits(now, entries, total90)
        entries = self._pending_entries()
        total50, _critical50 = self._projection(False, entries)
        total90, critical90 = self._projection(True, entries)
        critical_finish = now + timedelta(seconds=critical90)
        verdict = ON_TRACK
        # Late by a hair at the end of a run is noise, not a verdict.
        tolerance = timedelta(seconds=max(1.0, 0.01 * self._window_s))
        if critical_finish > self.cutoff + tolerance:
            verdict = INFEASIBLE
        elif self._held or self._descoped_items:
            verdict = DESCOPING
        self._outlook = Outlook(
            at=now,
            deadline=self.deadline.at,
            cutoff=self.cutoff,
            finish_p50=now + timedelta(seconds=total50),
            finish_p90=now + timedelta(seconds=total90),
            verdict=verdict,
            remaining_bytes=sum(e.work.bytes for e in entries)
            + sum(int(e.work.bytes * (1 - e.done_share)) for e in self._in_flight.values())
            + sum(w.bytes for _r, items, w in self._planned.values() if items),
            egress_p50=self.model.egress_rate(False),
            egress_p90=self.model.egress_rate(True),
            in_flight=len(self._in_flight),
            pending=len(entries),
            descoped_items=self._descoped_items,
            descoped_bytes=self._descoped_bytes,
            critical_finish_p90=critical_finish,
        )
        self._warn(now, verdict, critical_finish)
        self._save(now)

    def _descope_to_fit(self, now: datetime, entries: list[_Entry]) -> None:
        """Hold back the least important pending work until the P90 finish fits."""
        excess = (now - self.cutoff).total_seconds() + self._projection(True, entries)[0]
        candidates = sorted(
            (e for e in entries if e.rank > self.protected_rank and not e.stored),
            key=lambda e: (-e.rank, -self.model.cost_s(e.work, pessimistic=True)),
        )
        finish = now + timedelta(seconds=self._projection(True, entries)[0])
        held = 0
        held_bytes = 0
        for entry in candidates:
            if excess <= 0:
                break
            excess -= self.model.cost_s(entry.work, pessimistic=True)
            # One wording per cause (the warning has the moment's numbers), so the
            # report groups what was held back for the same reason.
            reason = (
                f"held back: the P90 finish passed the cutoff {self.cutoff:%H:%M:%S} at "
                f"{self.model.describe_rates()}; re-admitted if rates recover"
            )
            self._hold(entry, reason)
            held += 1
            held_bytes += entry.work.bytes
        if held:
            self.events.emit(
                RunWarning(
                    message=f"descoping {held} item(s), {human_bytes(held_bytes)}: the P90 "
                    f"finish {finish:%H:%M:%S} passes the cutoff {self.cutoff:%H:%M:%S} "
                    f"({self.model.describe_rates()})"
                )
            )

    def _readmit_what_fits(self, now: datetime, entries: list[_Entry], total90: float) -> None:
        if self.clock.monotonic() - self._last_hold_mono < READMIT_AFTER_S:
            return  # rates must hold up for a while: no flapping between two plans
        window = (self.cutoff - now).total_seconds()
        slack = window - total90 - 0.1 * window
        readmitted = 0
        for entry in sorted(
            self._held.values(),
            key=lambda e: (e.rank, self.model.cost_s(e.work, pessimistic=True)),
        ):
            if not _readmittable(entry):
                continue
            cost = self.model.cost_s(entry.work, pessimistic=True)
            if cost > slack:
                continue
            critical = self._critical_finish_with(cost)
            if critical and now + timedelta(seconds=critical) > self.cutoff - timedelta(
                seconds=0.1 * window
            ):
                continue
            slack -= cost
            self._readmit(entry)
            readmitted += 1
        if readmitted:
            self.events.emit(
                RunWarning(
                    message=f"re-admitting {readmitted} descoped item(s): rates recovered "
                    f"({self.model.describe_rates()})"
                )
            )

    def _warn(self, now: datetime, verdict: str, critical_finish: datetime) -> None:
        if verdict == INFEASIBLE and "infeasible" not in self._warned:
            self._warned.add("infeasible")
            late = format_duration(critical_finish - self.cutoff)
            entries = [e for e in self._pending_entries() if e.rank <= self.protected_rank]
            entries += [e for e in self._in_flight.values() if e.rank <= self.protected_rank]
            nbytes = sum(int(e.work.bytes * (1 - e.done_share)) for e in entries) + sum(
                w.bytes for r, _i, w in self._planned.values() if r <= self.protected_rank
            )
            window = (self.cutoff - now).total_seconds()
            need = (
                f"it needs {human_rate(nbytes / window)} of egress"
                if window > 0 and nbytes
                else "no rate is enough"
            )
            self.events.emit(
                RunWarning(
                    message=f"deadline infeasible: the critical tier's P90 finish "
                    f"{critical_finish:%H:%M:%S} is {late} past the cutoff "
                    f"{self.cutoff:%H:%M:%S} ({human_bytes(nbytes)} left at "
                    f"{self.model.describe_rates()}); {need}. Options: descope tiers, more "
                    "concurrency or workers, another destination, physical media"
                )
            )

    def _save(self, now: datetime, *, final: bool = False) -> None:
        if final and self._outlook is not None:
            self._outlook = Outlook(
                **{
                    **{k: getattr(self._outlook, k) for k in Outlook.__dataclass_fields__},
                    "at": now,
                    "finish_p50": now,
                    "finish_p90": now,
                    "verdict": DONE if not self._descoped_items else self._outlook.verdict,
                    "remaining_bytes": 0,
                    "in_flight": 0,
                    "pending": 0,
                    "descoped_items": self._descoped_items,
                    "descoped_bytes": self._descoped_bytes,
                    "critical_finish_p90": None,
                }
            )
        if self.journal is None:
            return
        try:
            for (kind, tier), group in self._groups.items():
                self.journal.save_plan_group(
                    self.run_id,
                    kind,
                    tier,
                    listed_items=group.listed_items,
                    listed_bytes=group.listed_bytes,
                    skipped_items=group.skipped_items,
                    skipped_bytes=group.skipped_bytes,
                    listing_done=not self._listings,
                )
            if self._outlook is not None:
                self.journal.save_plan_outlook(self.run_id, self._outlook.to_json())
            if final:
                self.journal.save_plan_rates(self.run_id, asdict(self.model.figures()))
        except Exception:  # the journal keeps the items; the outlook is advice
            log.warning("could not keep the scheduler's outlook in the journal", exc_info=True)


def _readmittable(entry: _Entry) -> bool:
    """Whether a held item may come back: not one that others depend on or that
    depends on another (its exporter was told it is descoped, and the items it
    pairs with were settled accordingly)."""
    return not (entry.item.keeps_record or entry.item.depends_on or entry.followers)
