"""Change plans for a zone: computed first, shown as a table, applied only on purpose.

The octoDNS shape: a plan is data (operation, name, type, TTL, value, and
the set it replaces), printable as a table a reviewer reads before anything
changes; applying it is a separate call that is a dry run unless told
otherwise. Safety thresholds are data too (``Thresholds``): changing more
than 30% of a zone of 10 or more record sets, or any NS set, needs force.

Ownership, the external-dns way: exitplan writes a TXT marker next to every
record set it creates, and changes the values of, or deletes, only sets that
carry its marker, or that the caller adopts by name (the flip's service
names, which then get a marker). A TTL-only change (the schedule lowering
TTLs) keeps the values and needs no ownership. Everything left alone for want
of ownership is listed in the plan (``kept``) with the reason.

Markers sit directly under the zone apex (``_exitplan-owner-<hash>.<zone>``,
one per owned set, the set named in the value), never under the owned name:
a marker there would sit below a delegation, or turn a wildcard's name into
an existing one.

Undo: before a plan changes anything, ``apply_plan`` hands the previous
record sets to the caller's ``record_undo`` callback; ``undo_dns_change``
puts them back.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from orchestrator.clock import Clock
from orchestrator.cutover.query import (
    AuthoritativeEndpoint,
    DnsAnswer,
    Transport,
    query_authoritative,
    same_values,
)
from orchestrator.errors import ConfigError, FatalError
from orchestrator.run.serde import from_json, to_json
from providers.interfaces.dns import DnsProvider, RecordChange, RecordSet, absolute_name

RecordKey = tuple[str, str, str]
Operation = Literal["create", "update", "delete"]

#: ``record_undo(kind, resource, description)``: called before a change is made.
RecordUndo = Callable[[str, dict[str, Any], str], None]

#: The ``kind`` ``apply_plan`` passes to ``record_undo``; its undo is ``undo_dns_change``.
DNS_CHANGE_UNDO_KIND = "dns_change"

#: Owner label of the marker when the caller names none.
DEFAULT_OWNER = "exitplan"

MARKER_LABEL_PREFIX = "_exitplan-owner-"
MARKER_TTL = 300
_OWNER_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")


@dataclass(frozen=True)
class Thresholds:
    """When a plan needs force (octoDNS's defaults).

    ``max_changed_share``: updates plus deletes over the zone's existing
    record sets (its apex SOA and NS and ownership markers not counted) may
    not exceed this share...
    ``min_existing``: ...in a zone of at least this many sets (smaller zones
    have no share limit). Creates never count, as in octoDNS.
    ``ns_changes_need_force``: any update or delete of an NS set, and creating
    the apex NS set, needs force (copying a sub-delegation into a new zone
    does not). ``count_ttl_only_updates``: whether an update that keeps the
    values and changes only the TTL counts toward the share; by default it
    does not, since it cannot send anyone to a different address.
    """

    max_changed_share: float = 0.30
    min_existing: int = 10
    ns_changes_need_force: bool = True
    count_ttl_only_updates: bool = False


@dataclass(frozen=True)
class PlannedChange:
    """One row of a plan.

    ``ttl``/``values`` are what the set will be (for a delete: what it was).
    ``previous`` is the set as it stood when planned (None for a create),
    ``desired`` what it becomes (None for a delete). ``marker``: an ownership
    marker, bookkeeping only. ``ttl_only``: an update that changes nothing
    but the TTL.
    """

    operation: Operation
    name: str
    type: str
    ttl: int | None
    values: tuple[str, ...]
    previous: RecordSet | None
    desired: RecordSet | None
    set_identifier: str = ""
    marker: bool = False
    ttl_only: bool = False

    @property
    def key(self) -> RecordKey:
        return (self.name, self.type, self.set_identifier)

    def record_change(self) -> RecordChange:
        if self.operation == "delete":
            assert self.previous is not None
            return RecordChange("delete", self.previous)
        assert self.desired is not None
        return RecordChange(self.operation, self.desired)


@dataclass(frozen=True)
class KeptRecord:
    """A set the plan would have changed but leaves alone, and why."""

    name: str
    type: str
    reason: str
    set_identifier: str = ""


@dataclass(frozen=True)
class ChangePlan:
    """What applying would change in one zone at one target. JSON-serialisable.

    ``target`` is the provider's ``describe()``; ``purpose`` names the stage
    (``prepare``, ``lower-ttls``, ``flip``); ``existing_sets`` counts the
    zone's sets when planned (apex SOA/NS and markers not counted). ``force_reasons`` is
    empty when the plan may be applied without force.
    """

    zone: str
    target: str
    purpose: str
    owner: str
    changes: tuple[PlannedChange, ...]
    kept: tuple[KeptRecord, ...]
    existing_sets: int
    thresholds: Thresholds = field(default_factory=Thresholds)
    force_reasons: tuple[str, ...] = ()

    @property
    def needs_force(self) -> bool:
        return bool(self.force_reasons)

    @property
    def empty(self) -> bool:
        return not self.changes

    def counts(self) -> dict[str, int]:
        """Changes per operation, ownership markers not counted."""
        out = {"create": 0, "update": 0, "delete": 0}
        for change in self.changes:
            if not change.marker:
                out[change.operation] += 1
        return out

    def table(self) -> str:
        """The plan as a text table (operation, name, type, TTL, value) for a person to review."""
        return render_plan_table(self)


class ThresholdExceeded(ConfigError):
    """A plan needs force and force was not given; nothing was changed (exit code 2)."""


class PlanOutdated(FatalError):
    """The zone changed between planning and applying; plan again."""


# ---------------------------------------------------------------------------
# Ownership markers.
# ---------------------------------------------------------------------------


def check_owner(owner: str) -> str:
    """``owner`` if it can label a marker, else ``ConfigError`` saying what is allowed."""
    if not _OWNER_RE.match(owner):
        raise ConfigError(
            f"dns owner {owner!r}: use 1-63 lower-case letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return owner


def marker_name(zone: str, key: RecordKey) -> str:
    """The absolute name of the TXT marker that says who owns the set ``key``."""
    name, rtype, set_id = key
    digest = hashlib.sha256(f"{name}|{rtype}|{set_id}".encode()).hexdigest()[:16]
    return f"{MARKER_LABEL_PREFIX}{digest}.{absolute_name(zone)}"


def marker_value(owner: str, key: RecordKey) -> str:
    """The marker's TXT value (quoted): heritage, owner and the set it marks."""
    name, rtype, set_id = key
    record = f"{name} {rtype}" + (f" {set_id}" if set_id else "")
    return f'"heritage=exitplan,owner={owner},record={record}"'


def marker_set(zone: str, owner: str, key: RecordKey) -> RecordSet:
    return RecordSet(marker_name(zone, key), "TXT", MARKER_TTL, (marker_value(owner, key),))


def is_marker(rs: RecordSet) -> bool:
    """Whether ``rs`` is an exitplan ownership marker (of any owner)."""
    return rs.type == "TXT" and rs.name.startswith(MARKER_LABEL_PREFIX)


def _parse_marker(value: str) -> tuple[str, RecordKey] | None:
    text = value.strip()
    if text.startswith('"') and text.endswith('"'):
        text = text[1:-1]
    fields = dict(part.split("=", 1) for part in text.split(",") if "=" in part)
    if fields.get("heritage") != "exitplan" or "owner" not in fields or "record" not in fields:
        return None
    parts = fields["record"].split(" ")
    if len(parts) not in (2, 3):
        return None
    return fields["owner"], (parts[0], parts[1], parts[2] if len(parts) == 3 else "")


def owned_keys(zone: str, record_sets: Iterable[RecordSet], owner: str) -> set[RecordKey]:
    """Keys of the sets ``owner`` marked in the zone (a marker at the right name and value)."""
    owned: set[RecordKey] = set()
    for rs in record_sets:
        if not is_marker(rs):
            continue
        for value in rs.values:
            parsed = _parse_marker(value)
            if parsed is None:
                continue
            who, key = parsed
            if who == owner and marker_name(zone, key) == rs.name:
                owned.add(key)
    return owned


# ---------------------------------------------------------------------------
# Planning.
# ---------------------------------------------------------------------------


def same_record_set(a: RecordSet | None, b: RecordSet | None) -> bool:
    """Whether two sets answer the same: same TTL, data (canonical), alias and routing."""
    if a is None or b is None:
        return a is None and b is None
    return (
        a.ttl == b.ttl
        and a.alias == b.alias
        and (a.routing or None) == (b.routing or None)
        and same_values(a.type, a.values, b.values)
    )


def _ttl_only(a: RecordSet, b: RecordSet) -> bool:
    return (
        a.ttl != b.ttl
        and a.alias == b.alias
        and (a.routing or None) == (b.routing or None)
        and same_values(a.type, a.values, b.values)
    )


def _change(
    operation: Operation,
    previous: RecordSet | None,
    desired: RecordSet | None,
    *,
    marker: bool = False,
) -> PlannedChange:
    shown = desired if desired is not None else previous
    assert shown is not None
    return PlannedChange(
        operation=operation,
        name=shown.name,
        type=shown.type,
        ttl=shown.ttl,
        values=shown.values,
        previous=previous,
        desired=desired,
        set_identifier=shown.set_identifier or "",
        marker=marker,
        ttl_only=(
            operation == "update"
            and previous is not None
            and desired is not None
            and _ttl_only(previous, desired)
        ),
    )


_ORDER = {"delete": 0, "update": 1, "create": 2}


def build_plan(
    *,
    zone: str,
    target: str,
    purpose: str,
    owner: str,
    current: Sequence[RecordSet],
    desired: Sequence[RecordSet],
    in_scope: Callable[[RecordSet], bool],
    adopt: Collection[RecordKey] = (),
    thresholds: Thresholds | None = None,
) -> ChangePlan:
    """The changes that make the zone hold ``desired``, within ownership. Pure.

    ``current``: the zone as its provider lists it now (markers included).
    ``desired``: the sets wanted; each is created, updated or left alone.
    ``in_scope``: which current sets this plan manages; one of those that is
    not desired is deleted if exitplan owns it. ``adopt``: keys the caller
    names explicitly (e.g. the flip's service names): changed and deleted
    like owned sets, and marked as owned. Changes are ordered deletes,
    updates, creates (a CNAME must go before an A takes its name).
    """
    zone = absolute_name(zone)
    check_owner(owner)
    limits = thresholds or Thresholds()
    markers = {rs.key: rs for rs in current if is_marker(rs)}
    have = {rs.key: rs for rs in current if not is_marker(rs)}
    owned = owned_keys(zone, current, owner)
    adopted = set(adopt)
    want: dict[RecordKey, RecordSet] = {}
    for rs in desired:
        if is_marker(rs):
            raise FatalError(f"{rs.name}: exitplan's ownership markers are not zone content")
        want[rs.key] = rs

    changes: list[PlannedChange] = []
    kept: list[KeptRecord] = []

    def mark(key: RecordKey) -> None:
        wanted_marker = marker_set(zone, owner, key)
        existing = markers.get(wanted_marker.key)
        if not same_record_set(existing, wanted_marker):
            op: Operation = "create" if existing is None else "update"
            changes.append(_change(op, existing, wanted_marker, marker=True))

    def unmark(key: RecordKey) -> None:
        existing = markers.get((marker_name(zone, key), "TXT", ""))
        if existing is not None and key in owned:
            changes.append(_change("delete", existing, None, marker=True))

    not_owned = (
        f"not created by exitplan (no ownership marker of owner {owner!r}); change it by hand, "
        "or name it as a service to adopt it"
    )
    for key in sorted(want):
        rs = want[key]
        current_rs = have.get(key)
        if current_rs is None:
            changes.append(_change("create", None, rs))
            mark(key)
        elif same_record_set(current_rs, rs):
            if key in adopted and key not in owned:
                mark(key)
        elif _ttl_only(current_rs, rs):
            changes.append(_change("update", current_rs, rs))
        elif key in owned or key in adopted:
            changes.append(_change("update", current_rs, rs))
            if key not in owned:
                mark(key)
        else:
            kept.append(KeptRecord(rs.name, rs.type, not_owned, key[2]))
    for key in sorted(have):
        if key in want or not in_scope(have[key]):
            continue
        if key in owned or key in adopted:
            changes.append(_change("delete", have[key], None))
            unmark(key)
        else:
            kept.append(KeptRecord(key[0], key[1], not_owned, key[2]))

    changes.sort(key=lambda c: (c.marker, _ORDER[c.operation], c.key))
    # The apex SOA and NS are the provider's, not content: they do not count.
    existing = sum(1 for k in have if not (k[0] == zone and k[1] in ("SOA", "NS")))
    reasons = _force_reasons(zone, changes, existing, limits)
    return ChangePlan(
        zone=zone,
        target=target,
        purpose=purpose,
        owner=owner,
        changes=tuple(changes),
        kept=tuple(kept),
        existing_sets=existing,
        thresholds=limits,
        force_reasons=tuple(reasons),
    )


def _force_reasons(
    zone: str, changes: Sequence[PlannedChange], existing: int, limits: Thresholds
) -> list[str]:
    reasons: list[str] = []
    counted = [
        c
        for c in changes
        if not c.marker
        and c.operation in ("update", "delete")
        and (limits.count_ttl_only_updates or not c.ttl_only)
    ]
    if (
        existing >= limits.min_existing
        and existing
        and len(counted) / existing > (limits.max_changed_share)
    ):
        reasons.append(
            f"changes {len(counted)} of the zone's {existing} record sets "
            f"({len(counted) / existing:.0%}, more than {limits.max_changed_share:.0%})"
        )
    if limits.ns_changes_need_force:
        for c in changes:
            if c.type == "NS" and (c.operation != "create" or c.name == zone):
                reasons.append(f"{c.operation}s the NS set of {c.name}")
    return reasons


def render_plan_table(plan: ChangePlan) -> str:
    """A plain-text table of the plan, one row per change (and per set it replaces)."""
    rows: list[tuple[str, str, str, str, str]] = [("operation", "name", "type", "TTL", "value")]

    def fmt_ttl(ttl: int | None) -> str:
        return "" if ttl is None else str(ttl)

    def fmt_values(rs: RecordSet | None, values: Sequence[str]) -> str:
        if rs is not None and rs.alias is not None:
            return f"alias -> {rs.alias.dns_name}"
        return ", ".join(values)

    for change in plan.changes:
        shown = change.desired if change.desired is not None else change.previous
        value = fmt_values(shown, change.values)
        if change.marker:
            value += "  [ownership marker]"
        name = change.name + (f" ({change.set_identifier})" if change.set_identifier else "")
        rows.append((change.operation, name, change.type, fmt_ttl(change.ttl), value))
        if change.operation == "update" and change.previous is not None:
            was = fmt_values(change.previous, change.previous.values)
            rows.append(("", "  was", "", fmt_ttl(change.previous.ttl), was))
    for kept in plan.kept:
        rows.append(("kept", kept.name, kept.type, "", kept.reason))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = [
        f"zone {plan.zone} at {plan.target}: {plan.purpose} (owner {plan.owner})",
        *(
            "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:4])) + "  " + row[4]
            for row in rows
        ),
    ]
    counts = plan.counts()
    markers = sum(1 for c in plan.changes if c.marker)
    summary = (
        f"{counts['create']} create, {counts['update']} update, {counts['delete']} delete"
        f" (+{markers} ownership marker change(s)); {plan.existing_sets} existing record sets"
    )
    if plan.empty:
        summary = f"no changes; {plan.existing_sets} existing record sets"
    lines.append(summary)
    if plan.needs_force:
        lines.append("needs --force: " + "; ".join(plan.force_reasons))
    return "\n".join(line.rstrip() for line in lines) + "\n"


# ---------------------------------------------------------------------------
# Applying, reading back, asking over DNS.
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class DnsCheck:
    """One applied set asked of the zone's server after the change.

    ``expected`` holds the values it must answer (empty: it must not exist).
    """

    name: str
    type: str
    transport: Transport
    expected: tuple[str, ...]
    expected_ttl: int | None
    answer: DnsAnswer
    ok: bool


@dataclass(frozen=True)
class PlanOutcome:
    """What ``apply_plan`` did. JSON-serialisable.

    ``dry_run``: nothing was changed. ``applied``: changes made by this call;
    ``already_done``: changes found already in place (a resumed apply).
    ``read_back_problems``: sets the provider's API does not show as planned.
    ``dns_checks``: answers of the zone's server afterwards (none without an endpoint).
    """

    zone: str
    target: str
    purpose: str
    dry_run: bool
    applied: tuple[PlannedChange, ...]
    already_done: int
    read_back_problems: tuple[str, ...]
    dns_endpoint: str
    dns_checks: tuple[DnsCheck, ...]
    finished_at: datetime

    @property
    def ok(self) -> bool:
        """Applied, read back as planned, and every DNS check answered as planned."""
        return (
            not self.dry_run
            and not self.read_back_problems
            and all(check.ok for check in self.dns_checks)
        )


def _in_place(change: PlannedChange, state: RecordSet | None) -> bool:
    if change.operation == "delete":
        return state is None
    return same_record_set(state, change.desired)


def _current_by_key(provider: DnsProvider, zone: str) -> dict[RecordKey, RecordSet]:
    return {rs.key: rs for rs in provider.list_records(zone)}


def undo_resource(plan: ChangePlan, changes: Sequence[PlannedChange]) -> dict[str, Any]:
    """The undo record of ``changes``: each set as it was before and as it will be after."""
    return {
        "zone": plan.zone,
        "target": plan.target,
        "purpose": plan.purpose,
        "sets": [
            {
                "name": c.name,
                "type": c.type,
                "set_identifier": c.set_identifier,
                "before": to_json(c.previous),
                "after": to_json(c.desired),
            }
            for c in changes
        ],
    }


def apply_plan(
    plan: ChangePlan,
    provider: DnsProvider,
    *,
    apply: bool,
    force: bool,
    record_undo: RecordUndo,
    clock: Clock,
    endpoint: AuthoritativeEndpoint | None = None,
    transports: Sequence[Transport] = ("udp", "tcp"),
) -> PlanOutcome:
    """Make the changes of ``plan`` at ``provider``, or only show them (``apply=False``).

    A dry run changes nothing and checks nothing. Otherwise, in this order:
    refuse with ``ThresholdExceeded`` (exit 2, nothing changed) if the plan
    needs force and ``force`` is False; re-read the zone and refuse with
    ``PlanOutdated`` if a set is neither as planned nor already changed;
    call ``record_undo(DNS_CHANGE_UNDO_KIND, resource, description)`` with the
    previous sets of what is left to change; apply it in one request; read
    the zone back through the API; ask ``endpoint`` over each transport.
    A mismatch after applying is reported in the outcome (``ok`` False),
    not raised. Retry-safe: yes; changes already in place are counted in
    ``already_done`` and not made again.
    """
    now = clock.now()
    if not apply:
        return PlanOutcome(plan.zone, plan.target, plan.purpose, True, (), 0, (), "", (), now)
    if plan.needs_force and not force:
        raise ThresholdExceeded(
            f"zone {plan.zone} at {plan.target}: the {plan.purpose} plan "
            + "; ".join(plan.force_reasons)
            + ". Nothing was changed: review the plan and run again with --force"
        )
    if provider.describe() != plan.target:
        raise FatalError(
            f"the {plan.purpose} plan of zone {plan.zone} was made for {plan.target}, "
            f"not {provider.describe()}; plan again for this provider"
        )
    current = _current_by_key(provider, plan.zone)
    todo: list[PlannedChange] = []
    already = 0
    for change in plan.changes:
        state = current.get(change.key)
        if _in_place(change, state):
            already += 1
        elif same_record_set(state, change.previous):
            todo.append(change)
        else:
            raise PlanOutdated(
                f"zone {plan.zone} at {plan.target}: {change.name} {change.type} changed since "
                f"the {plan.purpose} plan was made; nothing was changed, plan again"
            )
    if todo:
        names = sorted({c.name for c in todo if not c.marker})
        record_undo(
            DNS_CHANGE_UNDO_KIND,
            undo_resource(plan, todo),
            f"restore {len(todo)} record set(s) of zone {plan.zone} at {plan.target} "
            f"changed by {plan.purpose}: {', '.join(names) or 'ownership markers'}",
        )
        provider.apply(plan.zone, [c.record_change() for c in todo])
    after = _current_by_key(provider, plan.zone)
    problems = [
        f"{c.name} {c.type}: the provider lists {_describe_state(after.get(c.key))}, "
        f"planned {_describe_state(c.desired)}"
        for c in plan.changes
        if not _in_place(c, after.get(c.key))
    ]
    checks: list[DnsCheck] = []
    if endpoint is not None:
        checks = check_over_dns(plan.changes, endpoint, transports=transports)
    return PlanOutcome(
        zone=plan.zone,
        target=plan.target,
        purpose=plan.purpose,
        dry_run=False,
        applied=tuple(todo),
        already_done=already,
        read_back_problems=tuple(problems),
        dns_endpoint=endpoint.describe() if endpoint is not None else "",
        dns_checks=tuple(checks),
        finished_at=clock.now(),
    )


def _describe_state(rs: RecordSet | None) -> str:
    if rs is None:
        return "no set"
    if rs.alias is not None:
        return f"an alias to {rs.alias.dns_name}"
    return f"TTL {rs.ttl} {', '.join(rs.values)}"


def check_over_dns(
    changes: Iterable[PlannedChange],
    endpoint: AuthoritativeEndpoint,
    *,
    transports: Sequence[Transport] = ("udp", "tcp"),
) -> list[DnsCheck]:
    """Ask ``endpoint`` for every changed set: it must answer the planned data and TTL.

    A deleted set must be absent (NXDOMAIN, or NOERROR without it). Alias
    and routing-policy sets are not asked (plain DNS cannot show them). Retry-safe.
    """
    checks: list[DnsCheck] = []
    for change in changes:
        desired = change.desired
        if change.set_identifier or (desired is not None and desired.alias is not None):
            continue
        expected = desired.values if desired is not None else ()
        expected_ttl = desired.ttl if desired is not None else None
        for transport in transports:
            answer = query_authoritative(endpoint, change.name, change.type, transport=transport)
            if desired is None:
                ok = answer.rcode in ("NXDOMAIN", "NOERROR") and not answer.values
            else:
                ok = (
                    answer.rcode == "NOERROR"
                    and same_values(change.type, answer.values, expected)
                    and answer.ttl == expected_ttl
                )
            checks.append(
                DnsCheck(change.name, change.type, transport, expected, expected_ttl, answer, ok)
            )
    return checks


# ---------------------------------------------------------------------------
# Undo.
# ---------------------------------------------------------------------------


def _set_from(data: Any, where: str) -> RecordSet | None:
    if data is None:
        return None
    try:
        return from_json(RecordSet, data)
    except ValueError as exc:
        raise FatalError(f"undo record {where}: {exc}") from None


def undo_dns_change(resource: Mapping[str, Any], provider: DnsProvider) -> str:
    """Put back the record sets an ``apply_plan`` call replaced; returns what it did.

    ``resource`` is what ``apply_plan`` passed to ``record_undo``. A set now
    as the change left it is restored (re-created, or deleted if the change
    created it); a set already as before is left (so undoing twice is
    harmless: idempotent); a set someone changed since is left as it is and
    named in the message. Raises ``FatalError`` if ``provider`` is not the
    target the change was made at, or the record is malformed; provider
    errors as ``DnsProvider.apply``. Retry-safe: yes.
    """
    try:
        zone = str(resource["zone"])
        target = str(resource["target"])
        entries = list(resource["sets"])
    except (KeyError, TypeError) as exc:
        raise FatalError(f"malformed DNS undo record (missing {exc}); it cannot be run") from None
    if provider.describe() != target:
        raise FatalError(
            f"the DNS change to undo was made at {target}, not {provider.describe()}; "
            "undo it with that provider"
        )
    current = _current_by_key(provider, zone)
    restore: list[RecordChange] = []
    restored: list[str] = []
    untouched = 0
    foreign: list[str] = []
    for index, entry in enumerate(entries):
        before = _set_from(entry.get("before"), f"sets[{index}].before")
        after = _set_from(entry.get("after"), f"sets[{index}].after")
        key = (str(entry["name"]), str(entry["type"]), str(entry.get("set_identifier") or ""))
        label = f"{key[0]} {key[1]}" + (f" ({key[2]})" if key[2] else "")
        state = current.get(key)
        if same_record_set(state, before):
            untouched += 1
        elif same_record_set(state, after):
            if before is None:
                assert state is not None
                restore.append(RecordChange("delete", state))
            else:
                restore.append(RecordChange("update", before))
            restored.append(label)
        else:
            foreign.append(label)
    restore.sort(key=lambda c: _ORDER[c.action])
    provider.apply(zone, restore)
    parts = [f"zone {zone} at {target}: restored {len(restored)} record set(s)"]
    if restored:
        parts[0] += f" ({', '.join(restored)})"
    if untouched:
        parts.append(f"{untouched} already as before")
    if foreign:
        parts.append(
            f"{len(foreign)} changed since by someone else, left as they are: {', '.join(foreign)}"
        )
    return "; ".join(parts)
