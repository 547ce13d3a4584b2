"""Inline SVG charts for the HTML report: the timeline, projections, throughput, trend.

Everything is drawn server-side as SVG text (no script), every string
escaped. Times share one ``TimeAxis`` so the charts line up. A deadline far
beyond the run (30 hours away from a 10-minute run) would squash the run
into a sliver, so the axis breaks: the run keeps most of the width, a
marked gap stands for the hidden time, and the cutoff and deadline sit in a
short tail of their own.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from html import escape

from orchestrator.run.deadline import format_duration

#: Share of the width the run keeps when the axis breaks, and where the tail starts.
RUN_ZONE = 0.76
TAIL_START = 0.83
#: A marker further from the start than this many run lengths goes in the tail.
BREAK_FACTOR = 4.0

STATUS_COLOURS = {
    "done": "#2e7d32",
    "failed": "#c62828",
    "cancelled": "#ef6c00",
    "skipped": "#9e9e9e",
    "running": "#1565c0",
}
KIND_COLOURS = (
    "#1565c0",
    "#2e7d32",
    "#6a1b9a",
    "#ef6c00",
    "#00838f",
    "#ad1457",
    "#5d4037",
    "#9e9d24",
)
MARKER_COLOURS = {"start": "#212121", "cutoff": "#ef6c00", "deadline": "#c62828", "end": "#1565c0"}


def esc(value: object) -> str:
    """Text safe in HTML and SVG content and in double-quoted attributes."""
    return escape(str(value), quote=True)


def num(value: float) -> str:
    """A coordinate, short: 12.3, not 12.300000001."""
    text = f"{value:.1f}"
    return text[:-2] if text.endswith(".0") else text


@dataclass(frozen=True)
class Segment:
    start: datetime
    end: datetime
    x_from: float
    x_to: float


@dataclass(frozen=True)
class TimeAxis:
    """Maps an instant to a fraction of the width, in 1 to 3 linear segments.

    With a break, the middle segment is the gap: it holds ``hidden`` of
    time in a narrow band drawn as a break.
    """

    origin: datetime
    segments: tuple[Segment, ...]

    @property
    def start(self) -> datetime:
        return self.segments[0].start

    @property
    def end(self) -> datetime:
        return self.segments[-1].end

    @property
    def broken(self) -> bool:
        return len(self.segments) == 3

    @property
    def gap(self) -> Segment | None:
        return self.segments[1] if self.broken else None

    def fraction(self, moment: datetime) -> float:
        """0 at the start, 1 at the end; instants outside are clamped."""
        if moment <= self.start:
            return 0.0
        if moment >= self.end:
            return 1.0
        for segment in self.segments:
            if moment <= segment.end:
                span = (segment.end - segment.start).total_seconds()
                share = (moment - segment.start).total_seconds() / span if span > 0 else 0.0
                return segment.x_from + share * (segment.x_to - segment.x_from)
        return 1.0

    def ticks(self) -> list[tuple[float, str]]:
        """Round offsets from the origin in the run zone: (fraction, ``+5m``)."""
        zone = self.segments[0]
        span = (zone.end - zone.start).total_seconds()
        step = nice_step(span / 6 if span > 0 else 1.0)
        first = math.ceil((zone.start - self.origin).total_seconds() / step) * step
        ticks: list[tuple[float, str]] = []
        offset = first
        while self.origin + timedelta(seconds=offset) <= zone.end and len(ticks) < 20:
            moment = self.origin + timedelta(seconds=offset)
            ticks.append((self.fraction(moment), "+" + format_duration(timedelta(seconds=offset))))
            offset += step
        return ticks


def build_axis(origin: datetime, activity_end: datetime, markers: Sequence[datetime]) -> TimeAxis:
    """An axis from ``origin`` through ``activity_end`` that also shows every marker."""
    if activity_end <= origin:
        activity_end = origin + timedelta(seconds=1)
    low = min([origin, *markers])
    span = (activity_end - origin).total_seconds()
    near_limit = origin + timedelta(seconds=span * BREAK_FACTOR)
    far = sorted(m for m in markers if m > near_limit)
    zone_end = max([activity_end, *(m for m in markers if m <= near_limit)])
    if not far:
        padded = zone_end + (zone_end - low) * 0.02
        return TimeAxis(origin, (Segment(low, padded, 0.0, 1.0),))
    spread = (far[-1] - far[0]).total_seconds()
    pad = timedelta(seconds=max(spread * 0.15, span * 0.1, 1.0))
    tail_start = max(far[0] - pad, zone_end)
    tail_end = far[-1] + pad
    zone_end = zone_end + (zone_end - low) * 0.02
    if tail_start <= zone_end:
        return TimeAxis(origin, (Segment(low, tail_end, 0.0, 1.0),))
    return TimeAxis(
        origin,
        (
            Segment(low, zone_end, 0.0, RUN_ZONE),
            Segment(zone_end, tail_start, RUN_ZONE, TAIL_START),
            Segment(tail_start, tail_end, TAIL_START, 1.0),
        ),
    )


def nice_step(raw: float) -> float:
    for step in (
        1,
        2,
        5,
        10,
        15,
        30,
        60,
        120,
        300,
        600,
        900,
        1800,
        3600,
        7200,
        10800,
        21600,
        43200,
        86400,
        172800,
        604800,
    ):
        if step >= raw:
            return float(step)
    return 604800.0 * math.ceil(raw / 604800.0)


def human_bytes(value: float) -> str:
    for unit, scale in (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if abs(value) >= scale:
            return f"{value / scale:.1f} {unit}"
    return f"{value:.0f} B"


def downsample(
    points: Sequence[tuple[datetime, float]], limit: int
) -> list[tuple[datetime, float]]:
    """At most ``limit`` points: the mean of equal runs of consecutive points."""
    if len(points) <= limit:
        return list(points)
    size = math.ceil(len(points) / limit)
    merged = []
    for i in range(0, len(points), size):
        chunk = points[i : i + size]
        merged.append((chunk[-1][0], sum(v for _, v in chunk) / len(chunk)))
    return merged


# ---------------------------------------------------------------------------
# Drawing helpers
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Frame:
    """Where a plot sits inside its SVG: left/top edge and size, in SVG units."""

    left: float
    top: float
    width: float
    height: float

    def x(self, fraction: float) -> float:
        return self.left + fraction * self.width

    def y(self, fraction: float) -> float:
        """Fraction 0 at the bottom, 1 at the top."""
        return self.top + (1.0 - fraction) * self.height


def axis_lines(axis: TimeAxis, frame: Frame, *, labels: bool = True) -> list[str]:
    """Vertical grid lines with offset labels below the frame, and the break if any."""
    parts = []
    bottom = frame.top + frame.height
    for fraction, label in axis.ticks():
        x = frame.x(fraction)
        parts.append(
            f'<line class="grid" x1="{num(x)}" y1="{num(frame.top)}" x2="{num(x)}" y2="{num(bottom)}"/>'
        )
        if labels:
            parts.append(
                f'<text class="tick" x="{num(x)}" y="{num(bottom + 14)}" text-anchor="middle">{esc(label)}</text>'
            )
    gap = axis.gap
    if gap is not None:
        x1, x2 = frame.x(gap.x_from), frame.x(gap.x_to)
        parts.append(
            f'<rect class="axis-break" x="{num(x1)}" y="{num(frame.top)}" '
            f'width="{num(x2 - x1)}" height="{num(frame.height)}"/>'
        )
        zig = " ".join(
            f"{num(x1 + (x2 - x1) * (0.35 if i % 2 else 0.65))},{num(frame.top + i * 8)}"
            for i in range(int(frame.height // 8) + 1)
        )
        parts.append(f'<polyline class="axis-break-line" points="{zig}"/>')
        if labels:
            hidden = format_duration(gap.end - gap.start)
            parts.append(
                f'<text class="tick" x="{num((x1 + x2) / 2)}" y="{num(bottom + 14)}" '
                f'text-anchor="middle">{esc("… " + hidden + " …")}</text>'
            )
    return parts


def vertical_break(axis: TimeAxis, frame: Frame) -> list[str]:
    """The break of an axis drawn upwards (the projection chart's finish axis)."""
    gap = axis.gap
    if gap is None:
        return []
    y_low, y_high = frame.y(gap.x_from), frame.y(gap.x_to)
    zig = " ".join(
        f"{num(frame.left + i * 8)},{num(y_high + (y_low - y_high) * (0.35 if i % 2 else 0.65))}"
        for i in range(int(frame.width // 8) + 1)
    )
    hidden = format_duration(gap.end - gap.start)
    return [
        f'<rect class="axis-break" x="{num(frame.left)}" y="{num(y_high)}" '
        f'width="{num(frame.width)}" height="{num(y_low - y_high)}"/>',
        f'<polyline class="axis-break-line" points="{zig}"/>',
        f'<text class="tick" x="{num(frame.left - 4)}" y="{num((y_low + y_high) / 2 + 3)}" '
        f'text-anchor="end">{esc("… " + hidden + " …")}</text>',
    ]


def marker_line(
    marker_id: str, label: str, moment: datetime, axis: TimeAxis, frame: Frame, *, row: int = 0
) -> list[str]:
    """A labelled vertical line at ``moment`` across the frame (start, cutoff, deadline)."""
    x = frame.x(axis.fraction(moment))
    colour = MARKER_COLOURS.get(marker_id.removeprefix("marker-"), "#424242")
    label_y = frame.top - 4 - 12 * row
    # Labels run right of the line unless that would leave the picture (6.5 units a character).
    fits_right = x + 3 + 6.5 * len(label) <= frame.left + frame.width + 18
    anchor = "start" if fits_right else "end"
    dx = -3 if anchor == "end" else 3
    dash = "" if marker_id == "marker-start" else ' stroke-dasharray="6 3"'
    return [
        f'<g id="{esc(marker_id)}" class="marker">'
        f"<title>{esc(label)}: {esc(moment.isoformat())}</title>"
        f'<line x1="{num(x)}" y1="{num(frame.top - 2 - 12 * row)}" x2="{num(x)}" '
        f'y2="{num(frame.top + frame.height)}" stroke="{colour}" stroke-width="2"{dash}/>'
        f'<text x="{num(x + dx)}" y="{num(label_y)}" text-anchor="{anchor}" fill="{colour}" '
        f'class="marker-label">{esc(label)}</text></g>'
    ]


def empty_note(frame: Frame, text: str) -> str:
    return (
        f'<text class="empty" x="{num(frame.left + frame.width / 2)}" '
        f'y="{num(frame.top + frame.height / 2)}" text-anchor="middle">{esc(text)}</text>'
    )


def polyline(points: Sequence[tuple[float, float]], css_class: str, colour: str) -> str:
    coords = " ".join(f"{num(x)},{num(y)}" for x, y in points)
    return f'<polyline class="{esc(css_class)}" fill="none" stroke="{colour}" points="{coords}"/>'
