"""FHIR R4 prefetch for CDS Hooks: parsed with the fhir.resources R4B models, mapped to an
``AssessRequest``.

Observations are chosen by LOINC code (latest effective time wins; blood pressure is one reading,
never a pair assembled from two readings: ``_blood_pressure``); Conditions by SNOMED CT or ICD-10
codes for diabetes, hypertension, pregnancy / lactation and established ASCVD, unless refuted,
entered in error or not active. Given the time of the request (``now``), values older than their
window (``MAX_AGE``) are not used and are said. Each resource is validated on its own: one that is
not valid FHIR R4 is left out and said, the rest is used. Missing prefetch is fetched from
``fhirServer`` with the ``fhirAuthorization`` bearer token when the hook request carries them.
"""

from __future__ import annotations

import calendar
import datetime as dt
import re
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple, TypeVar

import httpx

# CDS Hooks carries FHIR R4: fhir.resources' top-level models are R5 (where e.g.
# Condition.clinicalStatus is required); R4B (4.3) reads R4 resources unchanged.
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.condition import Condition
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.patient import Patient
from fhir.resources.R4B.resource import Resource
from pydantic import TypeAdapter, ValidationError

from medgate.clinical.common import MG_DL_PER_MMOL_L_CHOLESTEROL, MG_DL_PER_MMOL_L_GLUCOSE
from medgate.clinical.urgent import URGENT_BP

LOINC = "http://loinc.org"
BP_PANEL = "85354-9"  # Blood pressure panel with all children optional
BP_PANELS = {BP_PANEL, "55284-4"}  # 55284-4: Blood pressure systolic and diastolic
SBP = "8480-6"  # Systolic blood pressure
DBP = "8462-4"  # Diastolic blood pressure
# Lab codes come in mass ([Mass/volume], usually mg/dL) and molar ([Moles/volume], mmol/L, what
# Chinese labs report) variants; the quantity's unit decides any conversion (``_quantity``).
CODES: dict[str, str] = {
    SBP: "sbp_mmhg",
    DBP: "dbp_mmhg",
    "2093-3": "total_cholesterol",  # Cholesterol [Mass/volume] in Serum or Plasma
    "14647-2": "total_cholesterol",  # Cholesterol [Moles/volume] in Serum or Plasma
    "2085-9": "hdl_cholesterol",  # Cholesterol in HDL [Mass/volume] in Serum or Plasma
    "14646-4": "hdl_cholesterol",  # Cholesterol in HDL [Moles/volume] in Serum or Plasma
    "2089-1": "ldl_cholesterol",  # Cholesterol in LDL [Mass/volume] in Serum or Plasma
    "13457-7": "ldl_cholesterol",  # Cholesterol in LDL [Mass/volume] in S/P by calculation
    "18262-6": "ldl_cholesterol",  # Cholesterol in LDL [Mass/volume] in S/P by direct assay
    "22748-8": "ldl_cholesterol",  # Cholesterol in LDL [Moles/volume] in Serum or Plasma
    "39469-2": "ldl_cholesterol",  # Cholesterol in LDL [Moles/volume] in S/P by calculation
    "4548-4": "hba1c_percent",  # Hemoglobin A1c/Hemoglobin.total in Blood
    "1558-6": "fasting_glucose_mmol_l",  # Fasting glucose [Mass/volume] in Serum or Plasma
    "14771-0": "fasting_glucose_mmol_l",  # Fasting glucose [Moles/volume] in Serum or Plasma
    "2339-0": "random_glucose_mmol_l",  # Glucose [Mass/volume] in Blood
    "2345-7": "random_glucose_mmol_l",  # Glucose [Mass/volume] in Serum or Plasma
    "15074-8": "random_glucose_mmol_l",  # Glucose [Moles/volume] in Blood
    "14749-6": "random_glucose_mmol_l",  # Glucose [Moles/volume] in Serum or Plasma
    "8867-4": "heart_rate",
    "9279-1": "respiratory_rate",
    "59408-5": "spo2",
    "2708-6": "spo2",
    "8310-5": "temperature_c",
    "8280-0": "waist_cm",
    "39156-5": "bmi",
    "72166-2": "smoking",
}
OBSERVATION_CODES = [*sorted(BP_PANELS), *CODES]
LIPIDS = {"total_cholesterol", "hdl_cholesterol", "ldl_cholesterol"}
# Smoking status (LOINC 72166-2) is valued with the SNOMED CT codes of the US Core / HL7
# smoking-status value set. Current smokers: every day (449868002), some day (428041000124106),
# heavy (428071000124103), light (428061000124105); also 65568007 "cigarette smoker", a current
# finding outside that value set.
CURRENT_SMOKER_SNOMED = {
    "449868002",
    "428041000124106",
    "428071000124103",
    "428061000124105",
    "65568007",
}
# Ex-smoker (8517006) and never smoker (266919005): not a current smoker.
NON_SMOKER_SNOMED = {"8517006", "266919005"}
# Any other code leaves current_smoker unset, unknown stays unknown: 77176002 "Smoker, current
# status unknown" (has smoked; whether now is not known) and 266927001 "Unknown if ever smoked".
TYPE2_DIABETES = {"44054006", "E11"}
TYPE1_DIABETES = {"46635009", "E10"}
# Diabetes of unspecified type: treated as type 2 (the large majority of adult diabetes in China);
# the summary says "unspecified" so the answer can state the assumption.
UNSPECIFIED_DIABETES = {"73211009", "E14"}
DIABETES = TYPE2_DIABETES | TYPE1_DIABETES | UNSPECIFIED_DIABETES
HYPERTENSION = {"38341003", "59621000", "I10", "I11", "I12", "I13", "I15"}
# Pregnancy or lactation (``pregnant_or_lactating``): every code of ICD-10 chapter XV "Pregnancy,
# childbirth and the puerperium" (O00-O99, ICD-10-CM's O9A; e.g. O14.1 severe pre-eclampsia,
# O24.4 diabetes arising in pregnancy), matched by ``OBSTETRIC_CHAPTER``, and these:
PREGNANCY = {
    "Z33",  # ICD-10: pregnant state (incidental)
    "Z34",  # ICD-10: supervision of normal pregnancy
    "Z39.1",  # ICD-10: care and examination of lactating mother
    "77386006",  # SNOMED CT: pregnant
}
# "O", a digit, a digit or letter, then any subcode: chapter O, and no local code like "OTHER".
OBSTETRIC_CHAPTER = re.compile(r"O\d[\dA-Z](\..*)?")
# Established atherosclerotic cardiovascular disease (``ascvd``: secondary prevention, LDL-C target
# < 1.8 mmol/L, no China-PAR calculation).
ASCVD = {
    "I20",  # ICD-10: angina pectoris
    "I21",  # ICD-10: acute myocardial infarction
    "I22",  # ICD-10: subsequent myocardial infarction
    "I23",  # ICD-10: certain current complications following acute myocardial infarction
    "I24",  # ICD-10: other acute ischaemic heart diseases
    "I25",  # ICD-10: chronic ischaemic heart disease (I25.2: old myocardial infarction)
    "I63",  # ICD-10: cerebral infarction
    "G45",  # ICD-10: transient cerebral ischaemic attacks (TIA)
    "I70",  # ICD-10: atherosclerosis
    "Z95.1",  # ICD-10: presence of aortocoronary bypass graft
    "Z95.5",  # ICD-10: presence of coronary angioplasty implant and graft
    "22298006",  # SNOMED CT: myocardial infarction
    "399211009",  # SNOMED CT: history of myocardial infarction
    "414545008",  # SNOMED CT: ischaemic heart disease
    "53741008",  # SNOMED CT: coronary arteriosclerosis
    "194828000",  # SNOMED CT: angina
    "432504007",  # SNOMED CT: cerebral infarction
    "266257000",  # SNOMED CT: transient ischaemic attack
}
# Condition.clinicalStatus: these count (no clinicalStatus, allowed in R4, counts as active).
ACTIVE_CLINICAL_STATUS = {"active", "recurrence", "relapse"}
# Condition.verificationStatus: these are not a diagnosis. unconfirmed / provisional /
# differential still count: a suspected diagnosis changes targets conservatively.
NOT_A_DIAGNOSIS = {"refuted", "entered-in-error"}

PREFETCH_TEMPLATES = {
    "patient": "Patient/{{context.patientId}}",
    "observations": "Observation?patient={{context.patientId}}&code="
    + ",".join(f"{LOINC}|{code}" for code in OBSERVATION_CODES)
    + "&_sort=-date&_count=200",
    "conditions": "Condition?patient={{context.patientId}}"
    "&clinical-status=active,recurrence,relapse",
}
NO_TIME = dt.datetime.min.replace(tzinfo=dt.UTC)
#: Stand-alone systolic and diastolic Observations this close in time are one BP reading.
BP_PAIR_WINDOW = dt.timedelta(minutes=5)
#: A partial latest BP reading gives way to a crisis reading up to this long before it.
BP_CRISIS_WINDOW = dt.timedelta(hours=1)
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


def utc_now() -> dt.datetime:
    """The time a hook is answered at (``routes_cds.call_service`` passes it as ``now``)."""
    return dt.datetime.now(dt.UTC)


class FhirFetchError(RuntimeError):
    """The FHIR server could not be reached or answered with an error.

    ``str(exc)`` and ``exc.en`` are the English message, ``exc.zh`` the Chinese one, for the card
    in the request's language.
    """

    def __init__(self, en: str, zh: str) -> None:
        super().__init__(en)
        self.en = en
        self.zh = zh


def fetch_missing(
    prefetch: dict[str, Any],
    patient_id: str,
    server: str | None,
    token: str | None,
    timeout: float = 10.0,
) -> dict[str, Any]:
    """Fill the prefetch keys that are absent (or null) by GETs on the FHIR server."""
    wanted = [key for key in PREFETCH_TEMPLATES if prefetch.get(key) is None]
    if not wanted or not server:
        return prefetch
    filled = dict(prefetch)
    headers = {"Accept": "application/fhir+json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    with httpx.Client(base_url=server.rstrip("/") + "/", headers=headers, timeout=timeout) as c:
        for key in wanted:
            path = PREFETCH_TEMPLATES[key].replace("{{context.patientId}}", patient_id)
            try:
                response = c.get(path)
            except httpx.HTTPError as exc:
                kind = type(exc).__name__
                raise FhirFetchError(
                    f"FHIR server unreachable: {kind}", f"无法连接FHIR服务器（{kind}）"
                ) from exc
            if response.status_code >= 400:
                status = response.status_code
                raise FhirFetchError(
                    f"FHIR server answered {status} for {key}", f"FHIR服务器对{key}返回{status}"
                )
            filled[key] = response.json()
    return filled


#: Where an input came from: its resource, code and effective time (``read_prefetch``). A value
#: or resource read but not used carries ``used: false`` and ``unused``: "stale" (older than
#: ``max_age_days``), "undated" or "invalid" (not valid FHIR R4; ``value`` is the first error).
Source = dict[str, Any]
R = TypeVar("R", bound=Resource)
_OBJECT: TypeAdapter[dict[str, Any]] = TypeAdapter(dict[str, Any])
_ENTRIES: TypeAdapter[list[dict[str, Any]]] = TypeAdapter(list[dict[str, Any]])


def _resources(prefetched: Any, model: type[R]) -> tuple[list[R], list[Source]]:
    """The resources of ``model``'s type in one prefetch value (a Bundle or a single resource),
    each validated on its own: one that is not valid FHIR R4 is left out and named in a source
    (``unused: "invalid"``, its first error as ``value``), so one bad timestamp hides nothing
    else. A value that is not a resource or Bundle at all (not an object, a Bundle without its
    type, entries that are not objects) raises ``ValidationError``."""
    if not prefetched:
        return [], []
    data = _OBJECT.validate_python(prefetched)
    kind = model.get_resource_type()
    if data.get("resourceType") == "Bundle":
        Bundle.model_validate({k: v for k, v in data.items() if k != "entry"})
        entries = _ENTRIES.validate_python(data.get("entry") or [])
        raws = [_OBJECT.validate_python(e.get("resource") or {}) for e in entries]
    else:
        raws = [data]
    found: list[R] = []
    invalid: list[Source] = []
    for raw in raws:
        if raw.get("resourceType") != kind:
            continue
        try:
            found.append(model.model_validate(raw))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            invalid.append(
                {
                    "input": "resource",
                    "value": f"{where}: {first['msg']}" if where else first["msg"],
                    "source": f"{kind}/{raw.get('id') or '?'}",
                    "code": None,
                    "effective": None,
                    "used": False,
                    "unused": "invalid",
                }
            )
    return found, invalid


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


def _time(value: Any) -> When | None:
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


def _when(obs: Observation) -> When:
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
        found = _time(value)
        if found is not None:
            return found
    return UNDATED


#: How values competing for one input order (``_order_keys``): an instant, then timed first.
Key = tuple[dt.datetime, bool]


def _order_keys(whens: Sequence[When]) -> list[Key]:
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


def _latest(whens: Sequence[When]) -> int:
    """The index of the latest value (the first of equals)."""
    keys = _order_keys(whens)
    return max(range(len(whens)), key=keys.__getitem__)


def _too_old(name: str, when: When, now: dt.datetime | None) -> bool:
    """Whether the value is older than its window (``MAX_AGE``); undated counts as too old."""
    limit = MAX_AGE.get(name)
    return now is not None and limit is not None and now - when.until > limit


def _age(born: dt.date | str, today: dt.date) -> int | None:
    """Age in whole years; a partial birthDate ("1966", "1966-03") gives the youngest possible age.

    The youngest age never puts a child above the NEWS2 (16) or adult (18) thresholds.
    """
    if isinstance(born, dt.date):
        last = born
    else:
        try:
            year, month = int(str(born)[:4]), int(str(born)[5:7] or 12)
        except ValueError:
            return None
        last = dt.date(year, month, calendar.monthrange(year, month)[1])
    return today.year - last.year - ((today.month, today.day) < (last.month, last.day))


def _loinc(concept: Any) -> list[str]:
    return [c.code for c in (concept.coding or []) if c.system == LOINC and c.code]


def _codes(concept: Any) -> set[str]:
    return {c.code for c in (concept.coding or []) if c.code} if concept else set()


def _quantity(name: str, quantity: Any) -> float | None:
    if quantity is None or quantity.value is None:
        return None
    value = float(quantity.value)
    unit = (quantity.code or quantity.unit or "").lower()
    if name in LIPIDS:
        return value / MG_DL_PER_MMOL_L_CHOLESTEROL if "mg" in unit else value
    if name.endswith("glucose_mmol_l") and "mg" in unit:
        return value / MG_DL_PER_MMOL_L_GLUCOSE
    if name == "temperature_c" and unit in {"[degf]", "degf", "°f"}:
        return (value - 32) * 5 / 9
    return value


def _matches(codes: set[str], wanted: set[str]) -> bool:
    """Whether a Condition's codes name one in ``wanted``: a SNOMED CT code exactly, an ICD-10
    code by its category (E11.9 is E11) or, where ``wanted`` names a subcode (Z95.1), by that
    subcode and its own subcodes (Z95.10), never by a sibling (Z95.0)."""
    for code in codes:
        if code in wanted or code.split(".")[0] in wanted:
            return True
        if any("." in w and code.startswith(w) for w in wanted):
            return True
    return False


class Reading(NamedTuple):
    """One BP reading: its time, values by field and the source of each value."""

    when: When
    values: dict[str, float]
    sources: dict[str, Source]


def _bp_readings(panels: list[Reading], alone: list[Reading]) -> list[Reading]:
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
    sbp, dbp = URGENT_BP
    return reading.values.get("sbp_mmhg", 0) >= sbp or reading.values.get("dbp_mmhg", 0) >= dbp


def _blood_pressure(readings: Sequence[Reading]) -> Reading | None:
    """The BP reading used: the latest one, unless it is partial and a crisis came just before.

    The latest reading wins (at equal times a reading with more values, then one with a
    systolic); it may hold both values, the systolic alone or the diastolic alone (so a newer
    diastolic crisis recorded alone is not hidden by an older panel). But when that latest
    reading is partial (systolic or diastolic missing) and a reading within the hour before it
    (``BP_CRISIS_WINDOW``) holds a crisis value (SBP >= 180 or DBP >= 110), that crisis reading
    is used instead, the latest such: a crisis minutes ago does not vanish behind an incomplete
    reading. A complete reading re-measured after the crisis settles it (re-measuring a high BP
    is the standard practice): a crisis before the latest complete reading is not brought back,
    and a complete latest reading always wins.
    """
    if not readings:
        return None
    keys = _order_keys([r.when for r in readings])
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


def summary_from_prefetch(
    prefetch: dict[str, Any], today: dt.date | None = None, *, now: dt.datetime | None = None
) -> dict[str, Any]:
    """A dict of ``AssessRequest`` fields from Patient, Observations and Conditions."""
    return read_prefetch(prefetch, today, now=now)[0]


def _source(resource: Any, kind: str, code: str, shown: str | None) -> Source:
    return {"source": f"{kind}/{resource.id or '?'}", "code": code, "effective": shown}


def _field(name: str, value: Any) -> tuple[str, Any]:
    """The ``AssessRequest`` field of an Observation value, and the value as the field takes it."""
    if name in LIPIDS:
        return f"{name}_mmol_l", round(value, 3)
    if name in {"sbp_mmhg", "dbp_mmhg", "heart_rate", "respiratory_rate", "spo2"}:
        return name, round(value)
    return name, value


def _stale(field: str, value: Any, source: Source, name: str, when: When) -> Source:
    """The source of a value left out for its age (``_too_old``)."""
    if when is UNDATED:
        return {"input": field, **source, "value": value, "used": False, "unused": "undated"}
    return {
        "input": field,
        **source,
        "value": value,
        "used": False,
        "unused": "stale",
        "max_age_days": MAX_AGE[name].days,
    }


def read_prefetch(
    prefetch: dict[str, Any], today: dt.date | None = None, *, now: dt.datetime | None = None
) -> tuple[dict[str, Any], list[Source]]:
    """The ``AssessRequest`` fields, and where each came from (the audit trace's provenance).

    One pass decides both, so the trace names exactly the resource behind each value: one
    Observation per input (two for a BP reading of stand-alone systolic and diastolic), every
    Condition with whether it was used (it counts and maps to a field). ``now`` (None: no limit)
    is the time of the request: a value older than its window in ``MAX_AGE`` (an undated one
    too) is not used, and its source says so (``unused``); the latest value within its window
    is used. A resource that is not valid FHIR R4 is left out and listed (``_resources``).
    ``today`` (for the age) defaults to ``now``'s date. ``not_used`` words what was left out.
    """
    out: dict[str, Any] = {}
    sources: list[Source] = []
    today = today or (now.date() if now else dt.date.today())
    patients, invalid = _resources(prefetch.get("patient"), Patient)
    sources += invalid
    for patient in patients:
        if patient.gender in {"male", "female"}:
            out["sex"] = patient.gender
        if patient.birthDate:
            age = _age(patient.birthDate, today)
            if age is not None:
                out["age"] = age
    observations, invalid = _resources(prefetch.get("observations"), Observation)
    sources += invalid
    found: dict[str, list[tuple[When, Any, Source]]] = {}
    panels: list[Reading] = []
    alone: list[Reading] = []
    for obs in observations:
        if obs.status in {"entered-in-error", "cancelled"}:
            continue
        when = _when(obs)
        codes = _loinc(obs.code)
        if BP_PANELS & set(codes):
            reading: dict[str, float] = {}
            reading_sources: dict[str, Source] = {}
            for comp in obs.component or []:
                for code in _loinc(comp.code):
                    if code in (SBP, DBP):
                        value = _quantity(CODES[code], comp.valueQuantity)
                        if value is not None and CODES[code] not in reading:
                            reading[CODES[code]] = value
                            reading_sources[CODES[code]] = _source(
                                obs, "Observation", f"{LOINC}|{code}", when.shown
                            )
            if reading:
                panels.append(Reading(when, reading, reading_sources))
            continue
        for code in codes:
            name = CODES.get(code)
            if name is None:
                continue
            source = _source(obs, "Observation", f"{LOINC}|{code}", when.shown)
            if name == "smoking":
                snomed = _codes(obs.valueCodeableConcept)
                name = "current_smoker"
                read: Any = (
                    True
                    if snomed & CURRENT_SMOKER_SNOMED
                    else False
                    if snomed & NON_SMOKER_SNOMED
                    else None  # unknown stays unknown
                )
            else:
                read = _quantity(name, obs.valueQuantity)
            if read is None:
                continue
            if name in {"sbp_mmhg", "dbp_mmhg"}:
                alone.append(Reading(when, {name: read}, {name: source}))
            else:
                found.setdefault(name, []).append((when, read, source))
    readings = _bp_readings(panels, alone)
    chosen = _blood_pressure([r for r in readings if not _too_old("sbp_mmhg", r.when, now)])
    if chosen is not None:
        for name, value in chosen.values.items():
            out[name] = round(value)
            sources.append({"input": name, **chosen.sources[name], "used": True})
    elif (old := _blood_pressure(readings)) is not None:
        for name, value in old.values.items():
            sources.append(_stale(name, round(value), old.sources[name], name, old.when))
    for name, values in found.items():
        fresh = [v for v in values if not _too_old(name, v[0], now)]
        if fresh:
            _, value, source = fresh[_latest([v[0] for v in fresh])]
            field, out[field] = _field(name, value)
            sources.append({"input": field, **source, "used": True})
        else:
            when, value, source = values[_latest([v[0] for v in values])]
            field, shown = _field(name, value)
            sources.append(_stale(field, shown, source, name, when))
    conditions: list[str] = []
    diabetes_types: set[str] = set()
    found_conditions, invalid = _resources(prefetch.get("conditions"), Condition)
    sources += invalid
    for cond in found_conditions:
        clinical = _codes(cond.clinicalStatus)
        counted = not (clinical and not clinical & ACTIVE_CLINICAL_STATUS) and not (
            _codes(cond.verificationStatus) & NOT_A_DIAGNOSIS
        )
        coded = _codes(cond.code)
        mapped = False
        if counted:
            if _matches(coded, TYPE1_DIABETES):
                diabetes_types.add("type1")
            elif _matches(coded, TYPE2_DIABETES):
                diabetes_types.add("type2")
            elif _matches(coded, UNSPECIFIED_DIABETES):
                diabetes_types.add("unspecified")
            if _matches(coded, HYPERTENSION):
                conditions.append("hypertension")
            if _matches(coded, PREGNANCY) or any(OBSTETRIC_CHAPTER.fullmatch(c) for c in coded):
                out["pregnant_or_lactating"] = True
                mapped = True
            if _matches(coded, ASCVD):
                out["ascvd"] = True
                mapped = True
            mapped = mapped or _matches(coded, DIABETES | HYPERTENSION)
        first = next(iter(cond.code.coding or []), None) if cond.code else None
        sources.append(
            {
                "input": "condition",
                "value": (first.display or first.code) if first else None,
                **_source(
                    cond,
                    "Condition",
                    f"{first.system or ''}|{first.code or ''}" if first else "",
                    None,
                ),
                "effective": str(cond.recordedDate or cond.onsetDateTime or "") or None,
                "used": counted and mapped,
            }
        )
    if diabetes_types:
        out["diabetes"] = True
        # type 1 is never turned into type 2: the type-2 follow-up rules do not apply to it
        kind = "type1" if "type1" in diabetes_types else sorted(diabetes_types)[-1]
        out["diabetes_type"] = kind
        if kind != "type1":
            conditions.append("type2_diabetes")
    if conditions:
        out["conditions"] = sorted(set(conditions))
    return out, sources


def not_used(sources: Iterable[Source], lang: str) -> list[str]:
    """Lines for the "data could not all be used" card, in ``lang`` (zh or en): the values left
    out for their age (with the date measured), undated ones, and the resources that are not
    valid FHIR R4 (with the first error), from ``read_prefetch``'s sources."""
    zh = lang == "zh"
    stale: dict[int, list[str]] = {}
    undated: list[str] = []
    lines: list[str] = []
    for item in sources:
        why = item.get("unused")
        name = f"`{item['input']}`"
        if why == "stale":
            day = str(item.get("effective") or "")[:10]
            shown = f"{name}（{day}）" if zh else f"{name} ({day})"
            stale.setdefault(int(item["max_age_days"]), []).append(shown)
        elif why == "undated":
            undated.append(name)
        elif why == "invalid":
            lines.append(
                f"`{item['source']}`不是有效的FHIR R4资源，未使用：{item['value']}"
                if zh
                else f"{item['source']} is not valid FHIR R4: {item['value']}"
            )
    for days, names in sorted(stale.items()):
        lines.append(
            f"超过{days}天，未使用：{'、'.join(names)}"
            if zh
            else f"older than {days} days, not used: {', '.join(names)}"
        )
    if undated:
        lines.append(
            f"无测量时间，未使用：{'、'.join(undated)}"
            if zh
            else f"no time measured, not used: {', '.join(undated)}"
        )
    return lines
