"""The cost model: how long a piece of work takes, per kind, fitted while the run goes.

Every item costs a *setup* (a snapshot to take, a dump or table scan to
start), some *requests* (GETs, EBS blocks, pages), each holding one of the
``concurrency`` transfer slots for a while, and *bytes*, which go through
one pipe: the egress from the source to the destinations. Kinds running
together share that pipe, so their byte rates are never added; a second
kind running beside S3 takes its bandwidth from S3's.

The time an item takes from the pipe (``cost_s``) is the largest of:

- its bytes over the egress rate,
- its requests times the time one request holds a slot, over the slots,
- its requests over the service's ceiling for that kind (EBS
  GetSnapshotBlock: about 1,000 requests/s per snapshot and account; S3:
  about 5,500 GETs/s per prefix), a hard limit however many slots run,

plus its setup spread over the slots (a snapshot being taken holds a slot,
not the pipe). Summing the costs of a set of items gives its duration.

Each rate is an ``Estimate``: an EWMA with its variance, seeded (from the
last drill's measured figures, a short calibration at the start, or a
stated default) and updated from every finished item. ``p50`` uses the
mean; ``p90`` the pessimistic bound (the mean 1.28 standard deviations
towards slower), which is what admission and descoping judge by.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

#: Standard normal quantile of 0.9: the pessimistic bound is the mean this many
#: standard deviations towards the slow side.
Z90 = 1.2816

#: Requests per second the service serves at most, whatever the client does.
#: EBS direct APIs: GetSnapshotBlock, about 1,000 per second per snapshot and
#: account (AWS EBS direct APIs quotas). S3: 5,500 GET/HEAD per second per
#: prefix (S3 performance guidelines). Other kinds are bound by their own
#: small request counts long before any ceiling.
REQUEST_CEILINGS: dict[str, float] = {"ebs": 1000.0, "s3": 5500.0}

#: Kinds whose items start with setup work before the first byte: an EBS
#: snapshot to take or wait for, an RDS dump to start, a DynamoDB scan.
SETUP_KINDS = frozenset({"ebs", "rds", "dynamodb"})


@dataclass(frozen=True)
class KindSeed:
    """Stated defaults for a kind before anything is measured (seconds)."""

    setup_s: float
    request_s: float


#: Defaults when neither a drill nor a calibration measured a kind. Round
#: figures from AWS-side latencies (tens of milliseconds per GET, a second or
#: two to start a dump or a scan), with a wide spread so P90 stays honest.
DEFAULT_SEEDS: dict[str, KindSeed] = {
    "s3": KindSeed(setup_s=0.0, request_s=0.03),
    "ebs": KindSeed(setup_s=2.0, request_s=0.02),
    "rds": KindSeed(setup_s=5.0, request_s=0.05),
    "dynamodb": KindSeed(setup_s=1.0, request_s=0.05),
    "route53": KindSeed(setup_s=0.0, request_s=0.1),
    "secrets": KindSeed(setup_s=0.0, request_s=0.1),
    "ec2": KindSeed(setup_s=0.0, request_s=0.2),
}
_FALLBACK_SEED = KindSeed(setup_s=1.0, request_s=0.1)

#: A measured window below this share of the egress estimate is a drop only
#: when this many windows in a row say so.
EGRESS_DROP_SHARE = 0.75
EGRESS_DROP_WINDOWS = 3
#: A flow at this share of ``--bwlimit`` or more is the cap's doing, not the pipe's.
CAPPED_SHARE = 0.8

#: Egress assumed before anything is measured: 50 MiB/s (a cloud VM's
#: internet egress is commonly 10-100 MiB/s), spread wide.
DEFAULT_EGRESS_BYTES_PER_S = 50 * 1024 * 1024


class Estimate:
    """An EWMA of a quantity with the EWMA of its squared deviation.

    ``spread`` is the relative standard deviation assumed before the second
    sample (a seed is a guess): the pessimistic bound starts wide and
    narrows as measurements agree. Thread-safe.
    """

    def __init__(self, seed: float, *, alpha: float = 0.3, spread: float = 0.5) -> None:
        if seed < 0 or not math.isfinite(seed):
            raise ValueError(f"a seed must be a finite non-negative number, got {seed}")
        self.alpha = alpha
        self._mean = seed
        self._var = (seed * spread) ** 2
        self.samples = 0
        #: A prior that was measured (a calibration, a drill) is blended with the
        #: first samples; a stated default is replaced by the first one.
        self.measured_prior = False
        self._lock = threading.Lock()

    @property
    def mean(self) -> float:
        return self._mean

    @property
    def stdev(self) -> float:
        return math.sqrt(self._var)

    def reseed(self, value: float, *, spread: float) -> None:
        """Replace the prior (a calibration or a drill's figure), keeping no sample."""
        with self._lock:
            self._mean = value
            self._var = (value * spread) ** 2
            self.samples = 0
            self.measured_prior = True

    def update(self, sample: float) -> None:
        if sample < 0 or not math.isfinite(sample):
            return
        with self._lock:
            if self.samples == 0 and not self.measured_prior:
                # The first measurement replaces the guess; the guess's spread
                # stays until a second measurement says how much they vary.
                self._var = max(self._var, (sample - self._mean) ** 2)
                self._mean = sample
            else:
                delta = sample - self._mean
                self._mean += self.alpha * delta
                self._var = (1 - self.alpha) * (self._var + self.alpha * delta * delta)
            self.samples += 1

    def high(self) -> float:
        """The pessimistic bound of a cost: the mean plus 1.28 standard deviations."""
        return self._mean + Z90 * self.stdev

    def low(self) -> float:
        """The pessimistic bound of a rate: the mean less 1.28 standard deviations,
        never below a tenth of the mean (a rate is never zero while work flows)."""
        return max(self._mean * 0.1, self._mean - Z90 * self.stdev)


@dataclass(frozen=True)
class Work:
    """What an item (or a group of items) asks of the source."""

    kind: str
    bytes: int
    requests: int
    #: How many setups (snapshots, dumps, scans) the work includes.
    setups: int = 0


@dataclass
class KindRates:
    setup_s: Estimate
    request_s: Estimate


@dataclass(frozen=True)
class RateFigures:
    """The fitted figures, JSON-able: kept with a run and a drill to seed the next."""

    egress_bytes_per_s: float
    egress_stdev: float
    kinds: dict[str, dict[str, float]] = field(default_factory=dict)


class CostModel:
    """Per-kind costs on a shared egress; see the module docstring.

    ``bwlimit`` (bytes/s) caps the egress: the engine never reads faster.
    ``concurrency`` is the number of transfer slots.
    """

    def __init__(
        self,
        *,
        concurrency: int,
        bwlimit: int | None = None,
        egress_bytes_per_s: float = DEFAULT_EGRESS_BYTES_PER_S,
        egress_spread: float = 0.6,
        seeds: Mapping[str, KindSeed] | None = None,
    ) -> None:
        self.concurrency = max(1, concurrency)
        self.bwlimit = bwlimit
        self.egress = Estimate(egress_bytes_per_s, spread=egress_spread)
        self._seeds = dict(DEFAULT_SEEDS if seeds is None else seeds)
        self._kinds: dict[str, KindRates] = {}
        self._low_windows: list[float] = []
        #: Where the figures came from, for the plan's notes ("drill 2026-...", "calibration").
        self.sources: list[str] = ["defaults"]

    # -- the figures ---------------------------------------------------------

    def kind(self, kind: str) -> KindRates:
        if kind not in self._kinds:
            seed = self._seeds.get(kind, _FALLBACK_SEED)
            self._kinds[kind] = KindRates(
                setup_s=Estimate(seed.setup_s, spread=1.0),
                request_s=Estimate(seed.request_s, spread=0.8),
            )
        return self._kinds[kind]

    @property
    def egress_measured(self) -> bool:
        """Whether the egress figure was measured (a drill, a run, a calibration), not assumed."""
        return self.egress.measured_prior or self.egress.samples > 0

    def egress_rate(self, pessimistic: bool) -> float:
        """Bytes per second through the shared pipe (P90: the pessimistic bound)."""
        rate = self.egress.low() if pessimistic else self.egress.mean
        if self.bwlimit:
            rate = min(rate, float(self.bwlimit))
        return max(rate, 1.0)

    def cost_s(self, work: Work, *, pessimistic: bool) -> float:
        """Seconds of the whole pipe this work takes (see the module docstring)."""
        rates = self.kind(work.kind)
        request_s = rates.request_s.high() if pessimistic else rates.request_s.mean
        setup_s = rates.setup_s.high() if pessimistic else rates.setup_s.mean
        byte_time = work.bytes / self.egress_rate(pessimistic)
        request_time = work.requests * request_s / self.concurrency
        ceiling = REQUEST_CEILINGS.get(work.kind)
        ceiling_time = work.requests / ceiling if ceiling else 0.0
        return max(byte_time, request_time, ceiling_time) + work.setups * setup_s / self.concurrency

    def alone_s(self, work: Work, *, pessimistic: bool) -> float:
        """Seconds the work takes at the least, even with the pipe to itself: its
        setup runs first, in one slot (a snapshot cannot be taken faster in parallel)."""
        rates = self.kind(work.kind)
        setup_s = rates.setup_s.high() if pessimistic else rates.setup_s.mean
        return work.setups * setup_s + self.cost_s(
            Work(work.kind, work.bytes, work.requests), pessimistic=pessimistic
        )

    def bound_by(self, work: Work) -> str:
        """What limits this work at P50: ``egress``, ``requests`` or the ``ceiling``."""
        rates = self.kind(work.kind)
        byte_time = work.bytes / self.egress_rate(False)
        request_time = work.requests * rates.request_s.mean / self.concurrency
        ceiling = REQUEST_CEILINGS.get(work.kind)
        ceiling_time = work.requests / ceiling if ceiling else 0.0
        largest = max(byte_time, request_time, ceiling_time)
        if largest == byte_time:
            return "egress"
        return "ceiling" if largest == ceiling_time else "requests"

    # -- fitting -------------------------------------------------------------

    def observe_item(
        self,
        kind: str,
        *,
        bytes_read: int,
        requests: int,
        seconds: float,
        setups: int = 0,
        pipe_full: bool = False,
    ) -> None:
        """Fit the setup time from one finished item of a kind with setups.

        The item held one slot for ``seconds``; its bytes came at its share of
        the egress (the rate over the slots) and its requests at the fitted
        request time, so what is left over is its setup. Request times are fitted
        from the flow of many items (``observe_requests``), never from one item,
        whose time in a slot includes its wait for the pipe.
        """
        if seconds <= 0 or not (setups and kind in SETUP_KINDS):
            return
        rates = self.kind(kind)
        share = self.egress_rate(False) / self.concurrency
        left = max(0.0, seconds - bytes_read / share)
        request_part = requests * rates.request_s.mean
        rates.setup_s.update(max(0.0, left - request_part) / setups)

    def observe_requests(self, kinds: Sequence[str], *, requests: int, seconds: float) -> None:
        """Requests that finished in ``seconds`` while the slots were busy and the pipe was
        not full: what one request really costs a slot, everything included (the
        source's latency, this machine's CPU, the journal), for each kind in the window."""
        if requests <= 0 or seconds <= 0:
            return
        sample = self.concurrency * seconds / requests
        for kind in kinds:
            self.kind(kind).request_s.update(sample)

    def observe_egress(self, bytes_per_s: float) -> None:
        """A measured aggregate byte rate over a window in which bytes were the limit.

        A window far below the estimate counts only when the next ones agree
        (``EGRESS_DROP_WINDOWS`` in a row): a stall while a snapshot is taken or a
        listing pages must not descope a tier, a halved link must.
        """
        if bytes_per_s <= 0:
            return
        if self.bwlimit and bytes_per_s >= CAPPED_SHARE * self.bwlimit:
            # The cap set this flow, not the pipe: the pipe carries at least this
            # much, and the rate used is the cap already. Taken as a measurement it
            # would drag a faster pipe's estimate down to the cap, and its spread
            # (the P90 bound) far below it.
            self._low_windows = []
            return
        if bytes_per_s < EGRESS_DROP_SHARE * self.egress.mean:
            self._low_windows.append(bytes_per_s)
            if len(self._low_windows) < EGRESS_DROP_WINDOWS:
                return
            for sample in self._low_windows:
                self.egress.update(sample)
            self._low_windows = []
            return
        self._low_windows = []
        self.egress.update(bytes_per_s)

    def calibrate(
        self,
        *,
        egress_bytes_per_s: float | None = None,
        request_s: Mapping[str, float] | None = None,
        what: str = "calibration",
    ) -> None:
        """Replace the priors with measured figures (a drill's, a calibration's)."""
        if egress_bytes_per_s:
            self.egress.reseed(egress_bytes_per_s, spread=0.25)
        for kind, seconds in (request_s or {}).items():
            self.kind(kind).request_s.reseed(seconds, spread=0.4)
        if "defaults" in self.sources:
            self.sources.remove("defaults")
        self.sources.append(what)

    def seed_from(self, figures: Mapping[str, Any], what: str) -> bool:
        """Seed from ``RateFigures`` kept by an earlier run or drill; False if unusable."""
        try:
            egress = float(figures["egress_bytes_per_s"])
            stdev = float(figures.get("egress_stdev", egress * 0.25))
            kinds = dict(figures.get("kinds", {}))
        except (KeyError, TypeError, ValueError):
            return False
        if egress <= 0:
            return False
        self.egress.reseed(egress, spread=max(0.15, min(1.0, stdev / egress)))
        for kind, rates in kinds.items():
            try:
                self.kind(kind).setup_s.reseed(float(rates["setup_s"]), spread=0.5)
                self.kind(kind).request_s.reseed(float(rates["request_s"]), spread=0.4)
            except (KeyError, TypeError, ValueError):
                continue
        if "defaults" in self.sources:
            self.sources.remove("defaults")
        self.sources.append(what)
        return True

    def figures(self) -> RateFigures:
        return RateFigures(
            egress_bytes_per_s=self.egress.mean,
            egress_stdev=self.egress.stdev,
            kinds={
                kind: {"setup_s": rates.setup_s.mean, "request_s": rates.request_s.mean}
                for kind, rates in sorted(self._kinds.items())
            },
        )

    def describe_rates(self) -> str:
        """One line: the egress at P50/P90 and the cap, for plans and warnings."""
        text = (
            f"egress {human_rate(self.egress_rate(False))} "
            f"(P90 {human_rate(self.egress_rate(True))})"
        )
        if not self.egress_measured and not self.bwlimit:
            text += " assumed, not measured"
        if self.bwlimit:
            text += f", capped at {human_rate(self.bwlimit)} by --bwlimit"
        return text


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover - the loop returns


def human_rate(bytes_per_s: float) -> str:
    return f"{human_bytes(bytes_per_s)}/s"
