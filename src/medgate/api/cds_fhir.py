"""FHIR R4 prefetch for CDS Hooks: parsed with the fhir.resources R4B models, mapped to an
``AssessRequest``.

Observations are chosen by LOINC code (latest effective time wins; blood pressure is one reading,
never a pair assembled from two readings: ``bp_reading``); Conditions by SNOMED CT or ICD-10
codes for diabetes, hypertension, pregnancy / lactation and established ASCVD, unless refuted,
entered in error or not active. Given the time of the request (``now``), values older than their
window (``MAX_AGE``) are not used and are said. Each resource is validated on its own: one that is
not valid FHIR R4 is left out and said, the rest is used. Missing prefetch is fetched from
``fhirServer`` with the ``fhirAuthorization`` bearer token when the hook request carries them.
"""

from __future__ import annotations

import calendar
import datetime as dt
from collections.abc import Iterable
from typing import Any, TypeVar

import httpx

# CDS Hooks carries FHIR R4: fhir.resources' top-level models are R5 (where e.g.
# Condition.clinicalStatus is required); R4B (4.3) reads R4 resources unchanged.
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.condition import Condition
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.patient import Patient
from fhir.resources.R4B.resource import Resource
from pydantic import TypeAdapter, ValidationError

from medgate.api import bp_reading as bpr
from medgate.api.fhir_codes import (
    ACTIVE_CLINICAL_STATUS,
    ASCVD,
    BP_PANELS,
    CKD,
    CKD_STAGE_3_4,
    CODES,
    CURRENT_SMOKER_SNOMED,
    DBP,
    DIABETES,
    HYPERTENSION,
    LIPIDS,
    LOINC,
    NON_SMOKER_SNOMED,
    NOT_A_DIAGNOSIS,
    OBSERVATION_CODES,
    OBSTETRIC_CHAPTER,
    PREGNANCY,
    SBP,
    TYPE1_DIABETES,
    TYPE2_DIABETES,
    UNSPECIFIED_DIABETES,
    matches,
)
from medgate.api.fhir_time import (
    MAX_AGE,
    UNDATED,
    When,
    latest,
    observation_time,
    time_of,
    too_old,
)
from medgate.clinical.common import MG_DL_PER_MMOL_L_CHOLESTEROL, MG_DL_PER_MMOL_L_GLUCOSE
from medgate.clinical.urgent import URGENT_GLUCOSE_LOW

PREFETCH_TEMPLATES = {
    "patient": "Patient/{{context.patientId}}",
    "observations": "Observation?patient={{context.patientId}}&code="
    + ",".join(f"{LOINC}|{code}" for code in OBSERVATION_CODES)
    + "&_sort=-date&_count=200",
    "conditions": "Condition?patient={{context.patientId}}"
    "&clinical-status=active,recurrence,relapse",
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
Source = bpr.Source
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


def summary_from_prefetch(
    prefetch: dict[str, Any], today: dt.date | None = None, *, now: dt.datetime | None = None
) -> dict[str, Any]:
    """A dict of ``AssessRequest`` fields from Patient, Observations and Conditions."""
    return read_prefetch(prefetch, today, now=now)[0]


def _source(resource: Any, kind: str, code: str, shown: str | None) -> Source:
    return {"source": f"{kind}/{resource.id or '?'}", "code": code, "effective": shown}


GLUCOSE_INPUTS = ("fasting_glucose_mmol_l", "random_glucose_mmol_l")


def _earlier_hypoglycaemia(
    name: str,
    values: list[tuple[When, Any, Source]],
    chosen: int,
    now: dt.datetime | None,
) -> list[tuple[dict[str, Any], Source]]:
    """The values of one glucose input before the one used, at or below 3.9 mmol/L and within
    the vital-sign window (of ``now``, else of the value used), as ``earlier_glucose`` readings:
    the follow-up reads only those (an earlier hypoglycaemia a later normal value does not
    undo), so only those are sent and named in the trace."""
    since = (now or values[chosen][0].until) - MAX_AGE[name]
    return [
        (
            {"time": when.at, "glucose_mmol_l": value, "fasting": name == GLUCOSE_INPUTS[0]},
            {**source, "value": value},
        )
        for i, (when, value, source) in enumerate(values)
        if i != chosen
        and when is not UNDATED
        and when.until >= since
        and value <= URGENT_GLUCOSE_LOW
    ]


def _field(name: str, value: Any) -> tuple[str, Any]:
    """The ``AssessRequest`` field of an Observation value, and the value as the field takes it."""
    if name in LIPIDS:
        return f"{name}_mmol_l", round(value, 3)
    if name in {"sbp_mmhg", "dbp_mmhg", "heart_rate", "respiratory_rate", "spo2"}:
        return name, round(value)
    return name, value


def _stale(field: str, value: Any, source: Source, name: str, when: When) -> Source:
    """The source of a value left out for its age (``fhir_time.too_old``)."""
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


#: A pregnancy or lactation Condition counts for this long after it was recorded or began (a
#: pregnancy and the months of breastfeeding after it), and not from this age: obstetric
#: Conditions are often left open in the record for years. medgate's choice (docs/clinical.md §7).
PREGNANCY_MAX_AGE = dt.timedelta(days=365)
PREGNANCY_MAX_PATIENT_AGE = 55


def _pregnancy_current(cond: Condition, now: dt.datetime | None, age: Any) -> bool:
    """Whether a pregnancy / obstetric Condition describes the patient now (see
    ``PREGNANCY_MAX_AGE``): recorded or begun within the window, and an age at which pregnancy
    is possible. Undated, or with no ``now`` to compare with, it counts."""
    if isinstance(age, int) and age > PREGNANCY_MAX_PATIENT_AGE:
        return False
    when = time_of(cond.onsetDateTime) or time_of(cond.recordedDate)
    return now is None or when is None or now - when.until <= PREGNANCY_MAX_AGE


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
    panels: list[bpr.Reading] = []
    alone: list[bpr.Reading] = []
    for obs in observations:
        if obs.status in {"entered-in-error", "cancelled"}:
            continue
        when = observation_time(obs)
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
                panels.append(bpr.Reading(when, reading, reading_sources))
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
                alone.append(bpr.Reading(when, {name: read}, {name: source}))
            else:
                found.setdefault(name, []).append((when, read, source))
    readings = bpr.readings_of(panels, alone)
    chosen = bpr.chosen_reading([r for r in readings if not too_old("sbp_mmhg", r.when, now)])
    if chosen is not None:
        for name, value in chosen.values.items():
            out[name] = round(value)
            sources.append({"input": name, **chosen.sources[name], "used": True})
    elif (old := bpr.chosen_reading(readings)) is not None:
        for name, value in old.values.items():
            sources.append(_stale(name, round(value), old.sources[name], name, old.when))
    for name, values in found.items():
        fresh = [v for v in values if not too_old(name, v[0], now)]
        if fresh:
            chosen_at = latest([v[0] for v in fresh])
            _, value, source = fresh[chosen_at]
            field, out[field] = _field(name, value)
            sources.append({"input": field, **source, "used": True})
            if name in GLUCOSE_INPUTS:
                earlier = _earlier_hypoglycaemia(name, fresh, chosen_at, now)
                if earlier:
                    out.setdefault("earlier_glucose", []).extend(r for r, _ in earlier)
                sources += [{"input": "earlier_glucose", **src, "used": True} for _, src in earlier]
        else:
            when, value, source = values[latest([v[0] for v in values])]
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
        mapped = stale_pregnancy = False
        if counted:
            if matches(coded, TYPE1_DIABETES):
                diabetes_types.add("type1")
            elif matches(coded, TYPE2_DIABETES):
                diabetes_types.add("type2")
            elif matches(coded, UNSPECIFIED_DIABETES):
                diabetes_types.add("unspecified")
            if matches(coded, HYPERTENSION):
                conditions.append("hypertension")
            if matches(coded, PREGNANCY) or any(OBSTETRIC_CHAPTER.fullmatch(c) for c in coded):
                if _pregnancy_current(cond, now, out.get("age")):
                    out["pregnant_or_lactating"] = True
                    mapped = True
                else:  # an obstetric Condition left open for years is not a pregnancy now
                    counted, stale_pregnancy = False, True
            if matches(coded, ASCVD):
                out["ascvd"] = True
                mapped = True
            if matches(coded, CKD_STAGE_3_4):
                out["ckd"] = out["ckd_stage_3_4"] = True
                mapped = True
            elif matches(coded, CKD):
                out["ckd"] = True
                mapped = True
            mapped = mapped or matches(coded, DIABETES | HYPERTENSION)
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
                **(
                    {"unused": "stale", "max_age_days": PREGNANCY_MAX_AGE.days}
                    if stale_pregnancy
                    else {}
                ),
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
