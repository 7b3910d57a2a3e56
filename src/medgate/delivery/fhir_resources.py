"""The AI result as FHIR R4 resources, each built with fhir.resources models (docs/delivery.md).

A study's result is one DiagnosticReport (``preliminary`` until a radiologist's review makes it
``final``) whose ``result`` lists one Observation per finding and per study-level measurement;
the triage priority is a RiskAssessment. Observations are ``derivedFrom`` the ImagingStudy (by its
StudyInstanceUID) and the DICOM SR (by its SOPInstanceUID), as logical references: medgate
serves no ImagingStudy, the PACS holds the images.

fhir.resources' R4B (4.3) models are used: every element written here exists unchanged in R4
(4.0.1), which is the version the CapabilityStatement announces and that R4 clients read.

Identifiers: the DiagnosticReport's id is the StudyInstanceUID (a valid FHIR id: digits and dots,
at most 64 characters); Observation and RiskAssessment ids add a hash of it and a suffix; the
Patient reference's id is a hash of the patient identifier (medgate serves no Patient resource).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.capabilitystatement import CapabilityStatement
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.operationoutcome import OperationOutcome
from fhir.resources.R4B.resource import Resource
from fhir.resources.R4B.riskassessment import RiskAssessment

from medgate.delivery.study_header import StudyHeader

FHIR_VERSION = "4.0.1"
SYSTEMS = {
    "SCT": "http://snomed.info/sct",
    "UCUM": "http://unitsofmeasure.org",
    "DCM": "http://dicom.nema.org/resources/ontology/DCM",
    "RADLEX": "http://radlex.org",
    "LN": "http://loinc.org",
}
DICOM_UID = "urn:dicom:uid"
STUDY_CODE = {"system": SYSTEMS["LN"], "code": "18748-4", "display": "Diagnostic imaging study"}
RAD_CATEGORY = {
    "system": "http://terminology.hl7.org/CodeSystem/v2-0074",
    "code": "RAD",
    "display": "Radiology",
}
IMAGING_CATEGORY = {
    "system": "http://terminology.hl7.org/CodeSystem/observation-category",
    "code": "imaging",
    "display": "Imaging",
}
PRESENT = {"system": SYSTEMS["SCT"], "code": "52101004", "display": "Present"}
ABSENT = {"system": SYSTEMS["SCT"], "code": "272519000", "display": "Absent"}
PROBABILITY = {"system": SYSTEMS["DCM"], "code": "122157", "display": "Probability"}
INTERPRETATION = {
    True: {
        "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation",
        "code": "A",
        "display": "Abnormal",
    },
    False: {
        "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation",
        "code": "N",
        "display": "Normal",
    },
}
#: Triage priority as a qualitative risk (HL7 risk-probability code system).
RISK = {
    "critical": ("high", "High likelihood"),
    "urgent": ("moderate", "Moderate likelihood"),
    "routine": ("low", "Low likelihood"),
}
RISK_SYSTEM = "http://terminology.hl7.org/CodeSystem/risk-probability"


def _hash(value: str, length: int = 24) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:length]


def observation_prefix(study_uid: str) -> str:
    """The shared start of a study's Observation ids (``o<hash>-``)."""
    return f"o{_hash(study_uid)}-"


def risk_id(study_uid: str) -> str:
    return f"r{_hash(study_uid)}"


def patient_identifier_system(header: StudyHeader, site: str | None) -> str:
    """The system of the patient identifier: the DICOM issuer if any, else the site's."""
    if header.issuer_of_patient_id:
        return f"urn:medgate:issuer:{header.issuer_of_patient_id}"
    return f"urn:medgate:site:{site or 'default'}:patient-id"


def patient_id(header: StudyHeader, site: str | None) -> str:
    """The logical id used in ``Patient/<id>`` references (a hash: PatientIDs may hold any
    character, FHIR ids may not)."""
    return "p" + _hash(f"{patient_identifier_system(header, site)}|{header.patient_id}", 32)


def _subject(header: StudyHeader, site: str | None) -> dict[str, Any]:
    display = " ".join(
        " ".join(p for p in (n.family, n.given) if p) for n in header.names[:1]
    ).strip()
    subject: dict[str, Any] = {
        "reference": f"Patient/{patient_id(header, site)}",
        "identifier": {
            "system": patient_identifier_system(header, site),
            "value": header.patient_id or "unknown",
        },
    }
    if display:
        subject["display"] = display
    return subject


def _concept(code: dict[str, Any] | None) -> dict[str, Any] | None:
    if not code:
        return None
    system = SYSTEMS.get(str(code.get("scheme")), f"urn:medgate:scheme:{code.get('scheme')}")
    return {
        "coding": [{"system": system, "code": str(code["value"]), "display": code["meaning"]}],
        "text": str(code["meaning"]),
    }


def _quantity(measurement: dict[str, Any]) -> dict[str, Any]:
    unit = measurement.get("unit") or {}
    return {
        "value": float(measurement["value"]),
        "unit": str(unit.get("meaning") or unit.get("value") or "1"),
        "system": SYSTEMS["UCUM"],
        "code": str(unit.get("value") or "1"),
    }


def _instant(value: dt.datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.isoformat()


def _model_name(finding: dict[str, Any]) -> str:
    return f"{finding.get('bundle', 'model')} {finding.get('version', '')}".strip()


def _derived_from(study_uid: str, result: dict[str, Any]) -> list[dict[str, Any]]:
    refs: list[dict[str, Any]] = [
        {
            "type": "ImagingStudy",
            "identifier": {"system": DICOM_UID, "value": f"urn:oid:{study_uid}"},
            "display": "DICOM study",
        }
    ]
    for obj in result.get("result_objects", []):
        if obj.get("kind") == "sr":
            refs.append(
                {
                    "type": "DocumentReference",
                    "identifier": {
                        "system": DICOM_UID,
                        "value": f"urn:oid:{obj['sop_instance_uid']}",
                    },
                    "display": "DICOM SR (TID 1500)",
                }
            )
    return refs


@dataclass(kw_only=True)
class StudyResources:
    """Every FHIR resource of one study's result, built once from its row and header."""

    study_uid: str
    result: dict[str, Any]
    header: StudyHeader
    status: str
    issued: dt.datetime | None
    site: str | None
    languages: Sequence[str] = ("zh", "en")
    subject: dict[str, Any] = field(init=False)
    effective: str | None = field(init=False)
    observations: list[Observation] = field(init=False)
    risk: RiskAssessment | None = field(init=False)
    report: DiagnosticReport = field(init=False)

    def __post_init__(self) -> None:
        self.subject = _subject(self.header, self.site)
        effective = self.header.study_datetime
        self.effective = effective.date().isoformat() if effective else None
        self.observations = self._observations()
        self.risk = self._risk()
        self.report = self._report()

    @property
    def patient_id(self) -> str:
        return patient_id(self.header, self.site)

    def _base(self) -> dict[str, Any]:
        base: dict[str, Any] = {"status": self.status, "subject": self.subject}
        if self.effective:
            base["effectiveDateTime"] = self.effective
        issued = _instant(self.issued)
        if issued:
            base["issued"] = issued
        return base

    def _observations(self) -> list[Observation]:
        prefix = observation_prefix(self.study_uid)
        derived = _derived_from(self.study_uid, self.result)
        made: list[Observation] = []
        for number, finding in enumerate(self.result.get("findings", []), start=1):
            present = bool(finding.get("present"))
            components: list[dict[str, Any]] = [
                {
                    "code": {"coding": [PROBABILITY]},
                    "valueQuantity": {
                        "value": float(finding.get("probability", 0.0)),
                        "unit": "1",
                        "system": SYSTEMS["UCUM"],
                        "code": "1",
                    },
                }
            ]
            for measurement in finding.get("measurements", []):
                components.append(
                    {
                        "code": _concept(measurement.get("name")),
                        "valueQuantity": _quantity(measurement),
                    }
                )
            data: dict[str, Any] = {
                **self._base(),
                "id": f"{prefix}f{number}",
                "category": [{"coding": [IMAGING_CATEGORY]}],
                "code": _concept(finding.get("finding_type")),
                "valueCodeableConcept": {"coding": [PRESENT if present else ABSENT]},
                "interpretation": [{"coding": [INTERPRETATION[present]]}],
                "component": components,
                "derivedFrom": derived,
                "device": {"display": _model_name(finding)},
            }
            site = _concept(finding.get("finding_site"))
            if site:
                data["bodySite"] = site
            made.append(Observation(**data))
        for number, measurement in enumerate(self.result.get("measurements", []), start=1):
            data = {
                **self._base(),
                "id": f"{prefix}m{number}",
                "category": [{"coding": [IMAGING_CATEGORY]}],
                "code": _concept(measurement.get("name")),
                "valueQuantity": _quantity(measurement),
                "derivedFrom": derived,
            }
            site = _concept(measurement.get("finding_site"))
            if site:
                data["bodySite"] = site
            made.append(Observation(**data))
        return made

    def _risk(self) -> RiskAssessment | None:
        priority = self.result.get("priority")
        if priority not in RISK:
            return None
        code, display = RISK[str(priority)]
        reasons = "; ".join(self.result.get("reasons", []))
        data: dict[str, Any] = {
            "id": risk_id(self.study_uid),
            "status": self.status,
            "subject": self.subject,
            "method": {"text": "medgate imaging triage"},
            "basis": [{"reference": f"Observation/{o.id}"} for o in self.observations],
            "prediction": [
                {
                    "outcome": {"text": f"needs a {priority} read"},
                    "qualitativeRisk": {
                        "coding": [{"system": RISK_SYSTEM, "code": code, "display": display}]
                    },
                    **({"rationale": reasons} if reasons else {}),
                }
            ],
        }
        if self.effective:
            data["occurrenceDateTime"] = self.effective
        return RiskAssessment(**data)

    def _report(self) -> DiagnosticReport:
        conclusions: list[str] = []
        for statement in self.result.get("guidance", []):
            texts = statement.get("text", {})
            conclusions.extend(texts[lang] for lang in self.languages if texts.get(lang))
        present = [
            _concept(f.get("finding_type"))
            for f in self.result.get("findings", [])
            if f.get("present") and f.get("finding_type")
        ]
        data: dict[str, Any] = {
            **self._base(),
            "id": self.study_uid,
            "identifier": [{"system": DICOM_UID, "value": f"urn:oid:{self.study_uid}"}],
            "category": [{"coding": [RAD_CATEGORY]}],
            "code": {"coding": [STUDY_CODE]},
            "performer": [{"display": "medgate AI gateway"}],
            "result": [{"reference": f"Observation/{o.id}"} for o in self.observations],
            "imagingStudy": [
                {
                    "type": "ImagingStudy",
                    "identifier": {"system": DICOM_UID, "value": f"urn:oid:{self.study_uid}"},
                }
            ],
        }
        if self.header.accession_number:
            data["identifier"].append(
                {
                    "type": {
                        "coding": [
                            {
                                "system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                                "code": "ACSN",
                            }
                        ]
                    },
                    "value": self.header.accession_number,
                }
            )
        if conclusions:
            data["conclusion"] = "\n".join(conclusions)
        if present:
            data["conclusionCode"] = present
        return DiagnosticReport(**data)

    def all(self) -> list[Resource]:
        resources: list[Resource] = [self.report, *self.observations]
        if self.risk is not None:
            resources.append(self.risk)
        return resources


def searchset(
    resources: Iterable[Resource],
    base_url: str,
    total: int | None = None,
    links: dict[str, str] | None = None,
) -> Bundle:
    """A ``searchset`` Bundle of ``resources`` (one page of a search when ``total``, the number of
    matches, is larger) with full URLs under ``base_url`` and paging ``links`` by relation
    (``self``, ``next``, ``previous``)."""
    entries = [
        {
            "fullUrl": f"{base_url.rstrip('/')}/{r.get_resource_type()}/{r.id}",
            "resource": r,
            "search": {"mode": "match"},
        }
        for r in resources
    ]
    return Bundle.model_validate(
        {
            "type": "searchset",
            "total": len(entries) if total is None else total,
            "link": [{"relation": rel, "url": url} for rel, url in (links or {}).items()] or None,
            "entry": entries or None,
        }
    )


def transaction_bundle(study: StudyResources) -> Bundle:
    """The study's resources as a FHIR ``transaction`` that a site's FHIR server applies as a
    whole; each entry is a PUT by id, so pushing the final result replaces the preliminary
    one and pushing the same result twice changes nothing."""
    entries = [
        {
            "fullUrl": f"urn:medgate:{r.get_resource_type()}:{r.id}",
            "resource": r,
            "request": {"method": "PUT", "url": f"{r.get_resource_type()}/{r.id}"},
        }
        for r in study.all()
    ]
    return Bundle.model_validate({"type": "transaction", "entry": entries})


def operation_outcome(severity: str, code: str, text: str) -> OperationOutcome:
    return OperationOutcome.model_validate(
        {"issue": [{"severity": severity, "code": code, "diagnostics": text}]}
    )


SEARCH_PARAMS: dict[str, list[tuple[str, str]]] = {
    "DiagnosticReport": [
        ("patient", "reference"),
        ("subject", "reference"),
        ("subject:identifier", "token"),
        ("status", "token"),
        ("date", "date"),
    ],
    "Observation": [
        ("patient", "reference"),
        ("subject:identifier", "token"),
        ("status", "token"),
        ("date", "date"),
    ],
    "RiskAssessment": [("patient", "reference"), ("subject:identifier", "token")],
    "ServiceRequest": [("patient", "reference")],
    "Task": [("patient", "reference")],
}


def capability_statement(software_version: str, base_url: str) -> CapabilityStatement:
    """What ``/fhir`` serves: read and search of the resources above, JSON, bearer tokens."""
    resources = []
    for name, params in SEARCH_PARAMS.items():
        resources.append(
            {
                "type": name,
                "interaction": [{"code": "read"}, {"code": "search-type"}],
                "searchParam": [{"name": n, "type": t} for n, t in params],
            }
        )
    return CapabilityStatement.model_validate(
        {
            "status": "active",
            "date": dt.datetime.now(dt.UTC).date().isoformat(),
            "kind": "instance",
            "software": {"name": "medgate", "version": software_version},
            "implementation": {"description": "medgate AI results", "url": base_url},
            "fhirVersion": FHIR_VERSION,
            "format": ["json", "application/fhir+json"],
            "rest": [
                {
                    "mode": "server",
                    "security": {
                        "description": "Authorization: Bearer <token> with the 'fhir' scope; a "
                        "site-scoped token sees its own site's resources only"
                    },
                    "resource": resources,
                }
            ],
        }
    )
