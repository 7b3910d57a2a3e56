"""The radiologist-verified SR: the AI's TID 1500 report with the radiologist's verdicts applied.

IHE AI Results (AIR) records a reviewed AI result as a new SR that supersedes the AI's one: same
template and content (the algorithm identification and probabilities stay, they are what the AI
said), the verdicts applied to each finding's present/absent evaluation and measurements, the
radiologist as a person observer and as the Verifying Observer, VerificationFlag ``VERIFIED``,
PreliminaryFlag ``FINAL``, and Predecessor Documents pointing at the AI SR (and at an earlier
verified SR when a review is amended).

A verdict means, for the finding as the AI reported it:

* ``confirmed``: the AI's call (present or absent) is right;
* ``rejected``: the AI's call is wrong (present becomes absent and vice versa);
* ``modified``: the finding is present, with a corrected measurement (``value``, in the unit of
  the finding's first measurement).

Pure: the AI SR comes in as a data set, the verified SR goes out as one; nothing is read or
written here.
"""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from highdicom.sr import CodedConcept
from pydicom import Dataset, dcmread
from pydicom.sequence import Sequence
from pydicom.uid import UID
from pydicom.valuerep import DSfloat

from medgate.reports.codes import ABSENT, PRESENT, QUALITATIVE_EVALUATIONS
from medgate.reports.errors import ReportError
from medgate.reports.validate import encode

VERDICTS = ("confirmed", "rejected", "modified")
VERIFIED_SERIES_NUMBER = 9010
_TRACKING_IDENTIFIER = "112039"
_MEASUREMENT_GROUP = "125007"
_IMAGING_MEASUREMENTS = "126010"
_PROBABILITY = "122157"
_COMMENT = ("121106", "DCM", "Comment")
_IMPRESSION = ("121073", "DCM", "Impression")
_OBSERVER_TYPE = ("121005", "DCM", "Observer Type")
_PERSON = ("121006", "DCM", "Person")
_PERSON_NAME = ("121008", "DCM", "Person Observer Name")


@dataclass(frozen=True)
class Verdict:
    """A radiologist's verdict on one finding (``finding``: its label); the verified SR takes
    them keyed by the measurement group's tracking identifier."""

    finding: str
    verdict: str
    value: float | None = None
    comment: str = ""


@dataclass(frozen=True)
class Reviewer:
    """The radiologist: a display name (DICOM PN, ``Family^Given``), an identifier (kept in the
    review row and the audit trail) and the organisation that verifies."""

    name: str
    id: str
    organization: str


def _item(
    value_type: str, relationship: str, name: tuple[str, str, str], **values: object
) -> Dataset:
    item = Dataset()
    item.RelationshipType = relationship
    item.ValueType = value_type
    item.ConceptNameCodeSequence = Sequence([CodedConcept(*name)])
    for keyword, value in values.items():
        setattr(item, keyword, value)
    return item


def _name(item: Dataset) -> str:
    names = item.get("ConceptNameCodeSequence") or []
    return str(names[0].CodeValue) if names else ""


def _children(item: Dataset) -> list[Dataset]:
    return list(item.get("ContentSequence") or [])


def _groups(root: Dataset) -> Iterable[Dataset]:
    for container in _children(root):
        if container.ValueType == "CONTAINER" and _name(container) == _IMAGING_MEASUREMENTS:
            for group in _children(container):
                if group.ValueType == "CONTAINER" and _name(group) == _MEASUREMENT_GROUP:
                    yield group


def _tracking_identifier(group: Dataset) -> str | None:
    for item in _children(group):
        if item.ValueType == "TEXT" and _name(item) == _TRACKING_IDENTIFIER:
            return str(item.TextValue)
    return None


def _evaluation(group: Dataset) -> Dataset | None:
    """The finding's present/absent qualitative evaluation (a CONTAINS CODE item)."""
    for item in _children(group):
        if item.ValueType != "CODE" or item.RelationshipType != "CONTAINS":
            continue
        value = item.ConceptCodeSequence[0]
        if value.CodeValue in (PRESENT.value, ABSENT.value):
            return item
    return None


def _set_present(evaluation: Dataset, present: bool) -> None:
    code = PRESENT if present else ABSENT
    evaluation.ConceptCodeSequence = Sequence(
        [CodedConcept(code.value, code.scheme_designator, code.meaning)]
    )


def _apply(group: Dataset, verdict: Verdict) -> None:
    evaluation = _evaluation(group)
    if evaluation is None:
        raise ReportError(f"finding {verdict.finding!r} has no present/absent evaluation to verify")
    ai_present = evaluation.ConceptCodeSequence[0].CodeValue == PRESENT.value
    if verdict.verdict == "confirmed":
        _set_present(evaluation, ai_present)
    elif verdict.verdict == "rejected":
        _set_present(evaluation, not ai_present)
    elif verdict.verdict == "modified":
        _set_present(evaluation, True)
        if verdict.value is not None:
            measured = [
                i for i in _children(group) if i.ValueType == "NUM" and _name(i) != _PROBABILITY
            ]
            if not measured:
                raise ReportError(f"finding {verdict.finding!r} has no measurement to modify")
            measured[0].MeasuredValueSequence[0].NumericValue = DSfloat(
                f"{verdict.value:.6g}", auto_format=False
            )
    else:
        raise ReportError(f"unknown verdict {verdict.verdict!r}; one of {', '.join(VERDICTS)}")


def _verdict_text(verdict: Verdict) -> str:
    text = f"Radiologist verdict: {verdict.finding} {verdict.verdict}"
    if verdict.value is not None:
        text += f" (value {verdict.value:g})"
    if verdict.comment:
        text += f": {verdict.comment}"
    return text[:1024]


def _evaluations_container(root: Dataset) -> Dataset:
    for item in _children(root):
        if item.ValueType == "CONTAINER" and _name(item) == QUALITATIVE_EVALUATIONS.value:
            return item
    container = _item(
        "CONTAINER",
        "CONTAINS",
        (QUALITATIVE_EVALUATIONS.value, "UMLS", QUALITATIVE_EVALUATIONS.meaning),
        ContinuityOfContent="SEPARATE",
    )
    container.ContentSequence = Sequence([])
    root.ContentSequence.append(container)
    return container


def _add_person_observer(root: Dataset, reviewer: Reviewer) -> None:
    """TID 1002 (person observer) before the device observer (TID 1004) in the root context."""
    items = _children(root)
    first_context = next(
        (n for n, i in enumerate(items) if i.RelationshipType == "HAS OBS CONTEXT"), len(items)
    )
    person = [
        _item(
            "CODE",
            "HAS OBS CONTEXT",
            _OBSERVER_TYPE,
            ConceptCodeSequence=Sequence([CodedConcept(*_PERSON)]),
        ),
        _item("PNAME", "HAS OBS CONTEXT", _PERSON_NAME, PersonName=reviewer.name),
    ]
    root.ContentSequence = Sequence(items[:first_context] + person + items[first_context:])


def _predecessor(ds: Dataset) -> Dataset:
    sop = Dataset()
    sop.ReferencedSOPClassUID = ds.SOPClassUID
    sop.ReferencedSOPInstanceUID = ds.SOPInstanceUID
    series = Dataset()
    series.SeriesInstanceUID = ds.SeriesInstanceUID
    series.ReferencedSOPSequence = Sequence([sop])
    study = Dataset()
    study.StudyInstanceUID = ds.StudyInstanceUID
    study.ReferencedSeriesSequence = Sequence([series])
    return study


def build_verified_sr(
    ai_sr: Dataset,
    verdicts: Mapping[str, Verdict],
    reviewer: Reviewer,
    *,
    sop_instance_uid: str,
    series_instance_uid: str,
    verified_at: dt.datetime,
    report_text: str = "",
    earlier: Dataset | None = None,
) -> Dataset:
    """The verified SR for ``ai_sr``; ``verdicts`` maps a group's tracking identifier to its
    verdict. Every verdict must match a group (ReportError otherwise). ``earlier`` is the
    verified SR an amended review replaces (a second predecessor)."""
    # A plain pydicom copy (the AI SR may be made of highdicom content items, which check
    # every item they are given and would refuse the edits below half-way).
    ds = dcmread(io.BytesIO(encode(ai_sr)))
    matched: set[str] = set()
    for group in _groups(ds):
        tracking = _tracking_identifier(group)
        if tracking is not None and tracking in verdicts:
            _apply(group, verdicts[tracking])
            matched.add(tracking)
    missing = sorted(set(verdicts) - matched)
    if missing:
        raise ReportError(f"no finding in the AI SR for {', '.join(missing)}")
    container = _evaluations_container(ds)
    texts = [
        _item("TEXT", "CONTAINS", _COMMENT, TextValue=_verdict_text(v)) for v in verdicts.values()
    ]
    if report_text.strip():
        texts.append(_item("TEXT", "CONTAINS", _IMPRESSION, TextValue=report_text.strip()))
    container.ContentSequence = Sequence(_children(container) + texts)
    _add_person_observer(ds, reviewer)

    stamp = verified_at.astimezone(dt.UTC)
    observer = Dataset()
    observer.VerifyingObserverName = reviewer.name
    # Type 2, left empty: a reviewer's login is no coded concept (a private "99..." scheme
    # draws dciodvfy warnings); the id is in the review row and the audit trail.
    observer.VerifyingObserverIdentificationCodeSequence = Sequence([])
    observer.VerifyingOrganization = reviewer.organization[:64]
    observer.VerificationDateTime = stamp.strftime("%Y%m%d%H%M%S+0000")
    ds.VerifyingObserverSequence = Sequence([observer])
    ds.VerificationFlag = "VERIFIED"
    ds.PreliminaryFlag = "FINAL"
    ds.CompletionFlag = "COMPLETE"
    ds.PredecessorDocumentsSequence = Sequence(
        [_predecessor(ai_sr)] + ([_predecessor(earlier)] if earlier is not None else [])
    )
    ds.SOPInstanceUID = sop_instance_uid
    ds.SeriesInstanceUID = series_instance_uid
    ds.SeriesNumber = VERIFIED_SERIES_NUMBER
    ds.InstanceNumber = 1
    ds.SeriesDescription = "Radiologist-verified AI report"
    ds.ContentDate = ds.InstanceCreationDate = stamp.strftime("%Y%m%d")
    ds.ContentTime = ds.InstanceCreationTime = stamp.strftime("%H%M%S")
    ds.SeriesDate, ds.SeriesTime = ds.ContentDate, ds.ContentTime
    ds.file_meta.MediaStorageSOPInstanceUID = UID(sop_instance_uid)
    return ds
