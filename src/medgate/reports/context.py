"""What every result-object writer needs to know about one study's run set, computed once."""

from __future__ import annotations

from dataclasses import dataclass, field

import highdicom as hd
from pydicom import Dataset

from medgate.core.config import ReportsConfig
from medgate.core.uids import derived_uid, run_set_parts
from medgate.models.findings import ModelResult, StudyResult
from medgate.reports.codes import PROCESSING_EQUIPMENT
from medgate.reports.errors import ReportError

#: Series numbers of the result series (the source series keep theirs; viewers sort by these).
SERIES_NUMBERS = {"sr": 9001, "seg": 9002, "overlay": 9050, "summary": 9090}
#: UTF-8, so that Chinese guidance text and Chinese patient names survive in every object.
CHARACTER_SET = "ISO_IR 192"


@dataclass
class BuildContext:
    """A study's result set: its sources by SOP Instance UID, config and the UID base."""

    study: StudyResult
    sources: dict[str, Dataset]
    config: ReportsConfig
    base: tuple[str, ...] = field(default=())

    @classmethod
    def create(
        cls, study: StudyResult, sources: list[Dataset], config: ReportsConfig
    ) -> BuildContext:
        if not sources:
            raise ReportError("no source instances given: result objects reference their sources")
        by_uid: dict[str, Dataset] = {}
        for ds in sources:
            for keyword in ("SOPInstanceUID", "SOPClassUID", "StudyInstanceUID"):
                if not ds.get(keyword):
                    raise ReportError(f"a source instance has no {keyword}")
            if ds.StudyInstanceUID != study.study_instance_uid:
                raise ReportError("a source instance belongs to another study than the result")
            by_uid[str(ds.SOPInstanceUID)] = ds
        ordered = dict(
            sorted(
                by_uid.items(),
                key=lambda item: (
                    str(item[1].get("SeriesInstanceUID", "")),
                    int(item[1].get("InstanceNumber") or 0),
                    item[0],
                ),
            )
        )
        bundles = [(r.bundle_name, r.bundle_version) for r in study.model_results]
        base = run_set_parts(study.study_instance_uid, ordered, bundles)
        return cls(study=study, sources=ordered, config=config, base=base)

    @property
    def first(self) -> Dataset:
        """The reference instance for patient and study attributes."""
        return next(iter(self.sources.values()))

    def uid(self, *parts: str) -> str:
        """A deterministic UID for an object derived from this run set."""
        return derived_uid(*self.base, *parts)

    def source(self, sop_instance_uid: str) -> Dataset:
        try:
            return self.sources[sop_instance_uid]
        except KeyError:
            raise ReportError(
                "a model result refers to an instance that is not among the sources"
            ) from None


def device_uid(result: ModelResult) -> str:
    """The model's device UID (changes with every retrain); derived from name+version if unset."""
    return result.device_uid or derived_uid("device", result.bundle_name, result.bundle_version)


def model_equipment(result: ModelResult, config: ReportsConfig) -> hd.ContributingEquipment:
    """ContributingEquipmentSequence item for a model: (DCM 109102) Processing Equipment."""
    item = hd.ContributingEquipment(
        manufacturer=config.manufacturer[:64],
        purpose_of_reference=PROCESSING_EQUIPMENT,
        manufacturer_model_name=result.bundle_name[:64],
        software_versions=result.bundle_version[:64],
        device_serial_number=device_uid(result)[:64],
        institution_name=config.institution_name[:64],
        contribution_description=f"AI model {result.bundle_name} {result.bundle_version}"[:1024],
    )
    # The device UID goes in Device Serial Number: dicom3tools' dictionary does not (yet) list
    # Device UID (0018,1002) in this sequence, and an unknown attribute would warn.
    return item


def models_label(study: StudyResult) -> str:
    """'name version, name version' of the run set (for Manufacturer's Model Name, LO 64)."""
    text = ", ".join(f"{r.bundle_name} {r.bundle_version}" for r in study.model_results)
    return (text or "medgate")[:64]


def set_body_part(ds: Dataset, source: Dataset) -> None:
    """Body Part Examined and Laterality from the source (General Series, Laterality type 2C).

    dciodvfy wants Laterality absent for an unpaired body part and a value for a paired one; when
    the source says neither, Laterality stays present and empty, meaning "unknown".
    """
    if source.get("BodyPartExamined"):
        ds.BodyPartExamined = source.BodyPartExamined
    if source.get("Laterality"):
        ds.Laterality = source.Laterality
    elif not source.get("BodyPartExamined"):
        ds.Laterality = None
