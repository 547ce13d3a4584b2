"""The report as one self-contained HTML page a person, an auditor or a printer reads.

Inline CSS and SVG only: no script, no external asset (a Content-Security-Policy
says so to the browser too), every string from the report escaped. Sections:
verdict, objectives, timeline (with projections), throughput, data, placement,
replay, DNS cutover, cleanup, trend of earlier drills, planner accuracy,
warnings, and which regulatory obligation each section evidences. Item
counts are aggregated per kind and tier, so the page stays small for runs of
millions of objects.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

from orchestrator.report.model import DataGroup, RunReport
from orchestrator.report.svg import (
    KIND_COLOURS,
    STATUS_COLOURS,
    Frame,
    TimeAxis,
    axis_lines,
    build_axis,
    downsample,
    empty_note,
    esc,
    human_bytes,
    marker_line,
    nice_step,
    num,
    polyline,
    vertical_break,
)
from orchestrator.run.deadline import format_duration

#: Rows of long lists shown before "and N more".
MAX_ROWS = 50
#: Points per line in a chart; more are averaged down.
MAX_POINTS = 300

SVG_WIDTH = 1000.0
LABEL_WIDTH = 210.0
RIGHT_PAD = 20.0
PLOT_WIDTH = SVG_WIDTH - LABEL_WIDTH - RIGHT_PAD
ROW_HEIGHT = 20.0
BAR_HEIGHT = 14.0

#: The obligations a report evidences, as short citations.
OBLIGATIONS = {
    "dora": (
        "DORA Art. 28(8)",
        "Regulation (EU) 2022/2554: exit strategies for ICT services supporting critical "
        "or important functions; exit plans documented, sufficiently tested and reviewed "
        "periodically.",
    ),
    "rts": (
        "RTS (EU) 2024/1773 Art. 10",
        "An exit plan per ICT third-party service that is realistic and feasible, with an "
        "implementation schedule compatible with the termination terms, covering "
        "unexpected termination, tested and reviewed.",
    ),
    "pra": (
        "PRA SS2/21 stressed exit",
        "A documented and tested plan for a stressed exit: leaving after the provider "
        "fails or ends the service without an orderly wind-down.",
    ),
}

#: Which obligations each section is evidence for, and how.
SECTION_EVIDENCE: dict[str, tuple[tuple[str, str], ...]] = {
    "objectives": (
        ("dora", "the exit plan was executed end to end and judged against its objectives"),
        ("rts", "the plan's schedule was tested against a deadline and notice window"),
        ("pra", "recovery time and data loss measured in a stressed exit"),
    ),
    "timeline": (
        ("rts", "the implementation schedule as it ran, against the cutoff and deadline"),
        ("pra", "how long a stressed exit takes, step by step"),
    ),
    "throughput": (("rts", "the transfer rates the plan's feasibility rests on, measured"),),
    "data": (
        ("dora", "which data left the provider and was proven intact by checksum"),
        ("rts", "what the plan covers, and what was descoped and why"),
    ),
    "placement": (("rts", "an alternative provider identified, probed and provisioned"),),
    "replay": (("dora", "the service brought up again on the alternative provider"),),
    "dns": (("pra", "users reach the service at its new home; the residual risk stated"),),
    "cleanup": (("dora", "the test touched no production system and left nothing behind"),),
    "trend": (
        ("dora", "tested and reviewed periodically: every drill kept and compared"),
        ("rts", "the plan is re-tested as data and services change"),
    ),
    "planner": (("rts", "the plan's assumptions (its forecast) checked against reality"),),
}

_VERDICT_CLASS = {
    "done": "pass",
    "failed": "fail",
    "deadline-missed": "fail",
    "objective-missed": "fail",
    "cancelled": "warn",
    "running": "neutral",
}

_CSS = """
:root { --ink: #212121; --muted: #616161; --line: #e0e0e0; --pass: #2e7d32;
  --fail: #c62828; --warn: #ef6c00; --neutral: #1565c0; }
* { box-sizing: border-box; }
html { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
  color: var(--ink); background: #fff; margin: 0 auto; max-width: 1100px; padding: 24px; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 17px; margin: 0 0 8px; border-bottom: 2px solid var(--line); padding-bottom: 4px; }
section { margin: 0 0 28px; }
.meta { color: var(--muted); margin: 0 0 12px; }
.verdict { border-left: 8px solid; padding: 12px 16px; margin: 12px 0 24px; font-size: 17px;
  font-weight: 600; background: #fafafa; }
.verdict.pass { border-color: var(--pass); color: var(--pass); }
.verdict.fail { border-color: var(--fail); color: var(--fail); }
.verdict.warn { border-color: var(--warn); color: var(--warn); }
.verdict.neutral { border-color: var(--neutral); color: var(--neutral); }
.verdict small { display: block; font-weight: 400; color: var(--ink); font-size: 14px; }
table { border-collapse: collapse; width: 100%; margin: 4px 0 8px; font-size: 13px; }
th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid var(--line);
  vertical-align: top; }
th { background: #f5f5f5; font-weight: 600; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
td .bytes { color: var(--muted); font-size: 12px; white-space: nowrap; }
tr.total td { font-weight: 600; border-top: 2px solid var(--ink); }
.ok { color: var(--pass); font-weight: 600; }
.bad { color: var(--fail); font-weight: 600; }
.unknown { color: var(--muted); }
.empty-note { color: var(--muted); font-style: italic; }
.evidence { color: var(--muted); font-size: 12px; margin: 4px 0 0; }
.evidence b { color: var(--ink); font-weight: 600; }
svg { width: 100%; height: auto; display: block; }
svg text { font: 11px system-ui, "DejaVu Sans", sans-serif; fill: var(--ink); }
svg .tick { fill: var(--muted); font-size: 10px; }
svg .row-label { font-size: 11px; }
svg .marker-label { font-weight: 600; font-size: 11px; }
svg .grid { stroke: var(--line); stroke-width: 1; }
svg .frame { fill: none; stroke: #bdbdbd; }
svg .row-band { fill: #fafafa; }
svg .bar.open { fill-opacity: 0.45; }
svg .axis-break { fill: #eeeeee; }
svg .axis-break-line { fill: none; stroke: #9e9e9e; stroke-width: 1; }
svg .empty { fill: var(--muted); font-style: italic; font-size: 13px; }
svg .p50 { stroke-width: 2; }
svg .p90 { stroke-width: 2; stroke-dasharray: 5 3; }
svg .now-line { stroke: #bdbdbd; stroke-dasharray: 2 3; fill: none; }
svg .rate { stroke-width: 1.8; }
footer { color: var(--muted); font-size: 12px; border-top: 1px solid var(--line); padding-top: 8px; }
@media print {
  body { padding: 0; max-width: none; font-size: 11px; }
  section { break-inside: avoid-page; }
  .verdict { background: none; }
}
@page { size: A4; margin: 12mm; }
"""


def render_html(report: RunReport) -> str:
    """The whole page as text (UTF-8 when written)."""
    axis = _time_axis(report)
    title = f"exitplan {report.command} report: {report.run_id}"
    body = [
        _header(report),
        _objectives(report),
        _timeline(report, axis),
        _throughput(report, axis),
        _data(report),
        _placement(report),
        _replay(report),
        _dns(report),
        _cleanup(report),
        _trend(report),
        _planner(report),
        _warnings(report),
        _evidence_summary(),
        _footer(report),
    ]
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta http-equiv="Content-Security-Policy" '
        "content=\"default-src 'none'; style-src 'unsafe-inline'; img-src data:\">\n"
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{esc(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )


# ---------------------------------------------------------------------------
# Sections
# ---------------------------------------------------------------------------


def headline(report: RunReport) -> str:
    """The verdict in a sentence: the report's own, or one made from its status."""
    if report.verdict:
        return report.verdict
    missed = [c.name for c in report.objective_checks() if c.met is False]
    totals = report.totals()
    saying = {
        "done": "Done: everything listed was saved and verified"
        if report.command != "drill"
        else "Drill passed: the exit worked and met its objectives",
        "failed": f"Failed: {totals['failed_items']} item(s) failed"
        + (
            f"; step(s) failed: {', '.join(s.id for s in report.steps if s.status == 'failed')}"
            if any(s.status == "failed" for s in report.steps)
            else ""
        ),
        "deadline-missed": "Deadline missed: the run did not finish by the cutoff",
        "objective-missed": f"Objective missed: {', '.join(missed) or 'see the objectives'}",
        "cancelled": f"Cancelled: carry on with exitplan resume {report.run_id}",
        "running": "Still running: this report is a snapshot",
    }
    return saying.get(report.status, f"Status: {report.status}")


def _header(report: RunReport) -> str:
    verdict_class = _VERDICT_CLASS.get(report.status, "neutral")
    facts = [
        ("run", report.run_id),
        ("command", f"exitplan {report.command}"),
        ("scenario", report.scenario or "-"),
        ("started", _when(report.started_at)),
        ("finished", _when(report.finished_at)),
        ("duration", _span(report.duration_s)),
        ("exit code", "-" if report.exit_code is None else str(report.exit_code)),
    ]
    meta = " &middot; ".join(f"{esc(k)}: <b>{esc(v)}</b>" for k, v in facts)
    return (
        "<header>\n"
        f"<h1>exitplan {esc(report.command)} report</h1>\n"
        f'<p class="meta">{meta}</p>\n'
        f'<div class="verdict {verdict_class}" id="verdict">{esc(headline(report))}'
        f"<small>status: {esc(report.status)}"
        + (f" &middot; scenario: {esc(report.scenario)}" if report.scenario else "")
        + "</small></div>\n</header>"
    )


def _objectives(report: RunReport) -> str:
    checks = report.objective_checks()
    rows = [
        [
            check.name,
            check.objective,
            check.measured,
            _met_cell(check.met),
            check.detail,
        ]
        for check in checks
    ]
    parts = []
    if report.deadline is None:
        parts.append('<p class="empty-note">No deadline was set for this run.</p>')
    if rows:
        parts.append(
            _table(
                ["objective", "target", "measured", "met", "how measured"],
                rows,
                raw_columns={3},
            )
        )
    elif report.deadline is not None:
        parts.append('<p class="empty-note">No objective to judge yet.</p>')
    if report.objectives is not None and report.objectives.every_s is not None:
        parts.append(
            f"<p>Drills are due every {esc(_span(report.objectives.every_s))} (objective).</p>"
        )
    return _section("objectives", "Objectives: RTO, RPO and the deadline", "".join(parts))


def _time_axis(report: RunReport) -> TimeAxis:
    moments: list[datetime] = [report.started_at]
    if report.finished_at:
        moments.append(report.finished_at)
    for step in report.steps:
        moments.extend(m for m in (step.started_at, step.finished_at) if m is not None)
    moments.extend(d.at for d in report.dns if d.at is not None)
    moments.extend(p.at for p in report.projections)
    moments.extend(t.at for t in report.throughput)
    activity_end = max(moments)
    markers = []
    if report.deadline is not None:
        markers = [report.deadline.cutoff, report.deadline.at]
    return build_axis(report.started_at, activity_end, markers)


def _timeline(report: RunReport, axis: TimeAxis) -> str:
    steps = list(report.steps)
    rows = len(steps) + (1 if report.dns else 0)
    top = 62.0
    frame = Frame(LABEL_WIDTH, top, PLOT_WIDTH, max(rows, 1) * ROW_HEIGHT + 8)
    height = frame.top + frame.height + 24
    parts = [
        f'<svg id="timeline" role="img" aria-label="timeline of every step" '
        f'viewBox="0 0 {num(SVG_WIDTH)} {num(height)}" xmlns="http://www.w3.org/2000/svg">'
    ]
    for index in range(rows):
        if index % 2 == 0:
            y = frame.top + 4 + index * ROW_HEIGHT
            parts.append(
                f'<rect class="row-band" x="0" y="{num(y)}" width="{num(SVG_WIDTH)}" '
                f'height="{num(ROW_HEIGHT)}"/>'
            )
    parts.extend(axis_lines(axis, frame))
    end_of_activity = axis.segments[0].end
    for index, step in enumerate(steps):
        y = frame.top + 4 + index * ROW_HEIGHT
        label = step.name if len(step.name) <= 32 else step.name[:31] + "…"
        parts.append(
            f'<text class="row-label" x="{num(LABEL_WIDTH - 8)}" y="{num(y + 14)}" '
            f'text-anchor="end"><title>{esc(step.name)}</title>{esc(label)}</text>'
        )
        colour = STATUS_COLOURS.get(step.status, "#757575")
        if step.started_at is None:
            parts.append(
                f'<text class="tick" x="{num(frame.left + 4)}" y="{num(y + 14)}">not started</text>'
            )
            continue
        finish = step.finished_at or min(report.finished_at or end_of_activity, end_of_activity)
        x1 = frame.x(axis.fraction(step.started_at))
        x2 = frame.x(axis.fraction(finish))
        open_class = "" if step.finished_at else " open"
        tooltip = f"{step.name}: {step.status}, {_span(step.duration_s)}" + (
            f" — {step.detail}" if step.detail else ""
        )
        parts.append(
            f'<rect id="step-{index}" class="bar step status-{esc(_css_word(step.status))}{open_class}" '
            f'x="{num(x1)}" y="{num(y + (ROW_HEIGHT - BAR_HEIGHT) / 2)}" '
            f'width="{num(max(x2 - x1, 2.0))}" height="{num(BAR_HEIGHT)}" fill="{colour}" rx="2">'
            f"<title>{esc(tooltip)}</title></rect>"
        )
    if report.dns:
        y = frame.top + 4 + len(steps) * ROW_HEIGHT
        parts.append(
            f'<text class="row-label" x="{num(LABEL_WIDTH - 8)}" y="{num(y + 14)}" '
            f'text-anchor="end">DNS cutover</text>'
        )
        for index, dns in enumerate(report.dns):
            if dns.at is None:
                continue
            x = frame.x(axis.fraction(dns.at))
            cy = y + ROW_HEIGHT / 2
            colour = STATUS_COLOURS.get(dns.status, "#757575")
            tooltip = f"{dns.name}: {dns.status}" + (
                f"; residual risk: {dns.residual_risk}" if dns.residual_risk else ""
            )
            parts.append(
                f'<path id="dns-{index}" class="dns-step" d="M{num(x)},{num(cy - 7)} '
                f'l7,7 l-7,7 l-7,-7 z" fill="{colour}"><title>{esc(tooltip)}</title></path>'
            )
    if not steps:
        parts.append(empty_note(frame, "No steps recorded for this run"))
    parts.append(
        f'<rect class="frame" x="{num(frame.left)}" y="{num(frame.top)}" '
        f'width="{num(frame.width)}" height="{num(frame.height)}"/>'
    )
    parts.extend(marker_line("marker-start", "start", report.started_at, axis, frame, row=0))
    if report.finished_at is not None:
        parts.extend(marker_line("marker-end", "finished", report.finished_at, axis, frame, row=1))
    if report.deadline is not None:
        parts.extend(
            marker_line(
                "marker-cutoff", "deadline minus margin", report.deadline.cutoff, axis, frame, row=2
            )
        )
        parts.extend(
            marker_line("marker-deadline", "deadline", report.deadline.at, axis, frame, row=3)
        )
    parts.append("</svg>")
    legend = (
        '<p class="evidence">Bars: '
        + ", ".join(
            f'<span style="color:{colour}">&#9632;</span> {esc(status)}'
            for status, colour in STATUS_COLOURS.items()
        )
        + ". Offsets are from the start"
        + (
            f"; the deadline is {esc(_when(report.deadline.at))} with a "
            f"{esc(_span(report.deadline.safety_margin_s))} safety margin"
            if report.deadline
            else "; no deadline was set"
        )
        + (". The shaded band hides time in which nothing happened." if axis.broken else ".")
        + "</p>"
    )
    return _section(
        "timeline",
        "Timeline",
        "\n".join(parts) + legend + _projection_chart(report, axis),
    )


def _projection_chart(report: RunReport, axis: TimeAxis) -> str:
    """How the projected finish moved: x when it was projected, y the finish projected."""
    samples = report.projections
    finishes = [t for s in samples for t in (s.p50_finish, s.p90_finish) if t is not None]
    markers = list(finishes)
    if report.deadline is not None:
        markers += [report.deadline.cutoff, report.deadline.at]
    y_axis = build_axis(report.started_at, axis.segments[0].end, markers)
    frame = Frame(LABEL_WIDTH, 30, PLOT_WIDTH, 170)
    height = frame.top + frame.height + 24
    parts = [
        f'<svg id="projection" role="img" aria-label="projected finish over the run" '
        f'viewBox="0 0 {num(SVG_WIDTH)} {num(height)}" xmlns="http://www.w3.org/2000/svg">',
        f'<text class="marker-label" x="{num(frame.left)}" y="{num(frame.top - 16)}">'
        "Projected finish (offset from the start), as projected at each moment of the run</text>",
    ]
    parts.extend(axis_lines(axis, frame))
    for fraction, label in y_axis.ticks():
        y = frame.y(fraction)
        parts.append(
            f'<line class="grid" x1="{num(frame.left)}" y1="{num(y)}" '
            f'x2="{num(frame.left + frame.width)}" y2="{num(y)}"/>'
            f'<text class="tick" x="{num(frame.left - 4)}" y="{num(y + 3)}" '
            f'text-anchor="end">{esc(label)}</text>'
        )
    parts.extend(vertical_break(y_axis, frame))
    if report.deadline is not None:
        for marker_id, label, moment, colour in (
            ("proj-cutoff", "deadline minus margin", report.deadline.cutoff, "#ef6c00"),
            ("proj-deadline", "deadline", report.deadline.at, "#c62828"),
        ):
            y = frame.y(y_axis.fraction(moment))
            parts.append(
                f'<g id="{marker_id}"><line x1="{num(frame.left)}" y1="{num(y)}" '
                f'x2="{num(frame.left + frame.width)}" y2="{num(y)}" stroke="{colour}" '
                f'stroke-width="1.5" stroke-dasharray="6 3"/>'
                f'<text x="{num(frame.left + frame.width - 4)}" y="{num(y - 3)}" '
                f'text-anchor="end" fill="{colour}" class="marker-label">{esc(label)}</text></g>'
            )
    # Where "projected finish = now" lies: a projection meets it when the run ends.
    now_points = [
        (frame.x(axis.fraction(t)), frame.y(y_axis.fraction(t)))
        for t in _spread(report.started_at, axis.segments[0].end, 24)
    ]
    if samples:
        parts.append(polyline(now_points, "now-line", "#bdbdbd"))
    drawn = False
    for css_class, colour, pick in (
        ("p90", "#6a1b9a", lambda s: s.p90_finish),
        ("p50", "#1565c0", lambda s: s.p50_finish),
    ):
        series = [(s.at, pick(s)) for s in samples if pick(s) is not None]
        if not series:
            continue
        offsets = downsample(
            [(at, (finish - report.started_at).total_seconds()) for at, finish in series],
            MAX_POINTS,
        )
        points = [
            (
                frame.x(axis.fraction(at)),
                frame.y(y_axis.fraction(report.started_at + timedelta(seconds=offset))),
            )
            for at, offset in offsets
        ]
        parts.append(f'<g id="projection-{css_class}">{polyline(points, css_class, colour)}</g>')
        drawn = True
    if not drawn:
        parts.append(empty_note(frame, "No projection was recorded during this run"))
    parts.append(
        f'<rect class="frame" x="{num(frame.left)}" y="{num(frame.top)}" '
        f'width="{num(frame.width)}" height="{num(frame.height)}"/>'
    )
    parts.append("</svg>")
    legend = (
        '<p class="evidence">Projected finish as the run went on: '
        '<span style="color:#1565c0">&#9644;</span> P50, '
        '<span style="color:#6a1b9a">&#9644;</span> P90 (dashed); the dotted diagonal is '
        '"now": where a projection meets it, the work is done. A line rising towards the '
        "deadline means the run was slipping.</p>"
    )
    return "\n".join(parts) + legend


def _spread(start: datetime, end: datetime, count: int) -> list[datetime]:
    step = (end - start) / max(count - 1, 1)
    return [start + step * i for i in range(count)]


def _throughput(report: RunReport, axis: TimeAxis) -> str:
    frame = Frame(LABEL_WIDTH, 16, PLOT_WIDTH, 150)
    height = frame.top + frame.height + 24
    series: dict[str, list[tuple[datetime, float]]] = {}
    for sample in sorted(report.throughput, key=lambda s: s.at):
        series.setdefault(sample.kind, []).append((sample.at, sample.bytes_per_s))
    peak = max((v for points in series.values() for _, v in points), default=0.0)
    top = peak * 1.1 if peak > 0 else 1.0
    parts = [
        f'<svg id="throughput" role="img" aria-label="throughput per kind over time" '
        f'viewBox="0 0 {num(SVG_WIDTH)} {num(height)}" xmlns="http://www.w3.org/2000/svg">'
    ]
    parts.extend(axis_lines(axis, frame))
    for i in range(5 if series else 0):
        value = top * i / 4
        y = frame.y(i / 4)
        parts.append(
            f'<text class="tick" x="{num(frame.left - 4)}" y="{num(y + 3)}" '
            f'text-anchor="end">{esc(human_bytes(value))}/s</text>'
        )
    legend = []
    for index, (kind, points) in enumerate(series.items()):
        colour = KIND_COLOURS[index % len(KIND_COLOURS)]
        coords = [
            (frame.x(axis.fraction(at)), frame.y(value / top))
            for at, value in downsample(points, MAX_POINTS)
        ]
        # A single sample is a dot: a one-point line would draw nothing.
        drawn = polyline(coords, "rate", colour) + "".join(
            f'<circle cx="{num(x)}" cy="{num(y)}" r="2.5" fill="{colour}"/>'
            for x, y in (coords if len(coords) == 1 else [])
        )
        parts.append(
            f'<g id="throughput-{index}" class="kind-series"><title>{esc(kind)}</title>{drawn}</g>'
        )
        legend.append(f'<span style="color:{colour}">&#9644;</span> {esc(kind)}')
    if not series:
        parts.append(empty_note(frame, "No throughput was recorded during this run"))
    parts.append(
        f'<rect class="frame" x="{num(frame.left)}" y="{num(frame.top)}" '
        f'width="{num(frame.width)}" height="{num(frame.height)}"/>'
    )
    parts.append("</svg>")
    note = (
        f'<p class="evidence">Bytes saved per second, per kind: {", ".join(legend)}.</p>'
        if legend
        else ""
    )
    return _section("throughput", "Throughput per kind", "\n".join(parts) + note)


def _data(report: RunReport) -> str:
    headers = [
        "kind",
        "tier",
        "listed",
        "saved",
        "verified this run",
        "already verified",
        "descoped",
        "failed",
        "unchecked",
        "not saved",
        "complete",
    ]
    rows = [_data_row(group) for group in report.data]
    totals = report.totals()
    if report.data:
        rows.append(
            [
                "total",
                "",
                _count(totals["listed_items"], totals["listed_bytes"]),
                _count(totals["saved_items"], totals["saved_bytes"]),
                str(sum(g.verified_items for g in report.data)),
                str(sum(g.already_verified_items for g in report.data)),
                _count(totals["descoped_items"], totals["descoped_bytes"]),
                str(totals["failed_items"]),
                str(totals["unchecked_items"]),
                str(sum(g.unsaved_items for g in report.data)),
                "",
            ]
        )
    parts = [
        _table(
            headers,
            rows,
            numeric={2, 3, 4, 5, 6, 7, 8, 9},
            raw_columns={2, 3, 6, 10},
            total_row=bool(report.data),
            empty="No data was listed in this run.",
        )
    ]
    reasons = [
        (group.label, d.reason, d.items, d.bytes) for group in report.data for d in group.descoped
    ]
    if reasons:
        parts.append("<h3>Descoped, and why</h3>")
        parts.append(
            _table(
                ["group", "reason", "items", "bytes"],
                [[g, r, str(i), human_bytes(b)] for g, r, i, b in reasons],
                numeric={2, 3},
            )
        )
    if report.failed:
        total_failed = totals["failed_items"]
        parts.append("<h3>Failed items</h3>")
        parts.append(
            _table(
                ["destination", "key", "error"],
                [[f.destination, f.key, f.error] for f in report.failed[:MAX_ROWS]],
            )
        )
        more = max(total_failed, len(report.failed)) - min(len(report.failed), MAX_ROWS)
        if more > 0:
            parts.append(
                f'<p class="empty-note">and {more} more failed item(s): '
                f"exitplan status {esc(report.run_id)} lists them.</p>"
            )
    if report.destinations:
        parts.append(
            "<p>Saved to: "
            + "; ".join(f"<b>{esc(d.name)}</b> ({esc(d.where)})" for d in report.destinations)
            + ".</p>"
        )
    return _section("data", "Data: saved, verified, descoped, failed", "".join(parts))


def _data_row(group: DataGroup) -> list[str]:
    return [
        group.kind,
        group.tier or "all",
        _count(group.listed_items, group.listed_bytes)
        + ("" if group.listing_done else "<br>(listing unfinished)"),
        _count(group.saved_items, group.saved_bytes),
        str(group.verified_items),
        str(group.already_verified_items),
        _count(group.descoped_items, group.descoped_bytes),
        str(group.failed_items),
        str(group.unchecked_items),
        str(group.unsaved_items),
        _complete_cell(group),
    ]


def _complete_cell(group: DataGroup) -> str:
    if group.complete:
        return _met_cell(True)
    if group.listing_done and group.saved_items + group.descoped_items == group.listed_items:
        return '<span class="unknown">descoped</span>'
    return _met_cell(False)


def _placement(report: RunReport) -> str:
    placement = report.placement
    if placement is None:
        return _section(
            "placement",
            "Placement: the new home",
            _not_in_run(report, "no host was chosen"),
        )
    parts = []
    if placement.chosen is not None:
        chosen = placement.chosen
        where = chosen.address or "-"
        if chosen.port is not None:
            where += f":{chosen.port}"
        parts.append(
            f"<p>Chosen: <b>{esc(chosen.candidate)}</b> ({esc(chosen.target)}) at "
            f"<b>{esc(where)}</b>"
            + (f" over {esc(chosen.transport)}" if chosen.transport else "")
            + ".</p>"
        )
    elif placement.summary:
        parts.append(f'<p class="bad">{esc(placement.summary)}</p>')
    if placement.attempts:
        parts.append(
            _table(
                ["candidate", "target", "outcome", "message"],
                [[a.candidate, a.target, a.outcome, a.message] for a in placement.attempts],
            )
        )
    if placement.candidates:
        parts.append("<h3>Probe ranking</h3>")
        parts.append(
            _table(
                ["rank", "candidate", "target", "status", "size", "ready in", "price/h", "why"],
                [
                    [
                        str(c.rank),
                        c.candidate,
                        c.target,
                        c.status if c.refusal is None else f"refused: {c.refusal}",
                        c.size or "-",
                        _span(c.estimated_ready_s),
                        "-" if c.price_hourly is None else f"{c.price_hourly:.3f}",
                        "; ".join(c.reasons),
                    ]
                    for c in placement.candidates[:MAX_ROWS]
                ],
                numeric={0, 5, 6},
            )
        )
    return _section("placement", "Placement: the new home", "".join(parts))


def _replay(report: RunReport) -> str:
    if not report.replay:
        return _section(
            "replay",
            "Replay: the service on its new host",
            _not_in_run(report, "no playbook was replayed"),
        )
    rows = [
        [
            step.host,
            step.name,
            _status_cell(step.status),
            "-" if step.changed is None else ("changed" if step.changed else "no change"),
            _span(step.duration_s),
            step.detail,
        ]
        for step in report.replay
    ]
    return _section(
        "replay",
        "Replay: the service on its new host",
        _table(
            ["host", "step", "status", "change", "took", "detail"],
            rows,
            raw_columns={2},
            numeric={4},
        ),
    )


def _dns(report: RunReport) -> str:
    if not report.dns:
        return _section("dns", "DNS cutover", _not_in_run(report, "no DNS change was made"))
    rows = [
        [
            step.name,
            _when(step.at),
            _status_cell(step.status),
            step.residual_risk or "-",
            step.detail,
        ]
        for step in report.dns
    ]
    return _section(
        "dns",
        "DNS cutover",
        _table(["step", "at", "status", "residual risk", "detail"], rows, raw_columns={2}),
    )


def _cleanup(report: RunReport) -> str:
    if not report.cleanup:
        body = (
            '<p class="empty-note">Nothing to clean up was recorded.</p>'
            if report.command == "drill"
            else _not_in_run(report, "only drills clean up after themselves")
        )
        return _section("cleanup", "Cleanup", body)
    failed = sum(1 for c in report.cleanup if c.status == "failed")
    summary = (
        f'<p class="bad">{failed} of {len(report.cleanup)} cleanup action(s) failed: '
        "something the drill created may be left behind.</p>"
        if failed
        else f'<p class="ok">All {len(report.cleanup)} cleanup action(s) succeeded.</p>'
    )
    rows = [[c.what, _status_cell(c.status), c.error or ""] for c in report.cleanup]
    return _section(
        "cleanup",
        "Cleanup",
        summary + _table(["what", "status", "error"], rows, raw_columns={1}),
    )


def _trend(report: RunReport) -> str:
    points = sorted(report.trend, key=lambda p: p.at)
    if not points:
        body = (
            '<p class="empty-note">No earlier drill is recorded: this is the first.</p>'
            if report.command == "drill"
            else _not_in_run(report, "the trend is kept for drills")
        )
        return _section("trend", "Trend of earlier drills", body)
    current_rto = report.rto_s
    bars = [(p.at, p.rto_s, p.bytes, p.run_id, p.status) for p in points]
    if report.command == "drill":
        bars.append(
            (
                report.started_at,
                current_rto,
                report.totals()["saved_bytes"],
                report.run_id,
                report.status,
            )
        )
    objective = report.objectives.rto_s if report.objectives else None
    peak = max([b[1] or 0.0 for b in bars] + [objective or 0.0]) or 1.0
    # Round the scale up to 4 round steps, so the ticks read 1h, 2h, 3h, 4h.
    scale = nice_step(peak * 1.05 / 4) * 4
    frame = Frame(60, 16, SVG_WIDTH - 80, 140)
    height = frame.top + frame.height + 30
    width_each = frame.width / len(bars)
    parts = [
        f'<svg id="trend" role="img" aria-label="RTO of earlier drills" '
        f'viewBox="0 0 {num(SVG_WIDTH)} {num(height)}" xmlns="http://www.w3.org/2000/svg">'
    ]
    for i in range(5):
        y = frame.y(i / 4)
        parts.append(
            f'<line class="grid" x1="{num(frame.left)}" y1="{num(y)}" '
            f'x2="{num(frame.left + frame.width)}" y2="{num(y)}"/>'
            f'<text class="tick" x="{num(frame.left - 4)}" y="{num(y + 3)}" '
            f'text-anchor="end">{esc(_span(scale * i / 4))}</text>'
        )
    for index, (at, rto, _bytes, run_id, status) in enumerate(bars):
        x = frame.left + index * width_each + width_each * 0.2
        w = max(width_each * 0.6, 2.0)
        colour = STATUS_COLOURS["done"] if status == "done" else STATUS_COLOURS["failed"]
        if run_id == report.run_id:
            colour = "#1565c0"
        if rto is not None:
            h = frame.height * rto / scale
            parts.append(
                f'<rect id="trend-{index}" x="{num(x)}" y="{num(frame.top + frame.height - h)}" '
                f'width="{num(w)}" height="{num(h)}" fill="{colour}">'
                f"<title>{esc(run_id)}: RTO {esc(_span(rto))}</title></rect>"
            )
        if len(bars) <= 24 or index % max(1, len(bars) // 12) == 0:
            parts.append(
                f'<text class="tick" x="{num(x + w / 2)}" y="{num(frame.top + frame.height + 14)}" '
                f'text-anchor="middle">{esc(at.strftime("%Y-%m-%d"))}</text>'
            )
    if objective is not None:
        y = frame.y(objective / scale)
        parts.append(
            f'<g id="trend-objective"><line x1="{num(frame.left)}" y1="{num(y)}" '
            f'x2="{num(frame.left + frame.width)}" y2="{num(y)}" stroke="#c62828" '
            f'stroke-dasharray="6 3"/><text x="{num(frame.left + frame.width)}" '
            f'y="{num(y - 3)}" text-anchor="end" fill="#c62828" class="marker-label">'
            f"RTO objective {esc(_span(objective))}</text></g>"
        )
    parts.append("</svg>")
    rows = [
        [
            _when(at),
            run_id,
            status,
            _span(rto),
            "-" if size is None else human_bytes(size),
        ]
        for at, rto, size, run_id, status in bars[-MAX_ROWS:]
    ]
    table = _table(["started", "run", "status", "RTO", "data"], rows, numeric={3, 4})
    return _section("trend", "Trend of earlier drills", "\n".join(parts) + table)


def _planner(report: RunReport) -> str:
    if not report.prediction_errors:
        return _section(
            "planner",
            "Planner accuracy",
            '<p class="empty-note">The planner made no forecast to compare with this run.</p>',
        )
    rows = [
        [
            p.scope,
            _when(p.predicted_at),
            _when(p.predicted_finish),
            _when(p.actual_finish),
            ("+" if p.error_s >= 0 else "-") + _span(abs(p.error_s)),
            "-" if p.error_ratio is None else f"{p.error_ratio:+.1%}",
        ]
        for p in report.prediction_errors
    ]
    return _section(
        "planner",
        "Planner accuracy",
        _table(
            [
                "scope",
                "forecast made",
                "forecast finish (P50)",
                "actual finish",
                "error",
                "error share",
            ],
            rows,
            numeric={4, 5},
        ),
    )


def _warnings(report: RunReport) -> str:
    if not report.warnings:
        return _section("warnings", "Warnings", '<p class="empty-note">None.</p>', evidence=False)
    items = "".join(f"<li>{esc(w)}</li>" for w in report.warnings[:MAX_ROWS])
    more = len(report.warnings) - MAX_ROWS
    extra = f'<p class="empty-note">and {more} more.</p>' if more > 0 else ""
    return _section("warnings", "Warnings", f"<ul>{items}</ul>{extra}", evidence=False)


def _evidence_summary() -> str:
    rows = []
    for key, (citation, text) in OBLIGATIONS.items():
        sections = [
            name for name, pairs in SECTION_EVIDENCE.items() if any(k == key for k, _ in pairs)
        ]
        rows.append([citation, text, ", ".join(sections)])
    return _section(
        "evidence",
        "What this report evidences",
        _table(["obligation", "what it asks (in short)", "sections"], rows)
        + '<p class="evidence">A report is evidence of one test; the obligations also ask '
        "for documented plans, governance and review that no tool produces.</p>",
        evidence=False,
    )


def _footer(report: RunReport) -> str:
    return (
        f"<footer>Written by exitplan from report.json (schema version "
        f"{esc(report.schema_version)}) of run {esc(report.run_id)}. Times are shown as "
        "ISO 8601 with their UTC offset.</footer>"
    )


# ---------------------------------------------------------------------------
# Small pieces
# ---------------------------------------------------------------------------


def _section(section_id: str, title: str, body: str, *, evidence: bool = True) -> str:
    note = ""
    if evidence and section_id in SECTION_EVIDENCE:
        note = (
            '<p class="evidence">Evidence for: '
            + "; ".join(
                f"<b>{esc(OBLIGATIONS[key][0])}</b>: {esc(text)}"
                for key, text in SECTION_EVIDENCE[section_id]
            )
            + ".</p>"
        )
    return f'<section id="{esc(section_id)}">\n<h2>{esc(title)}</h2>\n{body}\n{note}\n</section>'


def _table(
    headers: Sequence[str],
    rows: Iterable[Sequence[str]],
    *,
    numeric: set[int] | None = None,
    raw_columns: set[int] | None = None,
    total_row: bool = False,
    empty: str = "Nothing recorded.",
) -> str:
    """A table; cells are escaped except ``raw_columns`` (already-built markup)."""
    numeric = numeric or set()
    raw_columns = raw_columns or set()
    body = []
    all_rows = list(rows)
    for r, row in enumerate(all_rows):
        cells = []
        for c, value in enumerate(row):
            text = value if c in raw_columns else esc(value)
            css = ' class="n"' if c in numeric else ""
            cells.append(f"<td{css}>{text}</td>")
        row_class = ' class="total"' if total_row and r == len(all_rows) - 1 else ""
        body.append(f"<tr{row_class}>{''.join(cells)}</tr>")
    if not body:
        return f'<p class="empty-note">{esc(empty)}</p>'
    numeric_class = ' class="n"'
    head = "".join(
        f"<th{numeric_class if i in numeric else ''}>{esc(h)}</th>" for i, h in enumerate(headers)
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _met_cell(met: bool | None) -> str:
    if met is None:
        return '<span class="unknown">n/a</span>'
    return '<span class="ok">yes</span>' if met else '<span class="bad">NO</span>'


def _status_cell(status: str) -> str:
    css = {"done": "ok", "failed": "bad", "cancelled": "bad"}.get(status, "unknown")
    return f'<span class="{css}">{esc(status)}</span>'


def _css_word(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch == "-" else "-" for ch in text.lower())


def _count(items: int, size: int) -> str:
    """Items, and their bytes on a second line (markup: put in a raw column)."""
    if not size:
        return str(items)
    return f'{items}<br><span class="bytes">{esc(human_bytes(size))}</span>'


def _when(moment: datetime | None) -> str:
    return "-" if moment is None else moment.isoformat(timespec="seconds")


def _span(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if 0 < abs(seconds) < 10 and seconds != int(seconds):
        return f"{seconds:.1f}s"
    return format_duration(timedelta(seconds=seconds))


def _not_in_run(report: RunReport, why: str) -> str:
    if report.command == "export":
        return f'<p class="empty-note">Not part of exitplan export: {esc(why)}.</p>'
    return f'<p class="empty-note">Nothing recorded in this run: {esc(why)}.</p>'
