"""One blood-pressure reading from a patient's Observations: never a systolic and a diastolic
from two different measurements, and never a crisis hidden behind an incomplete reading."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any, NamedTuple

from medgate.api.fhir_time import When, order_keys
from medgate.clinical.urgent import LOW_SBP, URGENT_BP

#: Where a value came from: its resource, code and effective time (``cds_fhir.read_prefetch``).
Source = dict[str, Any]
#: Stand-alone systolic and diastolic Observations this close in time are one BP reading.
BP_PAIR_WINDOW = dt.timedelta(minutes=5)
#: A partial latest BP reading gives way to a crisis reading up to this long before it.
BP_CRISIS_WINDOW = dt.timedelta(hours=1)


class Reading(NamedTuple):
    """One BP reading: its time, values by field and the source of each value."""

    when: When
    values: dict[str, float]
    sources: dict[str, Source]


def readings_of(panels: list[Reading], alone: list[Reading]) -> list[Reading]:
    """The BP readings: never a pair assembled from two readings.

    A reading is one BP panel's components, or a stand-alone systolic and a stand-alone diastolic
    Observation timed within ``BP_PAIR_WINDOW`` (5 minutes) of each other: the nearest in time
    pair first, each Observation in one pair at most; a paired reading is as recent as its later
    Observation. A stand-alone Observation at exactly a panel's time fills only what that panel
    lacks (the panel takes precedence). Observations without a time of day (untimed, a date or a
    partial date) are never paired. Any other Observation is a reading of its one value.
    """
    readings = [Reading(r.when, dict(r.values), dict(r.sources)) for r in panels]
    at_panel = {r.when.at: r for r in reversed(readings) if r.when.timed}  # the first at a time
    rest: list[Reading] = []
    for reading in alone:
        panel = at_panel.get(reading.when.at) if reading.when.timed else None
        if panel is None:
            rest.append(reading)
            continue
        for name, value in reading.values.items():
            if name not in panel.values:
                panel.values[name] = value
                panel.sources[name] = reading.sources[name]
    systolic = [n for n, r in enumerate(rest) if "sbp_mmhg" in r.values]
    diastolic = [n for n, r in enumerate(rest) if "sbp_mmhg" not in r.values]
    candidates = sorted(
        (abs(rest[s].when.at - rest[d].when.at), s, d)
        for s in systolic
        for d in diastolic
        if rest[s].when.timed
        and rest[d].when.timed
        and abs(rest[s].when.at - rest[d].when.at) <= BP_PAIR_WINDOW
    )
    paired: set[int] = set()
    for _, s, d in candidates:
        if s in paired or d in paired:
            continue
        paired |= {s, d}
        later = max(rest[s].when, rest[d].when, key=lambda w: w.at)
        readings.append(
            Reading(
                later,
                rest[s].values | rest[d].values,
                rest[s].sources | rest[d].sources,
            )
        )
    return readings + [r for n, r in enumerate(rest) if n not in paired]


def _complete(reading: Reading) -> bool:
    return {"sbp_mmhg", "dbp_mmhg"} <= set(reading.values)


def _crisis(reading: Reading) -> bool:
    """SBP >= 180 or DBP >= 110 (the 2017 specification's crisis), or SBP <= 90 (shock)."""
    sbp, dbp = URGENT_BP
    systolic = reading.values.get("sbp_mmhg")
    return (
        systolic is not None and (systolic >= sbp or systolic <= LOW_SBP)
    ) or reading.values.get("dbp_mmhg", 0) >= dbp


def chosen_reading(readings: Sequence[Reading]) -> Reading | None:
    """The BP reading used: the latest one, unless it is partial and a crisis came just before.

    The latest reading wins (at equal times a reading with more values, then one with a
    systolic); it may hold both values, the systolic alone or the diastolic alone (so a newer
    diastolic crisis recorded alone is not hidden by an older panel). But when that latest
    reading is partial (systolic or diastolic missing) and a reading within the hour before it
    (``BP_CRISIS_WINDOW``) holds a crisis value (SBP >= 180 or DBP >= 110, or SBP <= 90), that
    crisis reading is used instead, the latest such: a crisis minutes ago does not vanish behind
    an incomplete reading. A complete reading re-measured after the crisis settles it
    (re-measuring a high BP is the standard practice): a crisis before the latest complete
    reading is not brought back, and a complete latest reading always wins.
    """
    if not readings:
        return None
    keys = order_keys([r.when for r in readings])
    rank = [(keys[n], len(r.values), "sbp_mmhg" in r.values) for n, r in enumerate(readings)]
    latest = max(range(len(readings)), key=rank.__getitem__)
    if _complete(readings[latest]):
        return readings[latest]
    settled = max((rank[n] for n, r in enumerate(readings) if _complete(r)), default=None)
    crises = [
        n
        for n, r in enumerate(readings)
        if n != latest
        and _crisis(r)
        and keys[latest][0] - keys[n][0] <= BP_CRISIS_WINDOW
        and (settled is None or rank[n] >= settled)
    ]
    return readings[max(crises, key=rank.__getitem__)] if crises else readings[latest]
