"""When each DNS step of the cutover happens, computed from the notice, the deadline and the TTLs.

Pure functions: every time comes from the inputs or from the injected clock
(read once), so the same inputs give the same schedule.

Why the delegation is the long pole: the parent zone (``.com``) hands out a
zone's delegation with a TTL of 172800 s (48 h), and Route53 gives the
zone's own NS set the same TTL by default. A resolver that fetched either
copy shortly before the registrar change keeps asking the old name servers
for up to 48 h after it. With less notice than that, some resolvers still
ask the old servers at the deadline; the change must start in the first hour,
and the old zone must keep answering, identical to the new one, until it dies.

The model behind ``share_on_old_delegation`` (stated so it can be argued
with): resolvers' cached copies are uniformly aged over their TTL (copies are
fetched at random times, and a copy of age ``a`` lives ``TTL - a`` more
seconds). A copy of the parent's delegation fetched before the change at
``t_c`` points at the old servers until it expires: the share still holding
one at ``t`` is ``max(0, 1 - (t - t_c) / P)``, P the parent's NS TTL. The
same holds for the old zone's own NS set with its TTL N, counted from when
that TTL was lowered (copies fetched afterwards live only the lowered TTL),
or from ``t_c`` if it was not. A resolver fetched both copies at about the
same time, so the share still on the old delegation is the larger of the
two, not their union. Resolvers that cap TTLs (many cap at 1 day or less)
move sooner; this is an upper estimate for well-behaved caches.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from orchestrator.clock import Clock
from orchestrator.cutover.zone import ZoneTtls
from orchestrator.errors import ConfigError
from providers.interfaces.dns import absolute_name

#: The NS TTL of the .com/.net delegation (and Route53's default for a zone's own NS set).
PARENT_NS_TTL_S = 172_800

#: The delegation change is due within this long after the notice.
DELEGATION_WINDOW = timedelta(hours=1)

#: Record TTL the schedule lowers to at once; the flip then reaches every cache this fast.
DEFAULT_LOWERED_TTL_S = 60

#: The old zone's apex NS TTL is lowered to this (AWS suggests 60-900 s).
DEFAULT_LOWERED_NS_TTL_S = 300


@dataclass(frozen=True)
class ScheduleInputs:
    """What the schedule is computed from.

    ``notice``: when the shutdown was announced. ``deadline``: when the old
    account (and its zone) stops answering. ``safety_margin``: the flip is
    due this long before the deadline. ``ttls``: read from the old zone
    (``zone_ttls``). ``new_nameservers``: the exact NS set to enter at the
    registrar. ``old_zone_writable``: the old zone still accepts changes
    (TTL lowering and keeping both zones identical depend on it).
    ``registrar_hook``: name of a configured registrar API hook; None means
    a person enters the NS set after an approval. ``new_names``: names the
    new zone has that the old one lacks (created early: negative caching).
    ``ttls_lowered_at`` / ``delegation_changed_at``: when those steps were
    already done (a resumed or re-planned run); None if not yet.
    """

    zone: str
    notice: datetime
    deadline: datetime
    safety_margin: timedelta
    ttls: ZoneTtls
    new_nameservers: tuple[str, ...]
    lowered_ttl: int = DEFAULT_LOWERED_TTL_S
    lowered_ns_ttl: int = DEFAULT_LOWERED_NS_TTL_S
    parent_ns_ttl: int = PARENT_NS_TTL_S
    old_zone_writable: bool = True
    registrar_hook: str | None = None
    new_names: tuple[str, ...] = ()
    ttls_lowered_at: datetime | None = None
    delegation_changed_at: datetime | None = None


@dataclass(frozen=True)
class ScheduledStep:
    """One DNS step: what, from when, by when, and what it waits for.

    ``step`` is a stable id: ``lower-ttls``, ``lower-ns-ttl``,
    ``create-new-names``, ``delegation``, ``flip``, ``keep-zones-identical``,
    ``old-zone-gone``. ``start_at``: not before. ``due_by``: at the latest
    (None: no limit). ``effective_at``: when every cache reflects it.
    ``needs``: what must hold first (``approval``, ``registrar-api``,
    ``health-green``, ``--force``). ``done``: already done (given in the inputs).
    """

    step: str
    action: str
    start_at: datetime
    due_by: datetime | None
    effective_at: datetime | None
    critical: bool = False
    needs: tuple[str, ...] = ()
    done: bool = False


@dataclass(frozen=True)
class DelegationForecast:
    """The registrar change and who will still ask the old servers.

    ``change_at``: when the change is taken to reach the parent zone (when it
    was done, else when it is due). ``share_at_deadline``: predicted share of
    resolvers still holding the old delegation at the deadline (0..1).
    ``all_moved_by``: when the last cached copy expires. ``fits``: everyone
    has moved by the deadline. ``model``: the model, in one sentence.
    """

    nameservers: tuple[str, ...]
    change_at: datetime
    parent_ns_ttl: int
    child_ns_ttl: int | None
    child_ns_reference: datetime
    share_at_deadline: float
    all_moved_by: datetime
    fits: bool
    model: str


@dataclass(frozen=True)
class CutoverSchedule:
    """The computed DNS schedule. JSON-serialisable (see ``orchestrator.run.serde``).

    ``safety_margin_s`` in seconds. The flip window runs from the time the
    lowered TTL allows (``flip_window_start``) to the deadline minus the
    margin (``flip_window_end``); it is empty when the start is later.
    ``residual_risks``: what stays at risk whatever is done, each a sentence
    for the report; ``warnings``: what is late or unknown.
    """

    zone: str
    computed_at: datetime
    notice: datetime
    deadline: datetime
    safety_margin_s: int
    steps: tuple[ScheduledStep, ...]
    delegation: DelegationForecast
    flip_window_start: datetime
    flip_window_end: datetime
    residual_risks: tuple[str, ...]
    warnings: tuple[str, ...]

    def step(self, step_id: str) -> ScheduledStep | None:
        return next((s for s in self.steps if s.step == step_id), None)

    def text(self) -> str:
        """The schedule as lines for ``exitplan plan`` (times in UTC ISO 8601)."""
        lines = [f"DNS cutover of {self.zone} (computed {_iso(self.computed_at)})"]
        for s in self.steps:
            when = f"from {_iso(s.start_at)}"
            if s.due_by is not None:
                when += f", by {_iso(s.due_by)}"
            flags = []
            if s.critical:
                flags.append("CRITICAL")
            if s.done:
                flags.append("done")
            if s.needs:
                flags.append("needs " + ", ".join(s.needs))
            suffix = f" [{'; '.join(flags)}]" if flags else ""
            lines.append(f"  {s.step:<21} {when}{suffix}")
            lines.append(f"  {'':<21} {s.action}")
        d = self.delegation
        lines.append(
            f"  delegation forecast: {d.share_at_deadline:.1%} of resolvers still on the old "
            f"delegation at the deadline; all moved by {_iso(d.all_moved_by)}"
        )
        lines.extend(f"  residual risk: {r}" for r in self.residual_risks)
        lines.extend(f"  warning: {w}" for w in self.warnings)
        return "\n".join(lines) + "\n"


def _iso(at: datetime) -> str:
    return at.isoformat(timespec="seconds")


def _clamp01(x: float) -> float:
    return max(0.0, min(1.0, x))


def share_on_old_delegation(
    at: datetime,
    *,
    change_at: datetime,
    parent_ns_ttl: int,
    child_ns_ttl: int | None = None,
    child_ns_reference: datetime | None = None,
) -> float:
    """Predicted share (0..1) of resolvers still using the old name servers at ``at``.

    See the module docstring for the model: uniformly aged caches; a parent
    copy from before ``change_at`` lives up to ``parent_ns_ttl``; a copy of
    the old zone's own NS set from before ``child_ns_reference`` lives up to
    ``child_ns_ttl``; the larger share counts. Before ``change_at`` everyone
    is on the old delegation (1.0). Pure.
    """
    if at < change_at:
        return 1.0
    parent = _clamp01(1 - (at - change_at).total_seconds() / parent_ns_ttl)
    child = 0.0
    if child_ns_ttl and child_ns_reference is not None:
        child = _clamp01(1 - (at - child_ns_reference).total_seconds() / child_ns_ttl)
    return max(parent, child)


def _hours(delta: timedelta) -> str:
    hours = delta.total_seconds() / 3600
    return f"{hours:.1f} h" if hours < 10 else f"{hours:.0f} h"


def compute_schedule(inputs: ScheduleInputs, clock: Clock) -> CutoverSchedule:
    """The cutover's DNS steps, the delegation forecast and the residual risks.

    Reads ``clock.now()`` once (the time the plan is made). Raises
    ``ConfigError`` for inputs that cannot describe a cutover: a deadline
    before the notice, no new name servers, a negative margin or TTL.
    Pure otherwise.
    """
    now = clock.now()
    zone = absolute_name(inputs.zone)
    _check_inputs(inputs)
    ttls = inputs.ttls
    deadline = inputs.deadline
    flip_due = deadline - inputs.safety_margin
    warnings: list[str] = []
    risks: list[str] = []
    steps: list[ScheduledStep] = []

    if now >= deadline:
        warnings.append(
            f"the deadline {_iso(deadline)} has passed: the old zone may no longer answer"
        )
    elif now >= flip_due:
        warnings.append(
            f"less than the safety margin ({_hours(inputs.safety_margin)}) is left before the "
            "deadline: every step is late"
        )

    # 1. Lower record TTLs at once, in both zones where the old one is writable.
    lowered_at = inputs.ttls_lowered_at or now
    lowering_needed = ttls.max_record_ttl > inputs.lowered_ttl
    where = "the new zone and the old zone" if inputs.old_zone_writable else "the new zone"
    steps.append(
        ScheduledStep(
            step="lower-ttls",
            action=(
                f"lower every record TTL above {inputs.lowered_ttl} s to {inputs.lowered_ttl} s "
                f"in {where} (longest now {ttls.max_record_ttl} s)"
                if lowering_needed
                else f"no record TTL is above {inputs.lowered_ttl} s: nothing to lower"
            ),
            start_at=lowered_at,
            due_by=lowered_at,
            effective_at=lowered_at + timedelta(seconds=ttls.max_record_ttl),
            done=inputs.ttls_lowered_at is not None or not lowering_needed,
        )
    )
    if not inputs.old_zone_writable and lowering_needed:
        risks.append(
            "the old zone no longer accepts changes: its TTLs stay as they are "
            f"(up to {ttls.max_record_ttl} s), so resolvers on the old delegation see the "
            "old addresses until the deadline"
        )

    # 2. Lower the old zone's own NS TTL (an NS change: needs --force).
    child_ttl = ttls.ns_ttl
    child_reference: datetime | None = None
    if inputs.old_zone_writable and child_ttl and child_ttl > inputs.lowered_ns_ttl:
        child_reference = lowered_at
        steps.append(
            ScheduledStep(
                step="lower-ns-ttl",
                action=(
                    f"lower the old zone's apex NS TTL from {child_ttl} s to "
                    f"{inputs.lowered_ns_ttl} s (copies fetched before this live on up to "
                    f"{_hours(timedelta(seconds=child_ttl))})"
                ),
                start_at=lowered_at,
                due_by=lowered_at,
                effective_at=lowered_at + timedelta(seconds=child_ttl),
                needs=("--force",),
                done=inputs.ttls_lowered_at is not None,
            )
        )

    # 3. New names early: a resolver that asked before they existed caches NXDOMAIN.
    if inputs.new_names:
        negative = ttls.negative_ttl
        steps.append(
            ScheduledStep(
                step="create-new-names",
                action=(
                    f"create {', '.join(absolute_name(n) for n in inputs.new_names)} in both "
                    f"zones now; 'no such name' may be cached up to "
                    f"{negative if negative is not None else 'an unknown number of'} s "
                    "(the SOA minimum)"
                ),
                start_at=now,
                due_by=now,
                effective_at=now + timedelta(seconds=negative) if negative is not None else None,
            )
        )
        if negative is None:
            warnings.append(
                "the old zone has no readable SOA: how long 'no such name' is cached is unknown"
            )

    # 4. The delegation: the first-hour critical step.
    first_hour_end = inputs.notice + DELEGATION_WINDOW
    if inputs.delegation_changed_at is not None:
        change_at = inputs.delegation_changed_at
    else:
        # Predicted at the latest time it is due: the end of the first hour, or now if later.
        change_at = max(now, first_hour_end)
        if now > first_hour_end:
            warnings.append(
                f"the first hour after the notice ended at {_iso(first_hour_end)}: change "
                "the delegation now; every hour of delay leaves more resolvers on the old "
                "servers at the deadline"
            )
    nameservers = tuple(absolute_name(ns) for ns in inputs.new_nameservers)
    how = (
        f"through the registrar API hook {inputs.registrar_hook!r}"
        if inputs.registrar_hook
        else "by hand at the registrar, after approval"
    )
    steps.append(
        ScheduledStep(
            step="delegation",
            action=(
                f"replace the name servers of {zone} at the registrar with exactly "
                f"{', '.join(nameservers)} (remove every other), {how}"
            ),
            start_at=now if inputs.delegation_changed_at is None else change_at,
            due_by=change_at,
            effective_at=change_at + timedelta(seconds=inputs.parent_ns_ttl),
            critical=True,
            needs=("registrar-api",) if inputs.registrar_hook else ("approval",),
            done=inputs.delegation_changed_at is not None,
        )
    )
    share = share_on_old_delegation(
        deadline,
        change_at=change_at,
        parent_ns_ttl=inputs.parent_ns_ttl,
        child_ns_ttl=child_ttl,
        child_ns_reference=child_reference or change_at,
    )
    all_moved = max(
        change_at + timedelta(seconds=inputs.parent_ns_ttl),
        (child_reference or change_at) + timedelta(seconds=child_ttl or 0),
    )
    forecast = DelegationForecast(
        nameservers=nameservers,
        change_at=change_at,
        parent_ns_ttl=inputs.parent_ns_ttl,
        child_ns_ttl=child_ttl,
        child_ns_reference=child_reference or change_at,
        share_at_deadline=share,
        all_moved_by=all_moved,
        fits=all_moved <= deadline,
        model=(
            "cached delegations uniformly aged over their TTL (parent "
            f"{inputs.parent_ns_ttl} s, old zone's NS {child_ttl} s); a copy fetched before "
            "the change points at the old servers until it expires; the larger of the two "
            "shares counts"
        ),
    )
    if not forecast.fits:
        after = all_moved - deadline
        if change_at >= deadline:
            risks.append(
                f"deadline too close for the delegation: the change cannot reach the parent "
                f"zone before the deadline ({_iso(deadline)}); every resolver keeps asking the "
                f"old servers, which stop answering then, until its copy expires, for up to "
                f"{_hours(after)} after the deadline (until {_iso(all_moved)})"
            )
        else:
            risks.append(
                f"deadline too close for the delegation: resolvers keep a delegation for up "
                f"to {inputs.parent_ns_ttl} s ({_hours(timedelta(seconds=inputs.parent_ns_ttl))})"
                f"; with the change at {_iso(change_at)}, about {share:.0%} of resolvers will "
                f"still ask the old name servers at the deadline and get no answer once the "
                f"old account is shut, for up to {_hours(after)} after it (until "
                f"{_iso(all_moved)}). Nothing in DNS can shorten this; keep the old zone "
                "answering and identical to the new one for as long as it exists"
            )

    # 5. The flip: no earlier than the lowered TTL allows, only after the health check.
    flip_start = max(now, lowered_at + timedelta(seconds=ttls.max_service_ttl))
    flip_targets = "the new zone" + (
        " and the old zone (kept identical)" if inputs.old_zone_writable else ""
    )
    steps.append(
        ScheduledStep(
            step="flip",
            action=(
                f"point the service records (A/AAAA/CNAME/ALIAS) at the new host in "
                f"{flip_targets}; every cache follows within {inputs.lowered_ttl} s"
            ),
            start_at=flip_start,
            due_by=flip_due,
            effective_at=max(flip_start, now) + timedelta(seconds=inputs.lowered_ttl),
            needs=("health-green",),
        )
    )
    if flip_start > flip_due:
        late = flip_start - flip_due
        risks.append(
            f"the service records' old TTL ({ttls.max_service_ttl} s) ends after the flip is "
            f"due ({_iso(flip_due)}): flipped then, resolvers that cached the old addresses "
            f"keep them for up to {_hours(late)} after it"
        )
    if not inputs.old_zone_writable:
        risks.append(
            "the old zone cannot be flipped: resolvers still on the old delegation reach the "
            "old host until the deadline"
        )

    steps.append(
        ScheduledStep(
            step="keep-zones-identical",
            action=(
                "apply every change to both zones until the deadline, so a resolver on either "
                "delegation gets the same answers"
                if inputs.old_zone_writable
                else "the old zone no longer accepts changes: the zones may differ"
            ),
            start_at=now,
            due_by=deadline,
            effective_at=None,
        )
    )
    steps.append(
        ScheduledStep(
            step="old-zone-gone",
            action="the old account and its zone stop answering",
            start_at=deadline,
            due_by=None,
            effective_at=deadline,
        )
    )
    return CutoverSchedule(
        zone=zone,
        computed_at=now,
        notice=inputs.notice,
        deadline=deadline,
        safety_margin_s=int(inputs.safety_margin.total_seconds()),
        steps=tuple(steps),
        delegation=forecast,
        flip_window_start=flip_start,
        flip_window_end=flip_due,
        residual_risks=tuple(risks),
        warnings=tuple(warnings),
    )


def _check_inputs(inputs: ScheduleInputs) -> None:
    for label, at in (("notice", inputs.notice), ("deadline", inputs.deadline)):
        if at.tzinfo is None:
            raise ConfigError(f"cutover {label} {at!r} has no timezone; give one (e.g. Z)")
    if inputs.deadline <= inputs.notice:
        raise ConfigError(
            f"the deadline {_iso(inputs.deadline)} is not after the notice "
            f"{_iso(inputs.notice)}; check both times"
        )
    if inputs.safety_margin < timedelta(0):
        raise ConfigError("the safety margin is negative; give 0 or more")
    if not inputs.new_nameservers:
        raise ConfigError(
            "the cutover needs the new zone's name servers (the exact NS set to enter at the "
            "registrar); configure them"
        )
    for label, ttl in (
        ("lowered TTL", inputs.lowered_ttl),
        ("lowered NS TTL", inputs.lowered_ns_ttl),
        ("parent NS TTL", inputs.parent_ns_ttl),
    ):
        if ttl <= 0:
            raise ConfigError(f"the {label} must be a positive number of seconds, not {ttl}")


def seconds_until(at: datetime, clock: Clock) -> float:
    """Seconds from now until ``at`` (0 if it has passed)."""
    return max(0.0, (at - clock.now()).total_seconds())
