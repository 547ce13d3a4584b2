"""The scheduled-drill examples parse, and every exitplan command they run exists."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import yaml

from orchestrator.cli import build_parser

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "ci"


def exitplan_commands(document: object) -> list[list[str]]:
    """Every `exitplan ...` line in the document's run/script strings, as argv."""
    found: list[list[str]] = []

    def walk(value: object) -> None:
        if isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)
        elif isinstance(value, str):
            for line in value.splitlines():
                words = shlex.split(line.split("||")[0].strip())
                if words[:1] == ["exitplan"]:
                    found.append(words[1:])

    walk(document)
    return found


@pytest.mark.parametrize("name", ["github-actions-drill.yml", "gitlab-ci-drill.yml"])
def test_the_example_parses_and_calls_commands_that_exist(name: str) -> None:
    document = yaml.safe_load((EXAMPLES / name).read_text(encoding="utf-8"))
    commands = exitplan_commands(document)
    assert ["drill", "--scenario", "stressed-exit", "--notice", "30h"] in commands
    assert ["drill", "--evaluate"] in commands
    parser = build_parser()
    for argv in commands:
        parser.parse_args(argv)  # an unknown command or flag raises (exit 2)


def test_the_examples_publish_the_junit_and_html_reports() -> None:
    github = yaml.safe_load((EXAMPLES / "github-actions-drill.yml").read_text(encoding="utf-8"))
    steps = github["jobs"]["drill"]["steps"]
    upload = next(s for s in steps if str(s.get("uses", "")).startswith("actions/upload-artifact"))
    assert "junit.xml" in upload["with"]["path"] and "report.html" in upload["with"]["path"]
    assert upload["if"] == "always()"
    gitlab = yaml.safe_load((EXAMPLES / "gitlab-ci-drill.yml").read_text(encoding="utf-8"))
    artifacts = gitlab["exit-drill"]["artifacts"]
    assert artifacts["reports"]["junit"].endswith("junit.xml") and artifacts["when"] == "always"
