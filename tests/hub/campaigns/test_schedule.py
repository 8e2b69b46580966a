"""Cron rules in IANA zones: local times kept across DST, gaps and repeats fire once, missed
slots collapse into one late run."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from hub.campaigns.schedule import Cron, describe_next, due_firing, last_fire, next_fire, zone
from hub.errors import ValidationError

BERLIN = zone("Europe/Berlin")
NEW_YORK = zone("America/New_York")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def fires(cron: str, tz, start: datetime, count: int) -> list[datetime]:
    rule = Cron.parse(cron)
    out, moment = [], start
    for _ in range(count):
        moment = next_fire(rule, tz, moment)
        out.append(moment)
    return out


def test_nine_local_stays_nine_local_across_both_changes():
    spring = fires("0 9 * * *", BERLIN, utc(2025, 3, 28, 12), 3)
    assert [f.astimezone(BERLIN).hour for f in spring] == [9, 9, 9]
    assert [f.hour for f in spring] == [8, 7, 7]  # UTC moves by the offset change
    autumn = fires("0 9 * * *", BERLIN, utc(2025, 10, 24, 12), 3)
    assert [f.astimezone(BERLIN).hour for f in autumn] == [9, 9, 9]
    assert [f.hour for f in autumn] == [7, 8, 8]


def test_time_in_the_spring_gap_fires_once_at_the_end_of_the_gap():
    # 30 March 2025, Berlin: 02:00 jumps to 03:00; 02:30 does not exist that day.
    got = fires("30 2 * * *", BERLIN, utc(2025, 3, 29, 12), 3)
    assert got[0] == utc(2025, 3, 30, 1, 0)  # 03:00 CEST, the first instant after the gap
    assert got[0].astimezone(BERLIN).strftime("%H:%M") == "03:00"
    assert [g.astimezone(BERLIN).strftime("%d %H:%M") for g in got[1:]] == ["31 02:30", "01 02:30"]


def test_several_gap_times_collapse_into_one_firing():
    got = fires("*/15 2 * * *", BERLIN, utc(2025, 3, 30, 0, 0), 2)
    assert got[0] == utc(2025, 3, 30, 1, 0)
    assert got[1].astimezone(BERLIN).strftime("%d %H:%M") == "31 02:00"


def test_ambiguous_autumn_time_fires_once_at_its_first_occurrence():
    # 26 October 2025, Berlin: 03:00 CEST goes back to 02:00 CET; 02:30 happens twice.
    got = fires("30 2 * * *", BERLIN, utc(2025, 10, 25, 12), 2)
    assert got[0] == utc(2025, 10, 26, 0, 30)  # 02:30 CEST, the first one
    assert got[1] == utc(2025, 10, 27, 1, 30)  # next day, not 02:30 CET the same night


def test_hourly_rule_does_not_repeat_the_repeated_hour():
    got = fires("0 * * * *", BERLIN, utc(2025, 10, 25, 23, 0), 3)
    local = [g.astimezone(BERLIN).strftime("%H:%M%z") for g in got]
    assert local == ["02:00+0200", "03:00+0100", "04:00+0100"]


def test_new_york_changes_on_other_dates():
    got = fires("0 9 * * 1-5", NEW_YORK, utc(2025, 3, 7, 20), 2)  # Fri, then Mon after change
    assert [g.astimezone(NEW_YORK).strftime("%a %H:%M") for g in got] == ["Mon 09:00", "Tue 09:00"]
    assert got[0] == utc(2025, 3, 10, 13)  # EDT, UTC-4


def test_starting_inside_a_repeated_hour_does_not_refire_the_first_occurrence():
    # 02:10 CET (second pass) is after 02:30 CEST; 02:30 must not fire again that night.
    start = utc(2025, 10, 26, 1, 10)
    assert next_fire(Cron.parse("30 2 * * *"), BERLIN, start) == utc(2025, 10, 27, 1, 30)


def test_cron_syntax():
    daily = Cron.parse("@daily")
    assert (daily.minutes, daily.hours, daily.days) == ({0}, {0}, set(range(1, 32)))
    rule = Cron.parse("5,35 8-10/2 * jan-mar mon,FRI")
    assert rule.minutes == {5, 35} and rule.hours == {8, 10}
    assert rule.months == {1, 2, 3} and rule.weekdays == {1, 5}
    assert Cron.parse("0 0 * * 7").weekdays == {0}
    for bad in (
        "",
        "* * * *",
        "60 * * * *",
        "* 24 * * *",
        "5-1 * * * *",
        "*/0 * * * *",
        "x * * * *",
    ):
        with pytest.raises(ValidationError):
            Cron.parse(bad)


def test_day_of_month_or_weekday_like_vixie_cron():
    # "the 1st, or any Monday"
    got = fires("0 12 1 * mon", zone("UTC"), utc(2025, 9, 1, 13), 3)
    assert [g.day for g in got] == [8, 15, 22]
    got = fires("0 12 13 * fri", zone("UTC"), utc(2025, 6, 1), 2)
    assert [g.strftime("%d %a") for g in got] == ["06 Fri", "13 Fri"]


def test_leap_day_rule_searches_years_ahead():
    assert next_fire(Cron.parse("0 0 29 2 *"), zone("UTC"), utc(2025, 3, 1)) == utc(2028, 2, 29)


def test_unknown_zone_and_naive_datetimes_are_refused():
    with pytest.raises(ValidationError):
        zone("Mars/Olympus")
    with pytest.raises(ValueError):
        next_fire(Cron.parse("0 9 * * *"), BERLIN, datetime(2025, 1, 1))  # noqa: DTZ001


def test_last_fire_mirrors_next_fire():
    rule = Cron.parse("0 9 * * *")
    assert last_fire(rule, BERLIN, utc(2025, 3, 31, 6, 59)) == utc(2025, 3, 30, 7)
    assert last_fire(rule, BERLIN, utc(2025, 3, 31, 7)) == utc(2025, 3, 31, 7)
    assert last_fire(Cron.parse("30 2 * * *"), BERLIN, utc(2025, 3, 30, 1, 5)) == utc(
        2025, 3, 30, 1
    )


def test_missed_slots_while_down_collapse_into_one_late_run():
    # Due since 20 March 09:00, hub back on 31 March 08:30 local: one late run, for the latest
    # missed slot (30 March 09:00); 31 March 09:00 is still to come and fires on time.
    firing = due_firing(
        kind="cron",
        cron_text="0 9 * * *",
        tz_name="Europe/Berlin",
        due_at=utc(2025, 3, 20, 8),
        now=utc(2025, 3, 31, 6, 30),
    )
    assert firing.slot == utc(2025, 3, 30, 7)
    assert firing.missed_since == utc(2025, 3, 20, 8)
    assert firing.next_at == utc(2025, 3, 31, 7)


def test_a_slot_on_time_is_not_late():
    firing = due_firing(
        kind="cron",
        cron_text="0 9 * * *",
        tz_name="Europe/Berlin",
        due_at=utc(2025, 3, 31, 7),
        now=utc(2025, 3, 31, 7, 0, 3),
    )
    assert firing.slot == utc(2025, 3, 31, 7)
    assert firing.missed_since is None
    assert firing.next_at == utc(2025, 4, 1, 7)


def test_one_off_fires_once():
    firing = due_firing(
        kind="once", cron_text=None, tz_name="UTC", due_at=utc(2025, 1, 1), now=utc(2025, 1, 5)
    )
    assert firing.slot == utc(2025, 1, 1)
    assert firing.next_at is None


def test_describe_next():
    got = describe_next("0 9 * * *", "Europe/Berlin", utc(2025, 3, 28, 12), 3)
    assert [g.astimezone(BERLIN).strftime("%d %H:%M") for g in got] == [
        "29 09:00",
        "30 09:00",
        "31 09:00",
    ]
