"""Events the replay emits (the CLI renders them; the engine prints nothing).

Every text in them has been through the redactor: no secret value.
"""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.events import Event


@dataclass(frozen=True)
class ReplayStarted(Event):
    host: str
    playbook: str
    steps: int
    #: "continue": an unfinished replay carries on; "check": nothing changes; "full".
    mode: str


@dataclass(frozen=True)
class ReplayStepDone(Event):
    host: str
    step: str
    #: changed | ok | would-change | skipped | reused | failed
    status: str
    detail: str
    diff: str = ""
    handler: bool = False
    #: "shell" for a shell script, so a plan shows where one runs.
    marker: str = ""
    attempts: int = 1
