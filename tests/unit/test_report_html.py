"""report.html: self-contained, escaped, complete, and sane for empty and huge runs."""

from __future__ import annotations

import dataclasses
import re
import xml.etree.ElementTree as ET
from datetime import timedelta
from html.parser import HTMLParser

import pytest

from orchestrator.report.html_report import OBLIGATIONS, render_html
from orchestrator.report.model import (
    DataGroup,
    Deadline,
    DnsStep,
    FailedItem,
    ProjectionSample,
    ReplayStep,
    RunReport,
    Step,
    ThroughputSample,
)
from orchestrator.report.svg import build_axis, downsample
from tests.support.report_samples import START, drill_report, empty_report, export_report

HOSTILE = "<script>alert('x')</script>\"&'"


def svgs(page: str) -> dict[str, ET.Element]:
    """Every inline SVG by id, parsed as XML: a malformed chart fails here."""
    found = {}
    for match in re.finditer(r"<svg\b.*?</svg>", page, re.S):
        # Without the namespace, ElementTree finds children by their plain names.
        element = ET.fromstring(match.group(0).replace(' xmlns="http://www.w3.org/2000/svg"', ""))
        found[element.get("id")] = element
    return found


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.attributes: list[tuple[str, str | None]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attributes.extend(attrs)


def parsed(page: str) -> _Collector:
    collector = _Collector()
    collector.feed(page)
    return collector


@pytest.mark.parametrize("make", [drill_report, export_report, empty_report])
def test_the_page_is_self_contained_without_script(make):
    page = render_html(make())
    html = parsed(page)
    assert "script" not in html.tags and "iframe" not in html.tags and "link" not in html.tags
    for name, value in html.attributes:
        assert not name.startswith("on"), f"event handler {name}"
        if name in ("src", "href", "srcset", "action"):
            raise AssertionError(f"{name}={value!r}: the page must load nothing")
    # Only the SVG namespace URI, which loads nothing, may look like a URL.
    urls = set(re.findall(r"https?://[^\s\"'<>)]+", page))
    assert urls <= {"http://www.w3.org/2000/svg"}
    assert "url(" not in page and "@import" not in page
    assert "default-src 'none'" in page  # and the browser is told so


def test_every_string_from_the_report_is_escaped():
    report = dataclasses.replace(
        drill_report(),
        run_id=HOSTILE,
        scenario=HOSTILE,
        verdict=HOSTILE,
        steps=(Step(HOSTILE, HOSTILE, "failed", START, START + timedelta(seconds=5), HOSTILE),),
        data=(DataGroup(HOSTILE, HOSTILE, listed_items=1, listed_bytes=1),),
        failed=(FailedItem(HOSTILE, HOSTILE, HOSTILE),),
        replay=(ReplayStep(HOSTILE, HOSTILE, HOSTILE, HOSTILE, detail=HOSTILE),),
        dns=(DnsStep(HOSTILE, HOSTILE, START, HOSTILE, HOSTILE),),
        warnings=(HOSTILE,),
    )
    page = render_html(report)
    assert "<script" not in page and "alert('x')" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;&quot;&amp;&#x27;" in page
    svgs(page)  # still well-formed XML with hostile text inside


def test_the_timeline_has_a_bar_per_step_and_the_three_markers():
    report = drill_report()
    timeline = svgs(render_html(report))["timeline"]
    bars = [e for e in timeline.iter() if (e.get("class") or "").startswith("bar step")]
    assert len(bars) == len(report.steps)
    ids = {e.get("id") for e in timeline.iter()}
    assert {"marker-start", "marker-end", "marker-cutoff", "marker-deadline"} <= ids
    assert {f"dns-{i}" for i in range(len(report.dns))} <= ids
    # Bars keep time order: the export of S3 starts after the inventory does.
    x = {b.get("id"): float(b.get("x")) for b in bars}
    assert x["step-0"] < x["step-3"]


def test_a_run_without_a_deadline_has_no_deadline_markers_and_says_so():
    report = dataclasses.replace(drill_report(), deadline=None)
    page = render_html(report)
    ids = {e.get("id") for e in svgs(page)["timeline"].iter()}
    assert "marker-start" in ids and "marker-cutoff" not in ids and "marker-deadline" not in ids
    assert "No deadline was set for this run." in page


def test_a_run_with_no_steps_renders_every_section():
    page = render_html(empty_report())
    charts = svgs(page)
    assert {"timeline", "projection", "throughput"} <= set(charts)
    assert "No steps recorded for this run" in page
    assert "No projection was recorded during this run" in page
    for section in ("objectives", "timeline", "data", "replay", "dns", "cleanup", "trend"):
        assert f'<section id="{section}">' in page


def test_a_far_deadline_breaks_the_axis_so_the_run_stays_readable():
    report = drill_report()  # a 47-minute run, 30 hours of notice
    timeline = svgs(render_html(report))["timeline"]
    assert any(e.get("class") == "axis-break" for e in timeline.iter())
    bars = [e for e in timeline.iter() if (e.get("class") or "").startswith("bar step")]
    export_s3 = next(b for b in bars if b.get("id") == "step-3")
    assert float(export_s3.get("width")) > 100  # not a sliver next to a 30-hour axis


def test_ten_thousand_objects_are_aggregated_into_a_small_page():
    groups = tuple(
        DataGroup(kind, tier, True, 1667, 1667 * 4096, 1600, 1600 * 4096, failed_items=67)
        for kind in ("s3", "dynamodb", "ebs")
        for tier in ("critical", "bulk")
    )
    failures = tuple(FailedItem("vault", f"s3/k-{i}", "boom", "s3") for i in range(10_000))
    report = dataclasses.replace(export_report(), data=groups, failed=failures)
    page = render_html(report)
    assert len(page) < 200_000
    assert page.count("s3/k-") == 50
    assert "and 9950 more failed item(s)" in page
    assert "10002" in page  # the listed total (6 x 1667)


def test_each_section_names_the_obligation_it_evidences():
    page = render_html(drill_report())
    for citation, _ in OBLIGATIONS.values():
        assert citation in page
    timeline = page.split('<section id="timeline">')[1].split("</section>")[0]
    assert "RTS (EU) 2024/1773 Art. 10" in timeline and "PRA SS2/21 stressed exit" in timeline
    trend = page.split('<section id="trend">')[1].split("</section>")[0]
    assert "DORA Art. 28(8)" in trend


def test_the_verdict_comes_first_and_a_failure_reads_as_one():
    page = render_html(export_report())
    assert page.index('id="verdict"') < page.index('<section id="objectives">')
    assert 'class="verdict fail"' in page and "Failed: 1 item(s) failed" in page


def test_the_time_axis_is_monotonic_and_clamps():
    start = START
    axis = build_axis(start, start + timedelta(minutes=10), [start + timedelta(hours=30)])
    assert axis.broken
    moments = [start + timedelta(minutes=m) for m in range(0, 30 * 60 + 200, 7)]
    fractions = [axis.fraction(m) for m in moments]
    assert fractions == sorted(fractions)
    assert axis.fraction(start - timedelta(days=1)) == 0.0
    assert axis.fraction(start + timedelta(days=9)) == 1.0
    # The run keeps three quarters of the width.
    assert axis.fraction(start + timedelta(minutes=10)) > 0.7
    near = build_axis(start, start + timedelta(minutes=10), [start + timedelta(minutes=25)])
    assert not near.broken and near.fraction(start + timedelta(minutes=25)) > 0.95


def test_long_series_are_averaged_down():
    points = [(START + timedelta(seconds=i), float(i % 2)) for i in range(10_000)]
    reduced = downsample(points, 300)
    assert len(reduced) <= 300
    assert all(abs(v - 0.5) < 0.01 for _, v in reduced)


def test_a_deadline_before_the_finish_is_drawn_inside_the_run():
    report = RunReport(
        run_id="late",
        command="migrate",
        status="deadline-missed",
        started_at=START,
        finished_at=START + timedelta(minutes=30),
        deadline=Deadline(START + timedelta(minutes=20), safety_margin_s=300),
        steps=(Step("export:s3", "export:s3", "cancelled", START, START + timedelta(minutes=30)),),
    )
    timeline = svgs(render_html(report))["timeline"]
    lines = {
        g.get("id"): float(g.find("line").get("x1"))
        for g in timeline.iter()
        if g.get("id", "").startswith("marker-")
    }
    assert (
        lines["marker-start"]
        < lines["marker-cutoff"]
        < lines["marker-deadline"]
        < lines["marker-end"]
    )


def test_a_report_written_mid_run_draws_the_open_step_to_now():
    report = RunReport(
        run_id="live",
        command="migrate",
        status="running",
        started_at=START,
        steps=(
            Step("inventory", "inventory", "done", START, START + timedelta(seconds=20)),
            Step("export:s3", "export:s3", "running", START + timedelta(seconds=20), None),
        ),
        throughput=(ThroughputSample(START + timedelta(seconds=40), "s3", 1e6),),
        projections=(
            ProjectionSample(START + timedelta(seconds=40), START + timedelta(minutes=5)),
        ),
    )
    page = render_html(report)
    timeline = svgs(page)["timeline"]
    open_bar = next(e for e in timeline.iter() if e.get("id") == "step-1")
    assert "open" in open_bar.get("class") and float(open_bar.get("width")) > 10
    assert "marker-end" not in {e.get("id") for e in timeline.iter()}
    assert "Still running" in page
    dots = [e for e in svgs(page)["throughput"].iter() if e.tag == "circle"]
    assert len(dots) == 1
