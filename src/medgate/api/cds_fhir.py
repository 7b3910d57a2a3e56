"""FHIR R4 prefetch for CDS Hooks: parse with fhir.resources, map to an ``AssessRequest``.

Observations are chosen by LOINC code (latest effective time wins); Conditions by SNOMED CT or
ICD-10 codes for diabetes and hypertension. Missing prefetch is fetched from ``fhirServer`` with
the ``fhirAuthorization`` bearer token when the hook request carries them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

import httpx
from fhir.resources.bundle import Bundle
from fhir.resources.condition import Condition
from fhir.resources.observation import Observation
from fhir.resources.patient import Patient

from medgate.clinical.common import MG_DL_PER_MMOL_L_CHOLESTEROL, MG_DL_PER_MMOL_L_GLUCOSE

LOINC = "http://loinc.org"
BP_PANEL = "85354-9"
CODES: dict[str, str] = {
    "8480-6": "sbp_mmhg",
    "8462-4": "dbp_mmhg",
    "2093-3": "total_cholesterol",
    "2085-9": "hdl_cholesterol",
    "4548-4": "hba1c_percent",
    "1558-6": "fasting_glucose_mmol_l",
    "2339-0": "random_glucose_mmol_l",
    "2345-7": "random_glucose_mmol_l",
    "8867-4": "heart_rate",
    "9279-1": "respiratory_rate",
    "59408-5": "spo2",
    "2708-6": "spo2",
    "8310-5": "temperature_c",
    "8280-0": "waist_cm",
    "39156-5": "bmi",
    "72166-2": "smoking",
}
OBSERVATION_CODES = [BP_PANEL, *CODES]
CURRENT_SMOKER_SNOMED = {
    "449868002",
    "428041000124106",
    "77176002",
    "65568007",
    "428071000124103",
    "428061000124105",
}
# never smoked, ex-smoker: not a current smoker. Any other code (266927001 "smoking status
# unknown", 77176002 is current above) leaves current_smoker unset: unknown stays unknown.
NON_SMOKER_SNOMED = {"266919005", "8517006"}
TYPE2_DIABETES = {"44054006", "E11"}
TYPE1_DIABETES = {"46635009", "E10"}
# Diabetes of unspecified type: treated as type 2 (the large majority of adult diabetes in China);
# the summary says "unspecified" so the answer can state the assumption.
UNSPECIFIED_DIABETES = {"73211009", "E14"}
DIABETES = TYPE2_DIABETES | TYPE1_DIABETES | UNSPECIFIED_DIABETES
HYPERTENSION = {"38341003", "59621000", "I10", "I11", "I12", "I13", "I15"}

PREFETCH_TEMPLATES = {
    "patient": "Patient/{{context.patientId}}",
    "observations": "Observation?patient={{context.patientId}}&code="
    + ",".join(f"{LOINC}|{code}" for code in OBSERVATION_CODES)
    + "&_sort=-date&_count=200",
    "conditions": "Condition?patient={{context.patientId}}&clinical-status=active",
}


class FhirFetchError(RuntimeError):
    """The FHIR server could not be reached or answered with an error."""


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
                raise FhirFetchError(f"FHIR server unreachable: {type(exc).__name__}") from exc
            if response.status_code >= 400:
                raise FhirFetchError(f"FHIR server answered {response.status_code} for {key}")
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


def _when(obs: Observation) -> dt.datetime:
    value = obs.effectiveDateTime or (obs.effectivePeriod.start if obs.effectivePeriod else None)
    if value is None:
        value = obs.issued
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC)
    return dt.datetime.min.replace(tzinfo=dt.UTC)


def _loinc(concept: Any) -> list[str]:
    return [c.code for c in (concept.coding or []) if c.system == LOINC and c.code]


def _quantity(name: str, quantity: Any) -> float | None:
    if quantity is None or quantity.value is None:
        return None
    value = float(quantity.value)
    unit = (quantity.code or quantity.unit or "").lower()
    if name in {"total_cholesterol", "hdl_cholesterol"}:
        return value / MG_DL_PER_MMOL_L_CHOLESTEROL if "mg" in unit else value
    if name.endswith("glucose_mmol_l") and "mg" in unit:
        return value / MG_DL_PER_MMOL_L_GLUCOSE
    if name == "temperature_c" and unit in {"[degf]", "degf", "°f"}:
        return (value - 32) * 5 / 9
    return value


def summary_from_prefetch(prefetch: dict[str, Any], today: dt.date | None = None) -> dict[str, Any]:
    """A dict of ``AssessRequest`` fields from Patient, Observations and Conditions."""
    out: dict[str, Any] = {}
    today = today or dt.date.today()
    for raw in _entries(prefetch.get("patient"), "Patient"):
        patient = Patient.model_validate(raw)
        if patient.gender in {"male", "female"}:
            out["sex"] = patient.gender
        if patient.birthDate:
            born = patient.birthDate
            out["age"] = (
                today.year - born.year - ((today.month, today.day) < (born.month, born.day))
            )
    latest: dict[str, tuple[dt.datetime, Any]] = {}

    def keep(name: str, when: dt.datetime, value: Any) -> None:
        if value is not None and (name not in latest or when > latest[name][0]):
            latest[name] = (when, value)

    for raw in _entries(prefetch.get("observations"), "Observation"):
        obs = Observation.model_validate(raw)
        if obs.status in {"entered-in-error", "cancelled"}:
            continue
        when = _when(obs)
        codes = _loinc(obs.code)
        if BP_PANEL in codes:
            for comp in obs.component or []:
                for code in _loinc(comp.code):
                    if code in ("8480-6", "8462-4"):
                        keep(CODES[code], when, _quantity(CODES[code], comp.valueQuantity))
        for code in codes:
            name = CODES.get(code)
            if name is None:
                continue
            if name == "smoking":
                concept = obs.valueCodeableConcept
                snomed = {c.code for c in (concept.coding or [])} if concept else set()
                if snomed & CURRENT_SMOKER_SNOMED:
                    keep("current_smoker", when, True)
                elif snomed & NON_SMOKER_SNOMED:
                    keep("current_smoker", when, False)
            else:
                keep(name, when, _quantity(name, obs.valueQuantity))
    for name, (_, value) in latest.items():
        if name in {"total_cholesterol", "hdl_cholesterol"}:
            out[f"{name}_mmol_l"] = round(value, 3)
        elif name in {"sbp_mmhg", "dbp_mmhg", "heart_rate", "respiratory_rate", "spo2"}:
            out[name] = round(value)
        else:
            out[name] = value
    conditions: list[str] = []
    diabetes_types: set[str] = set()
    for raw in _entries(prefetch.get("conditions"), "Condition"):
        cond = Condition.model_validate(raw)
        status = (
            cond.clinicalStatus.coding[0].code
            if cond.clinicalStatus and cond.clinicalStatus.coding
            else "active"
        )
        if status not in {"active", "recurrence", "relapse"}:
            continue
        coded: set[str] = (
            {c.code for c in (cond.code.coding or []) if c.code} if cond.code else set()
        )
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
    return out
