"""Deadlines as users write them, durations, and the Deadline value on a frozen clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from orchestrator.clock import FrozenClock
from orchestrator.errors import ConfigError
from orchestrator.run.deadline import (
    Deadline,
    check_deadline_syntax,
    format_duration,
    parse_deadline,
    parse_duration,
)

NOW = datetime(2021, 1, 9, 12, 0, tzinfo=UTC)
LA = ZoneInfo("America/Los_Angeles")
ACCEPTED = (
    "accepted forms: 2021-01-10T23:59:00-08:00 (ISO 8601 with an offset or Z), "
    "2021-01-10 23:59 America/Los_Angeles (wall time in an IANA zone), "
    "2021-01-10 23:59 PST (wall time with a zone abbreviation), "
    "+30h, +90m, +2d, +45s or +1d12h (from now)"
)


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, us: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, us, tzinfo=UTC)


# -- parse_deadline: the accepted forms ------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2021-01-10T23:59:00-08:00", utc(2021, 1, 11, 7, 59)),
        ("2021-01-10T23:59-08:00", utc(2021, 1, 11, 7, 59)),
        ("2021-01-11T07:59:00Z", utc(2021, 1, 11, 7, 59)),
        ("2021-01-10T23:59:30.5+05:30", utc(2021, 1, 10, 18, 29, 30, 500000)),
        ("  2021-01-10T23:59-08:00  ", utc(2021, 1, 11, 7, 59)),
    ],
)
def test_iso_8601_with_offset_is_that_instant(text: str, expected: datetime) -> None:
    assert parse_deadline(text, NOW) == expected


@pytest.mark.parametrize(
    ("text", "delta"),
    [
        ("+30h", timedelta(hours=30)),
        ("+90m", timedelta(minutes=90)),
        ("+2d", timedelta(days=2)),
        ("+45s", timedelta(seconds=45)),
        ("+1d12h", timedelta(days=1, hours=12)),
        ("+1h30m15s", timedelta(hours=1, minutes=30, seconds=15)),
        ("+1d 12h", timedelta(days=1, hours=12)),
        ("+2H", timedelta(hours=2)),
    ],
)
def test_relative_deadline_counts_from_now(text: str, delta: timedelta) -> None:
    at = parse_deadline(text, NOW)
    assert at == NOW + delta
    assert at.tzinfo is UTC


def test_relative_deadline_keeps_the_zone_of_now() -> None:
    now = datetime(2021, 1, 9, 4, 0, tzinfo=LA)
    at = parse_deadline("+1h", now)
    assert at.hour == 5
    assert at.utcoffset() == timedelta(hours=-8)
    assert at.tzname() == "PST"


def test_relative_deadline_across_a_dst_change_counts_real_hours() -> None:
    now = datetime(2021, 3, 14, 1, 30, tzinfo=LA)  # 30 minutes before clocks jump to 03:00
    at = parse_deadline("+1h", now)
    assert at.isoformat() == "2021-03-14T03:30:00-07:00"
    assert at - now == timedelta(hours=1)


def test_wall_time_in_an_iana_zone_uses_that_zones_offset_on_that_date() -> None:
    winter = parse_deadline("2021-01-10 23:59 America/Los_Angeles", NOW)
    summer = parse_deadline("2021-07-10 23:59 America/Los_Angeles", NOW)
    assert winter == utc(2021, 1, 11, 7, 59)  # PST, -08:00
    assert summer == utc(2021, 7, 11, 6, 59)  # PDT, -07:00
    assert winter.isoformat() == "2021-01-10T23:59:00-08:00"
    assert (winter.tzname(), summer.tzname()) == ("PST", "PDT")
    assert parse_deadline("2021-01-10T23:59:30 Europe/Berlin", NOW) == utc(2021, 1, 10, 22, 59, 30)


def test_wall_time_that_daylight_saving_skips_is_refused() -> None:
    # 2021-03-14 02:00-03:00 does not exist in Los Angeles (clocks jump forward).
    with pytest.raises(ConfigError) as err:
        parse_deadline("2021-03-14 02:30 America/Los_Angeles", NOW)
    assert str(err.value) == (
        "--deadline '2021-03-14 02:30 America/Los_Angeles': 2021-03-14 02:30 does not exist "
        "in America/Los_Angeles (the clocks skip it for daylight saving time); pick a time "
        "outside the gap or write an explicit offset, e.g. 2021-03-14T03:30-07:00"
    )


def test_wall_time_that_happens_twice_resolves_to_the_earlier_instant() -> None:
    # 2021-11-07 01:30 happens at -07:00 (PDT) and again an hour later at -08:00 (PST).
    at = parse_deadline("2021-11-07 01:30 America/Los_Angeles", NOW)
    assert at == utc(2021, 11, 7, 8, 30)
    assert at.utcoffset() == timedelta(hours=-7)


def test_wall_times_either_side_of_a_dst_change_are_exactly_the_real_gap_apart() -> None:
    before = parse_deadline("2021-03-14 01:59 America/Los_Angeles", NOW)
    after = parse_deadline("2021-03-14 03:00 America/Los_Angeles", NOW)
    assert after - before == timedelta(minutes=1)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2021-01-10 23:59 PST", utc(2021, 1, 11, 7, 59)),
        ("2021-01-10 23:59 pst", utc(2021, 1, 11, 7, 59)),
        # Written PST in July still means -08:00: the abbreviation is taken as written.
        ("2021-07-10 23:59 PST", utc(2021, 7, 11, 7, 59)),
        ("2021-07-10 23:59 PDT", utc(2021, 7, 11, 6, 59)),
        ("2021-01-10 23:59 UTC", utc(2021, 1, 10, 23, 59)),
        ("2021-01-10 23:59 Z", utc(2021, 1, 10, 23, 59)),
        ("2021-01-10 23:59 EST", utc(2021, 1, 11, 4, 59)),
        ("2021-01-10 23:59 CEST", utc(2021, 1, 10, 21, 59)),
        ("2021-01-10 23:59 JST", utc(2021, 1, 10, 14, 59)),
        ("2021-01-10 23:59 NZDT", utc(2021, 1, 10, 10, 59)),
        ("2021-01-10 23:59 AKST", utc(2021, 1, 11, 8, 59)),
        ("2021-01-10 23:59 -08:00", utc(2021, 1, 11, 7, 59)),
        ("2021-01-10 9:05 +0530", utc(2021, 1, 10, 3, 35)),
    ],
)
def test_wall_time_with_abbreviation_or_offset(text: str, expected: datetime) -> None:
    assert parse_deadline(text, NOW) == expected


def test_abbreviation_result_names_the_zone() -> None:
    at = parse_deadline("2021-01-10 23:59 PST", NOW)
    assert at.tzname() == "PST"
    assert at.isoformat() == "2021-01-10T23:59:00-08:00"


# -- parse_deadline: refusals ----------------------------------------------


def test_ambiguous_abbreviation_is_refused_with_the_candidates() -> None:
    with pytest.raises(ConfigError) as err:
        parse_deadline("2021-01-10 23:59 IST", NOW)
    assert str(err.value) == (
        "--deadline '2021-01-10 23:59 IST': the zone abbreviation 'IST' is ambiguous; it can "
        "mean India +05:30 (Asia/Kolkata), Ireland +01:00 (Europe/Dublin) or Israel +02:00 "
        "(Asia/Jerusalem). Write an IANA zone or an offset instead, e.g. "
        "'2021-01-10 23:59 Asia/Kolkata' or '2021-01-10T23:59+05:30'"
    )
    assert err.value.exit_code == 2


def test_iso_without_offset_asks_for_an_offset_or_zone() -> None:
    with pytest.raises(ConfigError) as err:
        parse_deadline("2021-01-10T23:59", NOW)
    assert str(err.value) == (
        "--deadline '2021-01-10T23:59' has no UTC offset or time zone, so the instant is "
        "unknown; add an offset or zone, e.g. '2021-01-10T23:59-08:00', '2021-01-10T23:59Z' "
        "or '2021-01-10 23:59 America/Los_Angeles'"
    )


@pytest.mark.parametrize(
    "text", ["2021-01-10 23:59", "2021-01-10", "2021-01-10T23:59:00.250"], ids=repr
)
def test_every_zoneless_form_is_refused(text: str) -> None:
    with pytest.raises(ConfigError, match="has no UTC offset or time zone"):
        parse_deadline(text, NOW)


@pytest.mark.parametrize(
    "text",
    ["tomorrow", "next friday 5pm", "2021-13-45T99:99Z", "1610351940", "-5h", "2021/01/10 23:59"],
)
def test_garbage_names_the_flag_quotes_the_input_and_lists_the_forms(text: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_deadline(text, NOW)
    assert str(err.value) == f"--deadline {text!r} is not a time exitplan understands; {ACCEPTED}"


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "is empty"),
        ("   ", "is empty"),
        ("+", "is not a relative time (units d, h, m, s in that order)"),
        ("+30", "is not a relative time (units d, h, m, s in that order)"),
        ("+30x", "is not a relative time (units d, h, m, s in that order)"),
        ("+1m1h", "is not a relative time (units d, h, m, s in that order)"),
        ("+0", "is not a relative time (units d, h, m, s in that order)"),
        ("+99999999999d", "is too far in the future"),
        ("2021-02-30 12:00 UTC", "has an impossible date or time"),
        ("2021-01-10 23:59 +25:00", "has an impossible UTC offset '+25:00'"),
    ],
)
def test_specific_refusals_still_list_the_forms(text: str, why: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_deadline(text, NOW)
    assert str(err.value) == f"--deadline {text!r} {why}; {ACCEPTED}"


def test_unknown_zone_is_named() -> None:
    with pytest.raises(ConfigError) as err:
        parse_deadline("2021-01-10 23:59 Mars/Olympus_Mons", NOW)
    message = str(err.value)
    assert message.startswith(
        "--deadline '2021-01-10 23:59 Mars/Olympus_Mons' names an unknown time zone "
        "'Mars/Olympus_Mons' (use an IANA name such as America/Los_Angeles, or one of AEDT AEST"
    )
    assert message.endswith(f"); {ACCEPTED}")


def test_zone_key_that_looks_like_a_path_is_an_unknown_zone_not_a_crash() -> None:
    with pytest.raises(ConfigError, match=r"names an unknown time zone '\.\./\.\./etc/passwd'"):
        parse_deadline("2021-01-10 23:59 ../../etc/passwd", NOW)


def test_deadline_in_the_past_says_by_how_much() -> None:
    with pytest.raises(ConfigError) as err:
        parse_deadline("2021-01-09T10:30:00Z", NOW)
    assert str(err.value) == (
        "--deadline '2021-01-09T10:30:00Z' is 1h 30m in the past (2021-01-09T10:30:00+00:00, "
        "now is 2021-01-09T12:00:00+00:00); give a time in the future"
    )


def test_past_deadline_shows_now_in_the_zone_the_user_wrote() -> None:
    with pytest.raises(ConfigError) as err:
        parse_deadline("2021-01-08 23:59 PST", NOW)
    assert str(err.value) == (
        "--deadline '2021-01-08 23:59 PST' is 4h 01m in the past "
        "(2021-01-08T23:59:00-08:00, now is 2021-01-09T04:00:00-08:00); "
        "give a time in the future"
    )


def test_deadline_exactly_now_is_refused() -> None:
    with pytest.raises(ConfigError) as err:
        parse_deadline("2021-01-09T12:00:00Z", NOW)
    assert str(err.value).startswith("--deadline '2021-01-09T12:00:00Z' is now (")


def test_one_second_in_the_future_is_accepted() -> None:
    assert parse_deadline("+1s", NOW) == NOW + timedelta(seconds=1)


def test_the_name_in_messages_can_be_a_config_field() -> None:
    with pytest.raises(ConfigError, match=r"^deadline: 'soon' is not a time"):
        parse_deadline("soon", NOW, name="deadline:")


def test_naive_now_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="now must be a timezone-aware datetime"):
        parse_deadline("+1h", datetime(2021, 1, 9, 12, 0))


def test_syntax_check_accepts_old_deadlines_and_refuses_garbage() -> None:
    check_deadline_syntax("1999-01-01T00:00Z")  # past is decided at run time, not load time
    check_deadline_syntax("+30h")
    with pytest.raises(ConfigError, match=r"^deadline '2021-01-10T23:59' has no UTC offset"):
        check_deadline_syntax("2021-01-10T23:59")


@pytest.mark.parametrize(
    "text",
    [
        "9999-12-31T23:59:00-08:00",
        "9999-12-31T23:59:00+08:00",
        "9999-12-31T23:59:59Z",
        "9999-12-31 23:59 PST",
        "9999-12-31 23:59 America/Los_Angeles",
        "9999-12-31 23:59 -05:00",
        "0001-01-01T00:00+05:00",
        "0001-01-01 00:00 Asia/Tokyo",
    ],
)
def test_deadlines_at_the_ends_of_the_calendar_are_refused_not_overflowed(text: str) -> None:
    """Year 9999 with an offset or a zone, or year 1 east of UTC, has no UTC
    instant a datetime can hold: a clean ConfigError, at load and at run time."""
    expected = (
        f"{text!r} is outside the dates exitplan can count with (years 1 to 9998, in UTC); "
        "check the year"
    )
    with pytest.raises(ConfigError) as err:
        check_deadline_syntax(text)
    assert str(err.value) == f"deadline {expected}"
    with pytest.raises(ConfigError) as err:
        parse_deadline(text, NOW)
    assert str(err.value) == f"--deadline {expected}"


def test_the_latest_deadline_taken_works_in_every_zone() -> None:
    at = parse_deadline("9998-12-31 23:59 Pacific/Kiritimati", NOW)
    assert at == utc(9998, 12, 31, 9, 59)
    assert Deadline(at, timedelta(days=1)).margin_if_finished_at(NOW) > timedelta(0)


# -- durations --------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2h", timedelta(hours=2)),
        ("90m", timedelta(minutes=90)),
        ("1d", timedelta(days=1)),
        ("30s", timedelta(seconds=30)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("1d2h3m4s", timedelta(days=1, hours=2, minutes=3, seconds=4)),
        ("1h 30m", timedelta(hours=1, minutes=30)),
        (" 45M ", timedelta(minutes=45)),
        ("0", timedelta(0)),
        ("0m", timedelta(0)),
    ],
)
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert parse_duration(text, "safety_margin") == expected


@pytest.mark.parametrize("text", ["", "30", "-1h", "1.5h", "2 hours", "1m1h", "h", "1w"])
def test_parse_duration_refusal_names_the_field(text: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_duration(text, "safety_margin")
    assert str(err.value) == (
        f"safety_margin: {text!r} is not a duration; write it as a number with a unit "
        "(d, h, m, s), e.g. 30m, 2h, 1h30m, 1d, 45s, or 0 for none"
    )


@pytest.mark.parametrize(
    ("td", "text"),
    [
        (timedelta(days=1, hours=2, minutes=3, seconds=4), "1d 02h 03m"),
        (timedelta(days=12), "12d 00h 00m"),
        (timedelta(hours=3, minutes=7, seconds=59), "3h 07m"),
        (timedelta(minutes=4, seconds=5), "4m 05s"),
        (timedelta(seconds=12), "12s"),
        (timedelta(seconds=0.9), "0s"),
        (timedelta(0), "0s"),
        (-timedelta(minutes=4, seconds=5), "-4m 05s"),
        (-timedelta(days=1, hours=2, minutes=3), "-1d 02h 03m"),
    ],
)
def test_format_duration(td: timedelta, text: str) -> None:
    assert format_duration(td) == text


# -- Deadline ----------------------------------------------------------------


def test_remaining_follows_the_clock() -> None:
    clock = FrozenClock(NOW)
    deadline = Deadline(at=NOW + timedelta(hours=30), safety_margin=timedelta(hours=2))
    assert deadline.remaining(clock) == timedelta(hours=30)
    clock.advance(timedelta(hours=29, minutes=30))
    assert deadline.remaining(clock) == timedelta(minutes=30)
    clock.advance(timedelta(hours=1))
    assert deadline.remaining(clock) == -timedelta(minutes=30)


def test_remaining_compares_instants_across_zones() -> None:
    deadline = Deadline(at=parse_deadline("2021-01-09 08:00 America/Los_Angeles", NOW))
    assert deadline.remaining(FrozenClock(NOW)) == timedelta(hours=4)


def test_margin_and_will_make_it_keep_the_safety_margin() -> None:
    at = NOW + timedelta(hours=10)
    deadline = Deadline(at=at, safety_margin=timedelta(hours=2))
    assert deadline.cutoff == NOW + timedelta(hours=8)
    assert deadline.margin_if_finished_at(NOW + timedelta(hours=5)) == timedelta(hours=3)
    assert deadline.will_make_it(NOW + timedelta(hours=5))
    assert deadline.will_make_it(NOW + timedelta(hours=8))  # exactly on the cutoff
    assert deadline.margin_if_finished_at(NOW + timedelta(hours=9)) == -timedelta(hours=1)
    assert not deadline.will_make_it(NOW + timedelta(hours=9))  # before `at`, but eats the margin


def test_default_margin_is_zero() -> None:
    deadline = Deadline(at=NOW)
    assert deadline.will_make_it(NOW)
    assert not deadline.will_make_it(NOW + timedelta(seconds=1))


def test_deadline_refuses_naive_times_and_negative_margins() -> None:
    with pytest.raises(ValueError, match=r"Deadline\.at must be a timezone-aware"):
        Deadline(at=datetime(2021, 1, 10))
    with pytest.raises(ValueError, match="safety_margin must not be negative"):
        Deadline(at=NOW, safety_margin=-timedelta(minutes=1))
    with pytest.raises(ValueError, match="finish time must be a timezone-aware"):
        Deadline(at=NOW).will_make_it(datetime(2021, 1, 10))


def test_fixed_offset_and_iana_deadlines_for_the_same_instant_are_equal() -> None:
    a = Deadline(at=parse_deadline("2021-01-10 23:59 PST", NOW))
    b = Deadline(at=parse_deadline("2021-01-10 23:59 America/Los_Angeles", NOW))
    c = Deadline(at=datetime(2021, 1, 10, 23, 59, tzinfo=timezone(timedelta(hours=-8))))
    assert a.at == b.at == c.at


def test_margin_is_exact_across_a_dst_change_even_with_zoneinfo_times() -> None:
    at = datetime(2021, 3, 14, 4, 0, tzinfo=LA)  # 04:00 PDT = 11:00 UTC
    finish = datetime(2021, 3, 14, 1, 0, tzinfo=LA)  # 01:00 PST = 09:00 UTC
    deadline = Deadline(at=at)
    # The wall clocks are 3 hours apart; only 2 real hours pass.
    assert deadline.margin_if_finished_at(finish) == timedelta(hours=2)
    assert deadline.remaining(FrozenClock(utc(2021, 3, 14, 9, 0))) == timedelta(hours=2)


def test_absurdly_long_duration_is_refused_not_crashed() -> None:
    with pytest.raises(ConfigError) as err:
        parse_duration("99999999999d", "safety_margin")
    assert str(err.value) == "safety_margin: '99999999999d' is too long to be a duration"
