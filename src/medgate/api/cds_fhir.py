"""FHIR R4 prefetch for CDS Hooks: parsed with the fhir.resources R4B models, mapped to an
``AssessRequest``.

Observations are chosen by LOINC code (latest effective time wins; blood pressure is the latest
reading, never a pair assembled from two readings: ``_blood_pressure``); Conditions by SNOMED CT
or ICD-10 codes for diabetes and hypertension, unless refuted or entered in error. Missing
prefetch is fetched from ``fhirServer`` with the ``fhirAuthorization`` bearer token when the
hook request carries them.
"""

from __future__ import annotations

import calendar
import datetime as dt
import re
from collections.abc import Iterable
from typing import Any

import httpx

# CDS Hooks carries FHIR R4: fhir.resources' top-level models are R5 (where e.g.
# Condition.clinicalStatus is required); R4B (4.3) reads R4 resources unchanged.
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.condition import Condition
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.patient import Patient

from medgate.clinical.common import MG_DL_PER_MMOL_L_CHOLESTEROL, MG_DL_PER_MMOL_L_GLUCOSE

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


def _entries(resource: dict[str, Any] | None, kind: str) -> Iterable[dict[str, Any]]:
    if not resource:
        return []
    if resource.get("resourceType") == "Bundle":
        bundle = Bundle.model_validate(resource)
        return [
            e.resource.model_dump(mode="json")
            for e in bundle.entry or []
            if e.resource is not None and e.resource.get_resource_type() == kind
        ]
    if resource.get("resourceType") == kind:
        return [resource]
    return []


#: An Observation's time: the instant it orders by, whether it has a time of day (only then can
#: it be paired into a BP reading) and how the provenance shows it.
When = tuple[dt.datetime, bool, str | None]
PARTIAL_DATE = re.compile(r"(\d{4})(?:-(\d{2}))?(?:-(\d{2}))?")


def _time(value: Any) -> When | None:
    """A FHIR dateTime / instant / date. A date, or a partial date ("2024", "2024-05", which
    fhir.resources hands back as ``str``), orders at the start of its span (2024-05 ->
    2024-05-01T00:00Z) and has no time of day."""
    if isinstance(value, dt.datetime):
        at = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
        return at, True, at.isoformat().replace("+00:00", "Z")
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC), False, str(value)
    match = PARTIAL_DATE.fullmatch(str(value)) if value is not None else None
    if match is None:
        return None
    year, month, day = (int(part or 1) for part in match.groups())
    try:
        return dt.datetime(year, month, day, tzinfo=dt.UTC), False, str(value)
    except ValueError:
        return None


def _when(obs: Observation) -> When:
    """The Observation's time from, in order: effectiveDateTime, effectiveInstant,
    effectivePeriod.end, effectivePeriod.start, issued. None of them: the oldest, never paired."""
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
    return NO_TIME, False, None


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


#: Where an input came from: its resource, code and effective time (``read_prefetch``).
Source = dict[str, Any]
#: One BP reading: its time, whether that time has a time of day, values by field and the
#: source of each value.
Reading = tuple[dt.datetime, bool, dict[str, float], dict[str, Source]]


def _blood_pressure(
    panels: list[Reading], alone: list[Reading]
) -> tuple[dict[str, float], dict[str, Source]]:
    """The values of the latest BP reading: never a pair assembled from two readings.

    A reading is one BP panel's components, or a stand-alone systolic and a stand-alone diastolic
    Observation timed within ``BP_PAIR_WINDOW`` (5 minutes) of each other: the nearest in time
    pair first, each Observation in one pair at most. A stand-alone Observation at exactly a
    panel's time fills only what that panel lacks (the panel takes precedence). Observations
    without a time of day (untimed, a date or a partial date) are never paired. The latest reading
    wins whatever it holds: systolic and diastolic, systolic alone or diastolic alone (so a newer
    diastolic crisis recorded alone is not hidden by an older panel). A paired reading is as
    recent as its later Observation; at equal times a reading with more values, then one with a
    systolic, wins.
    """
    readings: list[Reading] = [(w, e, dict(v), dict(s)) for w, e, v, s in panels]
    at_panel = {r[0]: r for r in reversed(readings) if r[1]}  # the first panel at each time
    rest: list[Reading] = []
    for when, exact, values, sources in alone:
        panel = at_panel.get(when) if exact else None
        if panel is None:
            rest.append((when, exact, values, sources))
            continue
        for name, value in values.items():
            if name not in panel[2]:
                panel[2][name] = value
                panel[3][name] = sources[name]
    systolic = [n for n, r in enumerate(rest) if "sbp_mmhg" in r[2]]
    diastolic = [n for n, r in enumerate(rest) if "sbp_mmhg" not in r[2]]
    candidates = sorted(
        (abs(rest[s][0] - rest[d][0]), s, d)
        for s in systolic
        for d in diastolic
        if rest[s][1] and rest[d][1] and abs(rest[s][0] - rest[d][0]) <= BP_PAIR_WINDOW
    )
    paired: set[int] = set()
    for _, s, d in candidates:
        if s in paired or d in paired:
            continue
        paired |= {s, d}
        (s_when, _, s_values, s_sources), (d_when, _, d_values, d_sources) = rest[s], rest[d]
        readings.append((max(s_when, d_when), True, s_values | d_values, s_sources | d_sources))
    readings += [r for n, r in enumerate(rest) if n not in paired]
    if not readings:
        return {}, {}
    _, _, values, sources = max(readings, key=lambda r: (r[0], len(r[2]), "sbp_mmhg" in r[2]))
    return values, sources


def summary_from_prefetch(prefetch: dict[str, Any], today: dt.date | None = None) -> dict[str, Any]:
    """A dict of ``AssessRequest`` fields from Patient, Observations and Conditions."""
    return read_prefetch(prefetch, today)[0]


def _source(resource: Any, kind: str, code: str, shown: str | None) -> Source:
    return {"source": f"{kind}/{resource.id or '?'}", "code": code, "effective": shown}


def read_prefetch(
    prefetch: dict[str, Any], today: dt.date | None = None
) -> tuple[dict[str, Any], list[Source]]:
    """The ``AssessRequest`` fields, and where each came from (the audit trace's provenance).

    One pass decides both, so the trace names exactly the resource behind each value: one
    Observation per input (two for a BP reading of stand-alone systolic and diastolic), every
    Condition with whether it counted.
    """
    out: dict[str, Any] = {}
    sources: list[Source] = []
    today = today or dt.date.today()
    for raw in _entries(prefetch.get("patient"), "Patient"):
        patient = Patient.model_validate(raw)
        if patient.gender in {"male", "female"}:
            out["sex"] = patient.gender
        if patient.birthDate:
            age = _age(patient.birthDate, today)
            if age is not None:
                out["age"] = age
    latest: dict[str, tuple[dt.datetime, Any, Source]] = {}
    panels: list[Reading] = []
    alone: list[Reading] = []

    def keep(name: str, when: dt.datetime, value: Any, source: Source) -> None:
        if value is not None and (name not in latest or when > latest[name][0]):
            latest[name] = (when, value, source)

    for raw in _entries(prefetch.get("observations"), "Observation"):
        obs = Observation.model_validate(raw)
        if obs.status in {"entered-in-error", "cancelled"}:
            continue
        when, exact, shown = _when(obs)
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
                                obs, "Observation", f"{LOINC}|{code}", shown
                            )
            if reading:
                panels.append((when, exact, reading, reading_sources))
            continue
        for code in codes:
            name = CODES.get(code)
            if name is None:
                continue
            source = _source(obs, "Observation", f"{LOINC}|{code}", shown)
            if name in {"sbp_mmhg", "dbp_mmhg"}:
                value = _quantity(name, obs.valueQuantity)
                if value is not None:
                    alone.append((when, exact, {name: value}, {name: source}))
            elif name == "smoking":
                snomed = _codes(obs.valueCodeableConcept)
                if snomed & CURRENT_SMOKER_SNOMED:
                    keep("current_smoker", when, True, source)
                elif snomed & NON_SMOKER_SNOMED:
                    keep("current_smoker", when, False, source)
            else:
                keep(name, when, _quantity(name, obs.valueQuantity), source)
    bp_values, bp_sources = _blood_pressure(panels, alone)
    for name, value in bp_values.items():
        out[name] = round(value)
        sources.append({"input": name, **bp_sources[name]})
    for name, (_, value, source) in latest.items():
        field = f"{name}_mmol_l" if name in LIPIDS else name
        if name in LIPIDS:
            out[field] = round(value, 3)
        elif name in {"heart_rate", "respiratory_rate", "spo2"}:
            out[field] = round(value)
        else:
            out[field] = value
        sources.append({"input": field, **source})
    conditions: list[str] = []
    diabetes_types: set[str] = set()
    for raw in _entries(prefetch.get("conditions"), "Condition"):
        cond = Condition.model_validate(raw)
        clinical = _codes(cond.clinicalStatus)
        counted = not (clinical and not clinical & ACTIVE_CLINICAL_STATUS) and not (
            _codes(cond.verificationStatus) & NOT_A_DIAGNOSIS
        )
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
                "used": counted,
            }
        )
        if not counted:
            continue
        coded = _codes(cond.code)
        both = coded | {code.split(".")[0] for code in coded}
        if both & TYPE1_DIABETES:
            diabetes_types.add("type1")
        elif both & TYPE2_DIABETES:
            diabetes_types.add("type2")
        elif both & UNSPECIFIED_DIABETES:
            diabetes_types.add("unspecified")
        if both & HYPERTENSION:
            conditions.append("hypertension")
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
