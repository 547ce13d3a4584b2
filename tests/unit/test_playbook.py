"""Playbook validation: every problem is one message naming file:line:column and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.errors import ConfigError
from orchestrator.replay.playbook import parse_playbook
from orchestrator.replay.steps import SANDBOX_PLAYBOOK
from orchestrator.replay.templating import Redactor, render_text

MANIFEST = {"rds/us-east-1/db/dump.tar", "files/a.txt", "media/x.jpg"}


def error_of(text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_playbook(text, Path("pb.yaml"), MANIFEST)
    assert caught.value.exit_code == 2
    return str(caught.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "steps:\n  - {id: a, directory: {path: /x, colour: red}}\n",
            "pb.yaml:2:35: a: directory: unknown key 'colour'",
        ),
        (
            "steps:\n  - {id: a, command: [echo, '{{ secrets.pw }}']}\n",
            "pb.yaml:2:29: a: command.argv: secrets.pw is not defined",
        ),
        (
            "secrets: {pw: {secret: db}}\nsteps:\n  - {id: a, command: [echo, '{{ secrets.pw }}']}\n",
            "pb.yaml:3:29: a: command.argv: a secret here would show in process listings",
        ),
        (
            "secrets: {pw: hunter2}\nsteps:\n  - {id: a, command: [true]}\n",
            "pb.yaml:1:15: secrets.pw holds a literal secret",
        ),
        (
            "steps:\n  - {id: a, command: 'rm -rf /tmp/x'}\n",
            "pb.yaml:2:22: a: command.argv must be a list of arguments",
        ),
        (
            "steps:\n  - {id: a, put: {dest: /x, src: ../../etc/shadow}}\n",
            "pb.yaml:2:34: a: put.src: '../../etc/shadow' contains '..'",
        ),
        (
            "steps:\n  - {id: a, command: [true], directory: /x}\n",
            "pb.yaml:2:30: step 'a' has two ops",
        ),
        ("steps:\n  - {command: [true]}\n", "pb.yaml:2:5: this step has no 'id:'"),
        (
            "steps:\n  - {id: a, command: [true], if: 'facts.uid =='}\n",
            "pb.yaml:2:34: a: if: template syntax error",
        ),
        ("stepz: []\n", "pb.yaml:1:1: the playbook: unknown key 'stepz'; did you mean 'steps'?"),
        ("steps:\n  - {id: a, command: [true]\n", "pb.yaml:3:1: invalid YAML"),
        ("steps:\n  - id: a\n    command: [echo, {{ x }}]\n", "invalid YAML"),
    ],
)
def test_a_bad_playbook_names_the_place_and_the_fix(text: str, expected: str) -> None:
    assert expected in error_of(text)


def test_the_sandbox_playbook_is_valid() -> None:
    playbook = parse_playbook(SANDBOX_PLAYBOOK.read_text(), SANDBOX_PLAYBOOK, None)
    assert [s.id for s in playbook.steps][-1] == "health" and playbook.service is not None


def test_templates_are_sandboxed_and_strict() -> None:
    from orchestrator.replay.templating import RenderError

    with pytest.raises(RenderError):
        render_text("{{ missing }}", {})
    with pytest.raises(RenderError):
        render_text("{{ ''.__class__.__mro__[1].__subclasses__() }}", {})


def test_the_redactor_scrubs_every_form_of_a_secret() -> None:
    redactor = Redactor()
    redactor.add("keys", '{"stripe": "sk_live_123456", "mail": "mg-abcdef"}')
    text = redactor.text(
        'stripe=sk_live_123456 json={"stripe": "sk_live_123456"} quoted=\\"mg-abcdef\\"'
    )
    assert "sk_live" not in text and "mg-abcdef" not in text and "<secret:keys>" in text
