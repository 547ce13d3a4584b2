"""The delegation change at the registrar: the first-hour critical step.

Most registrars have no API exitplan can use, so the default is an approval:
the run pauses with the exact NS set to enter (``DelegationRequest.instruction``)
and carries on when a person confirms. Where a registrar API is configured,
a ``RegistrarHook`` makes the change, with its undo (the previous NS set)
recorded first. Either way, ``verify_delegation`` asks the parent zone's
server over DNS whether the delegation now names the new servers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from orchestrator.clock import Clock
from orchestrator.cutover.plan import RecordUndo
from orchestrator.cutover.query import AuthoritativeEndpoint, Transport, query_authoritative
from orchestrator.cutover.schedule import CutoverSchedule
from orchestrator.errors import ConfigError, FatalError
from providers.interfaces.dns import absolute_name

#: The ``kind`` ``change_delegation`` passes to ``record_undo``; its undo is ``undo_delegation``.
DELEGATION_UNDO_KIND = "registrar_delegation"


class RegistrarHook(Protocol):
    """A registrar's API, as far as the cutover needs it.

    ``name`` identifies the hook in plans and undo records. Both methods take
    absolute zone names and absolute, lower-case server names; they may raise
    ``RetryableError`` (try again) or ``FatalError``.
    """

    name: str

    def get_nameservers(self, zone: str) -> list[str]:
        """The NS set the registrar publishes in the parent zone now."""
        ...

    def set_nameservers(self, zone: str, nameservers: Sequence[str]) -> None:
        """Replace the published NS set with exactly ``nameservers``. Retry-safe."""
        ...


@dataclass(frozen=True)
class DelegationRequest:
    """What to change at the registrar, by when, and how. JSON-serialisable.

    ``via`` is ``approval`` or ``registrar-api:<hook>``. ``instruction`` is
    the text of the approval pause: the exact NS set to enter.
    """

    zone: str
    nameservers: tuple[str, ...]
    due_by: datetime
    via: str
    instruction: str


@dataclass(frozen=True)
class DelegationOutcome:
    """What ``change_delegation`` did. JSON-serialisable."""

    zone: str
    nameservers: tuple[str, ...]
    previous: tuple[str, ...]
    via: str
    changed_at: datetime
    already: bool


@dataclass(frozen=True)
class DelegationCheck:
    """The parent zone's answer for the zone's NS set, asked over DNS."""

    zone: str
    parent: str
    expected: tuple[str, ...]
    answers: tuple[tuple[Transport, str, tuple[str, ...]], ...]
    matches: bool


def delegation_request(
    schedule: CutoverSchedule, *, hook_name: str | None = None
) -> DelegationRequest:
    """The delegation step of ``schedule`` as a request to a person or a hook. Pure."""
    step = schedule.step("delegation")
    if step is None or step.due_by is None:
        raise FatalError(f"the schedule of {schedule.zone} has no delegation step")
    servers = schedule.delegation.nameservers
    listed = "\n".join(f"  {ns.rstrip('.')}" for ns in servers)
    instruction = (
        f"At the registrar of {schedule.zone.rstrip('.')}, replace the name servers with exactly "
        f"these {len(servers)} (and remove every other, in particular every awsdns one), "
        f"by {step.due_by.isoformat(timespec='minutes')}:\n{listed}\n"
        f"Predicted: {schedule.delegation.share_at_deadline:.0%} of resolvers will still ask the "
        f"old servers at the deadline; all will have moved by "
        f"{schedule.delegation.all_moved_by.isoformat(timespec='minutes')}."
    )
    return DelegationRequest(
        zone=schedule.zone,
        nameservers=servers,
        due_by=step.due_by,
        via=f"registrar-api:{hook_name}" if hook_name else "approval",
        instruction=instruction,
    )


def _normalise(servers: Sequence[str]) -> tuple[str, ...]:
    return tuple(sorted({absolute_name(ns) for ns in servers}))


def change_delegation(
    request: DelegationRequest, hook: RegistrarHook, *, record_undo: RecordUndo, clock: Clock
) -> DelegationOutcome:
    """Make the registrar publish the request's NS set, recording the previous one first.

    Already in place: nothing is changed and no undo recorded (``already``).
    Otherwise ``record_undo(DELEGATION_UNDO_KIND, {"zone", "hook", "previous",
    "nameservers"}, description)`` is called before ``hook.set_nameservers``.
    Raises ``ConfigError`` for a request meant for another hook; the hook's
    errors. Retry-safe: yes.
    """
    if request.via != f"registrar-api:{hook.name}":
        raise ConfigError(
            f"the delegation of {request.zone} is to be changed via {request.via}, "
            f"not the registrar hook {hook.name!r}"
        )
    wanted = _normalise(request.nameservers)
    previous = _normalise(hook.get_nameservers(request.zone))
    if previous == wanted:
        return DelegationOutcome(request.zone, wanted, previous, request.via, clock.now(), True)
    record_undo(
        DELEGATION_UNDO_KIND,
        {
            "zone": request.zone,
            "hook": hook.name,
            "previous": list(previous),
            "nameservers": list(wanted),
        },
        f"restore the delegation of {request.zone} at {hook.name} to {', '.join(previous)}",
    )
    hook.set_nameservers(request.zone, wanted)
    return DelegationOutcome(request.zone, wanted, previous, request.via, clock.now(), False)


def undo_delegation(resource: dict[str, Any], hook: RegistrarHook) -> str:
    """Put the previous NS set back at the registrar, if the change is still in place.

    Idempotent; an NS set someone changed since is left as it is. Note that
    undoing a delegation is as slow as making it: resolvers hold it for the
    parent's TTL (48 h for .com).
    """
    try:
        zone = str(resource["zone"])
        previous = _normalise(resource["previous"])
        ours = _normalise(resource["nameservers"])
    except (KeyError, TypeError) as exc:
        raise FatalError(f"malformed delegation undo record (missing {exc})") from None
    if resource.get("hook") != hook.name:
        raise FatalError(
            f"the delegation of {zone} was changed through {resource.get('hook')!r}, "
            f"not {hook.name!r}; undo it with that hook"
        )
    now = _normalise(hook.get_nameservers(zone))
    if now == previous:
        return f"delegation of {zone}: already {', '.join(previous)}"
    if now != ours:
        return f"delegation of {zone}: changed since to {', '.join(now)}; left as it is"
    hook.set_nameservers(zone, previous)
    return f"delegation of {zone}: restored to {', '.join(previous)}"


def verify_delegation(
    parent: AuthoritativeEndpoint,
    zone: str,
    nameservers: Sequence[str],
    *,
    transports: Sequence[Transport] = ("udp", "tcp"),
    timeout: float = 2.0,
) -> DelegationCheck:
    """Ask the parent zone's server for ``zone``'s NS set: does it name exactly ``nameservers``?

    The parent answers with a referral (the NS set in the authority
    section). Never raises for DNS trouble: an unanswered question does not
    match. Retry-safe: yes.
    """
    apex = absolute_name(zone)
    expected = _normalise(nameservers)
    answers = []
    matches = True
    for transport in transports:
        got = query_authoritative(parent, apex, "NS", transport=transport, timeout=timeout)
        values = _normalise(got.values) if got.values else ()
        answers.append((transport, got.rcode, values))
        matches = matches and got.rcode == "NOERROR" and values == expected
    return DelegationCheck(apex, parent.describe(), expected, tuple(answers), matches)
