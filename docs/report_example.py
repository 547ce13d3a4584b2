"""Regenerate docs/report-example.png: the HTML report of a synthetic drill, as Chromium shows it.

Run from the repository root, with Debian's chromium installed:

    python docs/report_example.py

It writes the sample drill's report.json, junit.xml and report.html to a
temporary directory, screenshots the page at 1280 x 1900 in headless
Chromium, and replaces docs/report-example.png. The sample is
tests/support/report_samples.py's ``drill_report`` (deterministic).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from orchestrator.report.run_report import write_reports  # noqa: E402
from tests.support.chromium import find_chromium, screenshot  # noqa: E402
from tests.support.report_samples import drill_report  # noqa: E402

OUTPUT = REPO / "docs" / "report-example.png"


def main() -> int:
    if find_chromium() is None:
        print("chromium not found: install Debian's chromium (apt-get install chromium)")
        return 1
    with tempfile.TemporaryDirectory(prefix="exitplan-report-example-") as scratch:
        files = write_reports(Path(scratch) / "run", drill_report())
        png = screenshot(
            files.html,
            Path(scratch) / "example.png",
            Path(scratch) / "profile",
            width=1280,
            height=1900,
        )
    OUTPUT.write_bytes(png)
    print(f"wrote {OUTPUT.relative_to(REPO)} ({len(png)} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
