"""When campaigns fire: cron rules ("minute hour day month weekday") in an IANA zone, DST-correct.

Rules are matched against local wall-clock time. Across daylight-saving changes:
- 09:00 local stays 09:00 local (the UTC instant moves by the offset change);
- a local time that does not exist (spring gap) fires once, at the first instant after the gap;
- a local time that exists twice (autumn) fires once, at its first occurrence.
All instants given and returned are timezone-aware UTC."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from hub.errors import ValidationError

_MONTHS = {
    name: i + 1
    for i, name in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
    )
}
_DAYS = {name: i for i, name in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))}
# Search limit: a rule like "0 0 29 2 1" (Feb 29 that is a Monday) fires every 28 years at worst.
_MAX_DAYS = 366 * 30
_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}


def zone(name: str) -> ZoneInfo:
    """The IANA zone, or ValidationError naming the bad one."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as err:
        raise ValidationError(f"unknown time zone {name!r}", field="timezone") from err


def _field(text: str, low: int, high: int, names: dict[str, int], what: str) -> frozenset[int]:
    values: set[int] = set()
    for part in text.lower().split(","):
        if not part:
            raise ValidationError(f"cron {what}: empty list item", field="cron")
        body, _, step_text = part.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) == 0:
                raise ValidationError(f"cron {what}: bad step {step_text!r}", field="cron")
            step = int(step_text)
        if body == "*":
            start, end = low, high
        else:
            first, dash, last = body.partition("-")
            start = _value(first, low, high, names, what)
            end = _value(last, low, high, names, what) if dash else (high if step_text else start)
            if end < start:
                raise ValidationError(f"cron {what}: range {body!r} runs backwards", field="cron")
        values.update(range(start, end + 1, step))
    return frozenset(values)


def _value(text: str, low: int, high: int, names: dict[str, int], what: str) -> int:
    if text in names:
        return names[text]
    if not text.isdigit():
        raise ValidationError(f"cron {what}: {text!r} is not a number", field="cron")
    value = int(text)
    if what == "weekday" and value == 7:
        return 0  # both 0 and 7 mean Sunday
    if not low <= value <= high:
        raise ValidationError(f"cron {what}: {value} is outside {low}-{high}", field="cron")
    return value


@dataclass(frozen=True)
class Cron:
    """A parsed cron rule; `matches_day` follows Vixie cron (day-of-month OR weekday if both set)."""

    text: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    any_day: bool
    any_weekday: bool

    @classmethod
    def parse(cls, text: str) -> Cron:
        """Parse "minute hour day month weekday" (names, lists, ranges, steps, @daily...)."""
        raw = " ".join((text or "").split())
        spec = _MACROS.get(raw.lower(), raw)
        parts = spec.split(" ")
        if len(parts) != 5:
            raise ValidationError(
                "cron needs 5 fields: minute hour day month weekday, e.g. '0 9 * * *'",
                field="cron",
            )
        minute, hour, day, month, weekday = parts
        return cls(
            text=raw,
            minutes=_field(minute, 0, 59, {}, "minute"),
            hours=_field(hour, 0, 23, {}, "hour"),
            days=_field(day, 1, 31, {}, "day"),
            months=_field(month, 1, 12, _MONTHS, "month"),
            weekdays=_field(weekday, 0, 7, _DAYS, "weekday"),
            any_day=day == "*",
            any_weekday=weekday == "*",
        )

    def matches_day(self, day: date) -> bool:
        """True when the rule fires on this calendar day."""
        if day.month not in self.months:
            return False
        dom = day.day in self.days
        dow = (day.isoweekday() % 7) in self.weekdays
        if self.any_day or self.any_weekday:
            return dom and dow
        return dom or dow


def to_instant(local: datetime, tz: ZoneInfo) -> datetime:
    """UTC instant of a naive local wall time: first occurrence if ambiguous, gap end if missing."""
    first = local.replace(tzinfo=tz, fold=0)
    instant = first.astimezone(UTC)
    if instant.astimezone(tz).replace(tzinfo=None) == local:
        return instant  # exists (fold=0 is the earlier of two if ambiguous)
    # In the spring gap: fold=1 reads it with the offset after the change (an earlier instant),
    # fold=0 with the one before (a later instant); the transition lies between. Find the first
    # instant whose wall time is at or after `local`.
    low = local.replace(tzinfo=tz, fold=1).astimezone(UTC)
    high = instant
    if low > high:
        low, high = high, low
    while high - low > timedelta(seconds=1):
        mid = low + (high - low) / 2
        if mid.astimezone(tz).replace(tzinfo=None) >= local:
            high = mid
        else:
            low = mid
    # Offsets change on whole seconds: the transition is `high` rounded down, or the next second.
    floor = high.replace(microsecond=0)
    return (
        floor
        if floor.astimezone(tz).replace(tzinfo=None) >= local
        else floor + timedelta(seconds=1)
    )


def _local(instant: datetime, tz: ZoneInfo) -> datetime:
    return instant.astimezone(tz).replace(tzinfo=None)


def next_fire(cron: Cron, tz: ZoneInfo, after: datetime) -> datetime:
    """The first instant strictly after `after` at which the rule fires."""
    _require_aware(after)
    # Wall times are monotonic in instants except inside an autumn repeat, where a wall time seen
    # at fold=1 maps (fold=0) to an earlier instant; scanning from one hour before and demanding
    # "instant > after" covers it.
    start = (_local(after, tz) - timedelta(hours=3)).replace(second=0, microsecond=0)
    day = start.date()
    for _ in range(_MAX_DAYS):
        if cron.matches_day(day):
            for hour in sorted(cron.hours):
                for minute in sorted(cron.minutes):
                    local = datetime(day.year, day.month, day.day, hour, minute)  # noqa: DTZ001
                    if local < start:
                        continue
                    instant = to_instant(local, tz)
                    if instant > after:
                        return instant
        day += timedelta(days=1)
    raise ValidationError(f"cron {cron.text!r} never fires", field="cron")


def last_fire(cron: Cron, tz: ZoneInfo, at_or_before: datetime) -> datetime | None:
    """The latest instant at or before `at_or_before` at which the rule fired (None if none)."""
    _require_aware(at_or_before)
    end = _local(at_or_before, tz) + timedelta(hours=3)
    day = end.date()
    for _ in range(_MAX_DAYS):
        if cron.matches_day(day):
            for hour in sorted(cron.hours, reverse=True):
                for minute in sorted(cron.minutes, reverse=True):
                    local = datetime(day.year, day.month, day.day, hour, minute)  # noqa: DTZ001
                    if local > end:
                        continue
                    instant = to_instant(local, tz)
                    if instant <= at_or_before:
                        return instant
        day -= timedelta(days=1)
    return None


def _require_aware(moment: datetime) -> None:
    if moment.tzinfo is None:
        raise ValueError("naive datetime given to the scheduler")


@dataclass(frozen=True)
class Firing:
    """What the scheduler does for a due schedule: one run for `slot`, then wait for `next_at`."""

    slot: datetime
    missed_since: datetime | None  # earliest slot folded into this run, when several were missed
    next_at: datetime | None


def due_firing(
    *, kind: str, cron_text: str | None, tz_name: str, due_at: datetime, now: datetime
) -> Firing:
    """Collapse every slot from `due_at` to `now` into one run (a hub that was down sends late
    once, neither skipping nor repeating), and compute the following fire time."""
    if kind == "once":
        return Firing(slot=due_at, missed_since=None, next_at=None)
    cron = Cron.parse(cron_text or "")
    tz = zone(tz_name)
    latest = last_fire(cron, tz, now)
    slot = latest if latest is not None and latest >= due_at else due_at
    return Firing(
        slot=slot,
        missed_since=due_at if slot > due_at else None,
        next_at=next_fire(cron, tz, max(now, slot)),
    )


def describe_next(cron_text: str, tz_name: str, after: datetime, count: int = 5) -> list[datetime]:
    """The next `count` fire instants (for the API to show what a rule means)."""
    cron = Cron.parse(cron_text)
    tz = zone(tz_name)
    out: list[datetime] = []
    moment = after
    for _ in range(count):
        moment = next_fire(cron, tz, moment)
        out.append(moment)
    return out
