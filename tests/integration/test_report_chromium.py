"""A person opens report.html: headless Chromium renders the timeline (a real browser).

Fails in CI and skips elsewhere when Debian's ``chromium`` is missing.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from orchestrator.report.run_report import write_reports
from orchestrator.report.svg import STATUS_COLOURS
from tests.support.chromium import (
    Image,
    decode_png,
    dump_dom,
    print_pdf,
    require_chromium,
    screenshot,
)
from tests.support.report_samples import drill_report, empty_report

WIDTH, HEIGHT = 1280, 2000
BAR_GREEN = tuple(int(STATUS_COLOURS["done"][i : i + 2], 16) for i in (1, 3, 5))


def white(r: int, g: int, b: int) -> bool:
    return r > 250 and g > 250 and b > 250


def is_bar_green(r: int, g: int, b: int) -> bool:
    return (r, g, b) == BAR_GREEN


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> dict[str, tuple[Image, str]]:
    """Each sample report written to disk, screenshotted and its DOM dumped, once."""
    require_chromium()
    base = tmp_path_factory.mktemp("chromium")
    drill = drill_report()
    samples = {
        "drill": drill,
        "drill-without-steps": dataclasses.replace(drill, steps=()),
        "no-deadline": dataclasses.replace(drill, deadline=None),
        "empty": empty_report(),
    }
    out = {}
    for name, report in samples.items():
        files = write_reports(base / name, report)
        png = screenshot(
            files.html, base / f"{name}.png", base / f"profile-{name}", width=WIDTH, height=HEIGHT
        )
        dom = dump_dom(files.html, base / f"profile-{name}-dom")
        out[name] = (decode_png(png), dom)
    return out


def test_the_drill_report_renders_a_page_not_a_blank(rendered):
    image, _ = rendered["drill"]
    assert (image.width, image.height) == (WIDTH, HEIGHT)
    inked = image.width * image.height - image.count(white)
    assert inked > 0.05 * image.width * image.height


def test_the_timeline_bars_are_painted(rendered):
    with_steps, _ = rendered["drill"]
    without_steps, _ = rendered["drill-without-steps"]
    # The same page with and without its 15 steps: the difference is the bars.
    painted = with_steps.count(is_bar_green) - without_steps.count(is_bar_green)
    assert painted > 5_000, f"only {painted} more bar-coloured pixels with the steps"


def test_the_dom_holds_the_timeline_its_bars_and_markers(rendered):
    _, dom = rendered["drill"]
    assert '<svg id="timeline"' in dom
    bars = re.findall(r'<rect id="step-(\d+)" class="bar step', dom)
    assert len(bars) == len(drill_report().steps)
    for marker in ("marker-start", "marker-end", "marker-cutoff", "marker-deadline"):
        assert f'id="{marker}"' in dom
    for chart in ("projection", "throughput", "trend"):
        assert f'<svg id="{chart}"' in dom
    assert 'id="projection-p50"' in dom and 'id="projection-p90"' in dom


def test_without_a_deadline_only_the_start_and_finish_are_marked(rendered):
    image, dom = rendered["no-deadline"]
    assert 'id="marker-start"' in dom and 'id="marker-end"' in dom
    assert 'id="marker-cutoff"' not in dom and 'id="marker-deadline"' not in dom
    assert image.count(is_bar_green) > 5_000


def test_an_empty_run_still_renders_its_frame_and_says_why(rendered):
    image, dom = rendered["empty"]
    assert '<svg id="timeline"' in dom and "No steps recorded for this run" in dom
    inked = image.width * image.height - image.count(white)
    assert inked > 0.01 * image.width * image.height


def test_the_report_prints_to_a_few_pages(tmp_path):
    files = write_reports(tmp_path / "run", drill_report())
    pdf = print_pdf(files.html, tmp_path / "report.pdf", tmp_path / "profile")
    assert pdf.startswith(b"%PDF")
    pages = len(re.findall(rb"/Type\s*/Page[^s]", pdf))
    assert 2 <= pages <= 12, f"{pages} pages"


def test_the_example_in_the_docs_comes_from_the_script(tmp_path):
    """docs/report-example.png is what docs/report_example.py makes (not checked pixel by pixel)."""
    repo = Path(__file__).resolve().parents[2]
    committed = repo / "docs" / "report-example.png"
    assert committed.is_file(), "run python docs/report_example.py"
    image = decode_png(committed.read_bytes())
    assert image.width == WIDTH and image.count(is_bar_green) > 5_000
