"""Deadlines and durations as people write them, turned into exact instants.

A deadline is the moment the source account goes away. Users write it the way
the shutdown notice did ("2021-01-10 23:59 PST"), the way a scheduler does
(ISO 8601 with an offset) or relative to now ("+30h"). Every form must end in
an aware datetime: a deadline without a zone is a guess, and a guess that is
off by the UTC offset loses hours of evacuation time, so it is refused.

Nothing here reads the system clock: ``now`` and ``Clock`` are passed in, so
tests run on a ``FrozenClock`` and never sleep.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from orchestrator.clock import Clock
from orchestrator.errors import ConfigError

#: Abbreviations that name one offset wherever they are used. Written as a
#: fixed offset on purpose: "23:59 PST" in July means -08:00, because that is
#: what the user wrote.
_ABBREVIATION_HOURS: dict[str, float] = {
    "UTC": 0,
    "GMT": 0,
    "Z": 0,
    "PST": -8,
    "PDT": -7,
    "MST": -7,
    "MDT": -6,
    "CST": -6,
    "CDT": -5,
    "EST": -5,
    "EDT": -4,
    "AKST": -9,
    "AKDT": -8,
    "HST": -10,
    "CET": 1,
    "CEST": 2,
    "EET": 2,
    "EEST": 3,
    "WET": 0,
    "WEST": 1,
    "BST": 1,
    "JST": 9,
    "KST": 9,
    "AEST": 10,
    "AEDT": 11,
    "NZST": 12,
    "NZDT": 13,
}

#: Abbreviations that mean different offsets in different places; guessing one
#: could move the deadline by hours, so they are refused with the candidates.
_AMBIGUOUS_ABBREVIATIONS: dict[str, str] = {
    "IST": "India +05:30 (Asia/Kolkata), Ireland +01:00 (Europe/Dublin) "
    "or Israel +02:00 (Asia/Jerusalem)",
    "AST": "Atlantic -04:00 (America/Halifax) or Arabia +03:00 (Asia/Riyadh)",
    "ADT": "Atlantic -03:00 (America/Halifax) or Arabia +04:00 (historic Baghdad)",
    "GST": "Gulf +04:00 (Asia/Dubai) or South Georgia -02:00 (Atlantic/South_Georgia)",
    "SST": "Samoa -11:00 (Pacific/Pago_Pago) or Singapore +08:00 (Asia/Singapore)",
    "BDT": "Bangladesh +06:00 (Asia/Dhaka) or Brunei +08:00 (Asia/Brunei)",
}

_ACCEPTED_FORMS = (
    "accepted forms: 2021-01-10T23:59:00-08:00 (ISO 8601 with an offset or Z), "
    "2021-01-10 23:59 America/Los_Angeles (wall time in an IANA zone), "
    "2021-01-10 23:59 PST (wall time with a zone abbreviation), "
    "+30h, +90m, +2d, +45s or +1d12h (from now)"
)

#: The latest instant a deadline may name. A year short of what ``datetime``
#: can hold, so showing the deadline in any zone, or adding a day to it, can
#: never overflow.
LATEST_DEADLINE = datetime(9999, 1, 1, tzinfo=UTC)
#: The earliest: one day of slack above ``datetime.min`` for the same reason.
_EARLIEST_INSTANT = datetime(1, 1, 2, tzinfo=UTC)

_DURATION_RE = re.compile(
    r"(?:(?P<d>\d+)\s*d)?\s*(?:(?P<h>\d+)\s*h)?\s*(?:(?P<m>\d+)\s*m)?\s*(?:(?P<s>\d+)\s*s)?",
    re.IGNORECASE,
)

_WALL_TIME_RE = re.compile(
    r"(?P<date>\d{4}-\d{2}-\d{2})[T ](?P<time>\d{1,2}:\d{2}(?::\d{2})?)\s+(?P<zone>\S+)"
)
_OFFSET_RE = re.compile(r"(?P<sign>[+-])(?P<hh>\d{2}):?(?P<mm>\d{2})")


def _duration_or_none(text: str) -> timedelta | None:
    """``1d12h``-style text as a timedelta, or None if it is not one.

    Units must come in the order d, h, m, s, each at most once, so ``1m1h`` is
    refused rather than read one way or the other.
    """
    stripped = text.strip()
    if stripped == "0":
        return timedelta(0)
    match = _DURATION_RE.fullmatch(stripped)
    if match is None or not any(match.groupdict().values()):
        return None
    parts = {unit: int(value) for unit, value in match.groupdict().items() if value}
    # OverflowError (more than ~2.7 million years) is left to the caller to word.
    return timedelta(
        days=parts.get("d", 0),
        hours=parts.get("h", 0),
        minutes=parts.get("m", 0),
        seconds=parts.get("s", 0),
    )


def parse_duration(text: str, field: str) -> timedelta:
    """A non-negative duration such as ``2h``, ``90m``, ``1d``, ``30s``, ``1h30m`` or ``0``.

    Raises ``ConfigError`` naming ``field`` when ``text`` is not one. A bare
    number other than ``0`` is refused: ``30`` could be seconds or minutes.
    """
    try:
        duration = _duration_or_none(text)
    except OverflowError:
        raise ConfigError(f"{field}: {text!r} is too long to be a duration") from None
    if duration is None:
        raise ConfigError(
            f"{field}: {text!r} is not a duration; write it as a number with a unit "
            "(d, h, m, s), e.g. 30m, 2h, 1h30m, 1d, 45s, or 0 for none"
        )
    return duration


def format_duration(td: timedelta) -> str:
    """A compact, human form: ``1d 02h 03m``, ``3h 07m``, ``4m 05s``, ``12s``.

    Only the two or three leading units are shown (seconds are dropped once
    there are days), fractions of a second are truncated, and a negative
    duration gets a leading ``-``.
    """
    sign = "-" if td < timedelta(0) else ""
    total = int(abs(td).total_seconds())
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        body = f"{days}d {hours:02d}h {minutes:02d}m"
    elif hours:
        body = f"{hours}h {minutes:02d}m"
    elif minutes:
        body = f"{minutes}m {seconds:02d}s"
    else:
        body = f"{seconds}s"
    return sign + body


def _bad_deadline(
    name: str, text: str, why: str = "is not a time exitplan understands"
) -> ConfigError:
    return ConfigError(f"{name} {text!r} {why}; {_ACCEPTED_FORMS}")


def _zone_for(token: str, name: str, text: str) -> tzinfo:
    """The tzinfo a wall time's zone token names: abbreviation, offset or IANA key."""
    upper = token.upper()
    if upper in _ABBREVIATION_HOURS:
        return timezone(timedelta(hours=_ABBREVIATION_HOURS[upper]), upper)
    if upper in _AMBIGUOUS_ABBREVIATIONS:
        raise ConfigError(
            f"{name} {text!r}: the zone abbreviation {upper!r} is ambiguous; it can mean "
            f"{_AMBIGUOUS_ABBREVIATIONS[upper]}. Write an IANA zone or an offset instead, "
            "e.g. '2021-01-10 23:59 Asia/Kolkata' or '2021-01-10T23:59+05:30'"
        )
    offset = _OFFSET_RE.fullmatch(token)
    if offset is not None:
        delta = timedelta(hours=int(offset["hh"]), minutes=int(offset["mm"]))
        if delta >= timedelta(hours=24):
            raise _bad_deadline(name, text, f"has an impossible UTC offset {token!r}")
        return timezone(-delta if offset["sign"] == "-" else delta)
    try:
        return ZoneInfo(token)
    except (ZoneInfoNotFoundError, ValueError):
        # ValueError: keys such as "../x" that ZoneInfo refuses outright.
        raise _bad_deadline(
            name,
            text,
            f"names an unknown time zone {token!r} (use an IANA name such as "
            "America/Los_Angeles, or one of " + " ".join(sorted(_ABBREVIATION_HOURS)) + ")",
        ) from None


def _localize(naive: datetime, zone: tzinfo, name: str, text: str) -> datetime:
    """Attach ``zone`` to a wall time, refusing times that daylight saving skips.

    A wall time that happens twice (clocks going back) resolves to the earlier
    instant: for a deadline, erring early costs minutes, erring late costs
    everything not yet copied.
    """
    aware = naive.replace(tzinfo=zone, fold=0)
    if not isinstance(zone, ZoneInfo):
        return aware
    round_trip = aware.astimezone(UTC).astimezone(zone).replace(tzinfo=None, fold=0)
    if round_trip != naive:
        raise ConfigError(
            f"{name} {text!r}: {naive:%Y-%m-%d %H:%M} does not exist in {zone.key} "
            "(the clocks skip it for daylight saving time); pick a time outside the gap "
            "or write an explicit offset, e.g. 2021-03-14T03:30-07:00"
        )
    return aware


def _fixed(value: datetime) -> datetime:
    """``value`` with its zone replaced by the fixed offset (and name) in force then.

    Python compares and subtracts datetimes that share a ZoneInfo by wall
    clock, ignoring a DST change between them, and never finds a time in a
    DST fold equal to one in another zone. A fixed offset keeps the instant
    exact for every caller while still printing as the user's local time.
    """
    if isinstance(value.tzinfo, timezone):
        return value
    offset = value.utcoffset()
    assert offset is not None  # callers pass aware datetimes only
    name = value.tzname()
    return value.astimezone(timezone(offset, name) if name else timezone(offset))


def _resolve_deadline(text: str, now: datetime, name: str) -> datetime:
    """The instant ``text`` names, relative forms counted from ``now``; no past check.

    Refuses instants ``datetime`` cannot carry into every zone (the year 9999
    with an offset west of UTC, say) as a ``ConfigError``, never an overflow.
    """
    try:
        at = _instant_named(text, now, name)
        in_utc = at.astimezone(UTC)
    except OverflowError:
        in_utc = None
    if in_utc is None or not _EARLIEST_INSTANT <= in_utc < LATEST_DEADLINE:
        raise ConfigError(
            f"{name} {text!r} is outside the dates exitplan can count with (years 1 to "
            "9998, in UTC); check the year"
        )
    return at


def _instant_named(text: str, now: datetime, name: str) -> datetime:
    stripped = text.strip()
    if not stripped:
        raise _bad_deadline(name, text, "is empty")

    if stripped.startswith("+"):
        try:
            delta = _duration_or_none(stripped[1:])
            if delta is None or stripped[1:].strip() == "0":
                raise _bad_deadline(
                    name, text, "is not a relative time (units d, h, m, s in that order)"
                )
            # Add in UTC: adding to a zoned wall time would count a DST jump wrong.
            return _fixed((now.astimezone(UTC) + delta).astimezone(now.tzinfo))
        except OverflowError:
            raise _bad_deadline(name, text, "is too far in the future") from None

    wall = _WALL_TIME_RE.fullmatch(stripped)
    if wall is not None:
        zone = _zone_for(wall["zone"], name, text)
        try:
            naive = datetime.fromisoformat(f"{wall['date']}T{wall['time']:0>5}")
        except ValueError:
            raise _bad_deadline(name, text, "has an impossible date or time") from None
        return _fixed(_localize(naive, zone, name, text))

    try:
        parsed = datetime.fromisoformat(stripped)
    except ValueError:
        raise _bad_deadline(name, text) from None
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise ConfigError(
            f"{name} {text!r} has no UTC offset or time zone, so the instant is unknown; "
            f"add an offset or zone, e.g. '{parsed:%Y-%m-%dT%H:%M}-08:00', "
            f"'{parsed:%Y-%m-%dT%H:%M}Z' or '{parsed:%Y-%m-%d %H:%M} America/Los_Angeles'"
        )
    return parsed


def _require_aware(value: datetime, what: str) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be a timezone-aware datetime, got {value!r}")


def parse_deadline(text: str, now: datetime, *, name: str = "--deadline") -> datetime:
    """The aware instant ``text`` names, which must be after ``now``.

    Accepts ISO 8601 with an offset or ``Z``; ``+30h``-style times relative to
    ``now``; and a wall time followed by an IANA zone, a fixed offset or an
    unambiguous abbreviation (``2021-01-10 23:59 PST``). The result carries, as a
    fixed offset, the UTC offset in force at that instant in the zone the user
    wrote (``now``'s zone for relative forms), so arithmetic on it is exact.

    Raises ``ConfigError`` (exit code 2) whose message starts with ``name``
    (``--deadline`` unless a config field is being read) and quotes ``text``:
    for unparseable text (listing the accepted forms), ISO without an offset,
    ambiguous abbreviations, unknown zones, wall times skipped by daylight
    saving, and deadlines at or before ``now`` (saying by how much).
    ``ValueError`` if ``now`` is naive (a programming error).
    """
    _require_aware(now, "now")
    at = _resolve_deadline(text, now, name)
    if at.astimezone(UTC) <= now.astimezone(UTC):
        late = now.astimezone(UTC) - at.astimezone(UTC)
        when = "is now" if late == timedelta(0) else f"is {format_duration(late)} in the past"
        raise ConfigError(
            f"{name} {text!r} {when} ({at.isoformat()}, now is "
            f"{now.astimezone(at.tzinfo).isoformat()}); give a time in the future"
        )
    return at


def check_deadline_syntax(text: str, *, name: str = "deadline") -> None:
    """Raise ``ConfigError`` if ``text`` could never be a deadline, whatever the time.

    For config loading: the file is read long before the run starts, so
    whether the deadline has passed is decided later, by ``parse_deadline``.
    """
    _resolve_deadline(text, datetime(2000, 1, 1, tzinfo=UTC), name)


@dataclass(frozen=True)
class Deadline:
    """When the source goes away, and how much of the time before it we keep spare.

    ``at`` is the hard end; ``cutoff`` (``at - safety_margin``) is the time by
    which the plan means to be finished. Both datetimes must be aware.
    """

    at: datetime
    safety_margin: timedelta = timedelta(0)

    def __post_init__(self) -> None:
        _require_aware(self.at, "Deadline.at")
        if self.safety_margin < timedelta(0):
            raise ValueError(f"safety_margin must not be negative, got {self.safety_margin}")

    @property
    def cutoff(self) -> datetime:
        """The time the work should be finished by (in UTC): the deadline minus the margin."""
        return self.at.astimezone(UTC) - self.safety_margin

    def remaining(self, clock: Clock) -> timedelta:
        """Time left until the hard deadline ``at`` (negative once it has passed)."""
        # In UTC: datetimes sharing a ZoneInfo subtract by wall clock, across DST too.
        return self.at.astimezone(UTC) - clock.now().astimezone(UTC)

    def margin_if_finished_at(self, t: datetime) -> timedelta:
        """``at - safety_margin - t``: spare time if the work ends at ``t``.

        Negative means finishing at ``t`` eats into the safety margin (or
        misses the deadline outright, when below ``-safety_margin``).
        """
        _require_aware(t, "finish time")
        return self.cutoff - t.astimezone(UTC)

    def will_make_it(self, projected_finish: datetime) -> bool:
        """Whether finishing at ``projected_finish`` keeps the whole safety margin."""
        return self.margin_if_finished_at(projected_finish) >= timedelta(0)
