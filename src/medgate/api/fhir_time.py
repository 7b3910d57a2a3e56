"""When an Observation was measured, how values for one input order, and whether a value is
recent enough to use on a CDS Hooks call.

FHIR gives a time in several places and precisions (dateTime, instant, period, issued; a date or
a partial date such as "2024-05"); ``observation_time`` turns each into one ``When`` and
``order_keys`` puts timed and date-only values in one order.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from typing import Any, NamedTuple

from fhir.resources.R4B.observation import Observation

NO_TIME = dt.datetime.min.replace(tzinfo=dt.UTC)

#: How old a value may be and still be used, when ``read_prefetch`` is given ``now``. These
#: windows are medgate's choice, not a guideline's: vital signs and glucose describe the patient
#: today, so a crisis from last month must not raise a "transfer now" card; HbA1c, lipids, waist
#: and BMI change slowly and are measured about once a year in primary care. Smoking status is
#: used whatever its age. Older values are left out and said (``not_used``).
VITALS_MAX_AGE = dt.timedelta(days=7)
YEARLY_MAX_AGE = dt.timedelta(days=365)
MAX_AGE: dict[str, dt.timedelta] = {
    "sbp_mmhg": VITALS_MAX_AGE,
    "dbp_mmhg": VITALS_MAX_AGE,
    "heart_rate": VITALS_MAX_AGE,
    "respiratory_rate": VITALS_MAX_AGE,
    "spo2": VITALS_MAX_AGE,
    "temperature_c": VITALS_MAX_AGE,
    "fasting_glucose_mmol_l": VITALS_MAX_AGE,
    "random_glucose_mmol_l": VITALS_MAX_AGE,
    "hba1c_percent": YEARLY_MAX_AGE,
    "total_cholesterol": YEARLY_MAX_AGE,
    "hdl_cholesterol": YEARLY_MAX_AGE,
    "ldl_cholesterol": YEARLY_MAX_AGE,
    "waist_cm": YEARLY_MAX_AGE,
    "bmi": YEARLY_MAX_AGE,
}


class When(NamedTuple):
    """An Observation's time: the instant it orders by (a date or partial date: the start of its
    span, UTC midnight), whether it has a time of day (only then can it be paired into a BP
    reading), how the provenance shows it, and the latest instant it can stand for (a date: the
    end of its span), which its age is counted from."""

    at: dt.datetime
    timed: bool
    shown: str | None
    until: dt.datetime


#: No time at all: the oldest, never paired, of unknown age.
UNDATED = When(NO_TIME, False, None, NO_TIME)
PARTIAL_DATE = re.compile(r"(\d{4})(?:-(\d{2}))?(?:-(\d{2}))?")


def time_of(value: Any) -> When | None:
    """A FHIR dateTime / instant / date. A date, or a partial date ("2024", "2024-05", which
    fhir.resources hands back as ``str``), orders at the start of its span (2024-05 ->
    2024-05-01T00:00Z), has no time of day and stands for its whole span (to 2024-06-01)."""
    if isinstance(value, dt.datetime):
        at = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
        return When(at, True, at.isoformat().replace("+00:00", "Z"), at)
    if isinstance(value, dt.date):
        start = dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC)
        return When(start, False, str(value), start + dt.timedelta(days=1))
    match = PARTIAL_DATE.fullmatch(str(value)) if value is not None else None
    if match is None:
        return None
    year, month, day = (int(part or 1) for part in match.groups())
    try:
        start = dt.datetime(year, month, day, tzinfo=dt.UTC)
        if match.group(3):
            until = start + dt.timedelta(days=1)
        elif match.group(2):
            until = (start + dt.timedelta(days=31)).replace(day=1)
        else:
            until = start.replace(year=year + 1)
    except (ValueError, OverflowError):
        return None
    return When(start, False, str(value), until)


def observation_time(obs: Observation) -> When:
    """The Observation's time from, in order: effectiveDateTime, effectiveInstant,
    effectivePeriod.end, effectivePeriod.start, issued. None of them: ``UNDATED``."""
    period = obs.effectivePeriod
    for value in (
        obs.effectiveDateTime,
        obs.effectiveInstant,
        period.end if period else None,
        period.start if period else None,
        obs.issued,
    ):
        found = time_of(value)
        if found is not None:
            return found
    return UNDATED


#: How values competing for one input order (``order_keys``): an instant, then timed first.
Key = tuple[dt.datetime, bool]


def order_keys(whens: Sequence[When]) -> list[Key]:
    """Sort keys of the values competing for one input (the greatest is the latest).

    A timed value orders at its instant. A value without a time of day (a date, a partial date)
    orders at the start of its span, UTC midnight, but never after a timed value of its first
    calendar day (that day in the timed value's own UTC offset): a time of day is the more
    specific. So "2026-12-05" orders before 09:00Z that day and also before 07:30+08:00 that
    morning (23:30Z the day before), which UTC midnight alone would have put it after.
    """
    first: dict[dt.date, dt.datetime] = {}
    for when in whens:
        if when.timed:
            day = when.at.date()
            first[day] = min(first.get(day, when.at), when.at)
    return [
        (when.at, True) if when.timed else (min(when.at, first.get(when.at.date(), when.at)), False)
        for when in whens
    ]


def latest(whens: Sequence[When]) -> int:
    """The index of the latest value (the first of equals)."""
    keys = order_keys(whens)
    return max(range(len(whens)), key=keys.__getitem__)


def too_old(name: str, when: When, now: dt.datetime | None) -> bool:
    """Whether the value is older than its window (``MAX_AGE``); undated counts as too old."""
    limit = MAX_AGE.get(name)
    return now is not None and limit is not None and now - when.until > limit
