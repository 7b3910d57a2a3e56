"""The AI result as an HL7 v2.5.1 ORU^R01 message, built with hl7apy (docs/delivery.md).

One message per (study, destination, result status): MSH (UTF-8, MSH-18 ``UNICODE UTF-8``), PID
(patient identifier and name from the study's header), OBR (accession number, study UID,
priority, result status P, F or C), then OBX segments: one coded OBX per finding (SNOMED CT from the
bundle), one NM OBX per measurement with its UCUM unit, one TX OBX per guidance language, and an
RP OBX pointing at the DICOM SR. Every free-text value goes through hl7apy's escaping of the
delimiters (``|^~\\&``); Chinese text is carried as UTF-8, unescaped, as MSH-18 announces.

The message control ID (MSH-10) is derived from the study, the destination and the status, so
the same result to the same HIS always has the same ID: a resend after a crash is recognisably
the same message, never a new one.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable
from typing import Any

from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.core import Message, Segment
from hl7apy.v2_5_1 import TX
from pydicom.sr.codedict import codes

from medgate.delivery.study_header import StudyHeader

HL7_VERSION = "2.5.1"
CHARSET = "UNICODE UTF-8"
#: OBR-25 / OBX-11 result status (HL7 table 0123 / 0085) -> the FHIR report status.
RESULT_STATUSES = {"P": "preliminary", "F": "final", "C": "amended"}
#: OBR-27.6 / TQ priority (HL7 table 0027): S stat, A as soon as possible, R routine.
PRIORITY_CODES = {"critical": "S", "urgent": "A", "routine": "R"}
#: The ordered service: LOINC 18748-4 "Diagnostic imaging study".
SERVICE = ("18748-4", "Diagnostic imaging study", "LN")
#: Guidance text: LOINC 18783-1 "Radiology Study recommendation (narrative)".
RECOMMENDATION = ("18783-1", "Study recommendation", "LN")
PRESENT = codes.SCT.Present
ABSENT = codes.SCT.Absent
SR_TITLE = codes.DCM.ImagingMeasurementReport  # 126000, the TID 1500 document title
FINDING_SITE = ("363698007", "Finding site", "SCT")
#: Longest line of guidance text in one OBX-5 repetition (before escaping).
TEXT_LINE = 120
LANGUAGE_NAMES = {"zh": "Chinese", "en": "English"}


def message_control_id(study_uid: str, destination: str, result_status: str) -> str:
    """MSH-10: 20 characters (the v2.5.1 length of ST here), the same for the same message."""
    digest = hashlib.sha256(f"{study_uid}\x00{destination}\x00{result_status}".encode())
    return "MG" + digest.hexdigest()[:18].upper()


def _text(value: str) -> str:
    """A value escaped for ER7 by hl7apy's textual data type (TX: the longest, 64 KiB)."""
    return str(TX(value).to_er7())


_st = _text


def _components(*parts: str) -> str:
    """A composite value: each part escaped, joined by the component separator."""
    values = [_st(p) for p in parts]
    while values and not values[-1]:
        values.pop()
    return "^".join(values)


def _coded(code: dict[str, Any] | None) -> str:
    """A CE/CWE value (identifier^text^coding system) from a contract ``Code`` as JSON."""
    if not code:
        return ""
    return _components(str(code["value"]), str(code["meaning"]), str(code["scheme"]))


def text_lines(text: str, width: int = TEXT_LINE) -> list[str]:
    """A TX value as lines of at most ``width`` characters (OBX-5 repetitions), broken at
    spaces where there are any: an ST/TX repetition over 199 characters is refused by strict
    parsers (hl7apy among them), and Chinese text has no spaces to break at."""
    lines: list[str] = []
    for paragraph in text.splitlines() or [""]:
        rest = paragraph
        while len(rest) > width:
            cut = rest.rfind(" ", 0, width + 1)
            cut = cut if cut > width // 2 else width
            lines.append(rest[:cut].rstrip())
            rest = rest[cut:].lstrip()
        lines.append(rest)
    return lines


def _ts(value: dt.datetime | None) -> str:
    return value.strftime("%Y%m%d%H%M%S") if value is not None else ""


def _format_number(value: float) -> str:
    text = f"{value:.4f}".rstrip("0").rstrip(".")
    return text or "0"


class _Observations:
    """Appends numbered OBX segments to an order group."""

    def __init__(self, group: Any, status: str) -> None:
        self.group = group
        self.status = status
        self.count = 0

    def add(
        self,
        value_type: str,
        identifier: str,
        value: str | list[str],
        *,
        sub_id: str = "",
        units: str = "",
        abnormal: str = "",
    ) -> Segment:
        self.count += 1
        obx = self.group.add_group("ORU_R01_OBSERVATION").add_segment("OBX")
        obx.obx_1 = str(self.count)
        obx.obx_2 = value_type
        obx.obx_3 = identifier
        if sub_id:
            obx.obx_4 = _st(sub_id)
        for line in [value] if isinstance(value, str) else value:
            obx.add_field("OBX_5").value = line  # a list: repetitions (lines of text)
        if units:
            obx.obx_6 = units
        if abnormal:
            obx.obx_8 = abnormal
        obx.obx_11 = self.status
        return obx

    def add_site(self, site: dict[str, Any] | None, sub_id: str) -> None:
        """v2.5.1 OBX has no observation-site field: the finding site is its own CE OBX in the
        same sub-ID group, identified by SNOMED CT 363698007 "Finding site"."""
        if site:
            obs_id = _components(FINDING_SITE[0], FINDING_SITE[1], FINDING_SITE[2])
            self.add("CE", obs_id, _coded(site), sub_id=sub_id)


def build_oru(
    *,
    header: StudyHeader,
    result: dict[str, Any],
    result_status: str,
    control_id: str,
    sending_application: str,
    sending_facility: str,
    receiving_application: str,
    receiving_facility: str,
    message_time: dt.datetime,
    languages: Iterable[str] = ("zh", "en"),
) -> str:
    """The ORU^R01 as ER7 text (segments separated by CR)."""
    if result_status not in RESULT_STATUSES:
        raise ValueError(f"result status must be P, F or C, not {result_status!r}")
    msg = Message("ORU_R01", version=HL7_VERSION, validation_level=VALIDATION_LEVEL.TOLERANT)
    msh = msg.msh
    msh.msh_3 = _components(sending_application)
    msh.msh_4 = _components(sending_facility)
    msh.msh_5 = _components(receiving_application)
    msh.msh_6 = _components(receiving_facility)
    msh.msh_7 = _ts(message_time)
    msh.msh_9 = "ORU^R01^ORU_R01"
    msh.msh_10 = control_id
    msh.msh_11 = "P"
    msh.msh_12 = HL7_VERSION
    msh.msh_18 = CHARSET

    patient_result = msg.add_group("ORU_R01_PATIENT_RESULT")
    pid = patient_result.add_group("ORU_R01_PATIENT").add_segment("PID")
    pid.pid_1 = "1"
    pid.pid_3 = (
        _st(header.patient_id) + "^^^" + _st(header.issuer_of_patient_id)
        if header.issuer_of_patient_id
        else _st(header.patient_id)
    )
    if header.names:
        # XPN: family^given^middle^suffix^prefix^^type^representation (A/I/P per DICOM group)
        for n in header.names:
            repetition = pid.add_field("PID_5")
            repetition.value = _components(
                n.family, n.given, n.middle, n.suffix, n.prefix, "", "L", n.representation
            )
    if header.birth_date:
        pid.pid_7 = _st(header.birth_date)
    if header.sex in ("M", "F", "O"):
        pid.pid_8 = header.sex

    order = patient_result.add_group("ORU_R01_ORDER_OBSERVATION")
    obr = order.add_segment("OBR")
    obr.obr_1 = "1"
    if header.accession_number:
        obr.obr_2 = _st(header.accession_number)
    obr.obr_3 = _components(header.study_instance_uid or "", "MEDGATE")
    obr.obr_4 = _components(*SERVICE)
    obr.obr_7 = _ts(header.study_datetime)
    if header.accession_number:
        obr.obr_18 = _st(header.accession_number)
    obr.obr_22 = _ts(message_time)
    obr.obr_24 = "RAD"
    obr.obr_25 = result_status
    priority = PRIORITY_CODES.get(str(result.get("priority") or ""), "")
    if priority:
        obr.obr_27 = "^^^^^" + priority

    obs = _Observations(order, result_status)
    for number, finding in enumerate(result.get("findings", []), start=1):
        presence = PRESENT if finding.get("present") else ABSENT
        obs.add(
            "CE",
            _coded(finding.get("finding_type")),
            _components(presence.value, presence.meaning, presence.scheme_designator),
            sub_id=str(number),
            abnormal="A" if finding.get("present") else "N",
        )
        obs.add_site(finding.get("finding_site"), str(number))
        for measurement in finding.get("measurements", []):
            _measurement(obs, measurement, str(number))
    for number, measurement in enumerate(result.get("measurements", []), start=1):
        _measurement(obs, measurement, f"m{number}")
    wanted = list(languages)
    for statement in result.get("guidance", []):
        texts = statement.get("text", {})
        for language in wanted:
            if texts.get(language):
                label = f"{RECOMMENDATION[1]} ({LANGUAGE_NAMES.get(language, language)})"
                obs.add(
                    "TX",
                    _components(RECOMMENDATION[0], label, RECOMMENDATION[2]),
                    [_text(line) for line in text_lines(texts[language])],
                    sub_id=f"{statement.get('rule_id', 'guidance')}.{language}",
                )
    for obj in result.get("result_objects", []):
        if obj.get("kind") == "sr":
            # RP: pointer (SOP Instance UID) ^ application ID ^ type ^ subtype
            obs.add(
                "RP",
                _components(SR_TITLE.value, SR_TITLE.meaning, SR_TITLE.scheme_designator),
                _components(str(obj["sop_instance_uid"]), "DICOM", "application", "dicom"),
                sub_id="sr",
            )
    return str(msg.to_er7())


def _measurement(obs: _Observations, measurement: dict[str, Any], sub_id: str) -> None:
    unit = measurement.get("unit") or {}
    obs.add(
        "NM",
        _coded(measurement.get("name")),
        _format_number(float(measurement["value"])),
        sub_id=sub_id,
        units=_components(str(unit.get("value", "")), str(unit.get("meaning", "")), "UCUM")
        if unit
        else "",
    )
    obs.add_site(measurement.get("finding_site"), sub_id)
