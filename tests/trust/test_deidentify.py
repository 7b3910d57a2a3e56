"""De-identification follows PS3.15 Table E.1-1, attribute by attribute, and leaks nothing."""

from __future__ import annotations

import datetime as dt
import io
import json
import re
import warnings
from collections import Counter
from importlib import resources
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom import Dataset
from tests.support.phi_data import PHI_KEYWORDS, SYNTHETIC_PHI, phi_values, synthetic_dataset

from medgate.trust.deidentify import Deidentifier, DeidOptions, PrivateKeep, load_table

KEY = "deid-test-key"
UID_RE = re.compile(r"^2\.25\.(0|[1-9][0-9]*)$")


def read(path: Path) -> Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(path)


def table_rows() -> dict[int, dict[str, str]]:
    """Table E.1-1 read straight from the packaged file (independently of the implementation)."""
    text = resources.files("medgate.trust").joinpath("annex_e_table.json").read_text()
    rows = {}
    for row in json.loads(text)["rows"]:
        tag = row["tag"].replace(",", "")
        if "x" not in tag:
            rows[int(tag, 16)] = row
    return rows


TABLE = table_rows()
DEFAULT_COLUMNS = ("retain_patient_characteristics", "retain_modified_dates", "clean_descriptors")


def expected_action(tag: int, columns: tuple[str, ...]) -> str | None:
    row = TABLE.get(tag)
    if row is None:
        if (tag >> 16) & 0xFF00 == 0x6000 and (tag & 0xFFFF) in (0x3000, 0x4000):
            return "X"
        if (tag >> 16) & 0xFF00 == 0x5000:
            return "X"
        return None
    chosen = [row[c] for c in columns if c in row]
    if "K" in chosen:
        return "K"
    if "C" in chosen:
        return "C"
    return row["basic"]


def to_bytes(ds: Dataset) -> bytes:
    """Part 10 bytes; data sets whose source lacked the required meta are written as they are."""
    buffer = io.BytesIO()
    try:
        ds.save_as(buffer, enforce_file_format=True)
    except AttributeError:
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=False)
    return buffer.getvalue()


def is_empty(value: Any) -> bool:
    return (
        value is None
        or value == ""
        or value == b""
        or (hasattr(value, "__len__") and len(value) == 0)
    )


class ProfileChecker:
    """Walks an input and its de-identified output side by side, checking every table row."""

    def __init__(self, deid: Deidentifier, columns: tuple[str, ...]) -> None:
        self.deid = deid
        self.columns = columns
        self.covered: Counter[str] = Counter()
        self.tags: set[int] = set()
        self.shifts: set[int] = set()

    def check(self, inp: Dataset, out: Dataset, where: str = "") -> None:
        for elem in inp:
            tag = int(elem.tag)
            label = f"{where}{elem.keyword or elem.tag}"
            if elem.tag.is_private:
                assert elem.tag not in out, f"private {label} kept"
                continue
            action = expected_action(tag, self.columns)
            present = elem.tag in out
            if action is None:
                if elem.VR == "SQ" and present:
                    self.items(elem, out[elem.tag], label)
                continue
            self.covered[action] += 1
            self.tags.add(tag)
            got = out[elem.tag].value if present else None
            original = elem.value
            if action == "X":
                assert not present, f"{label}: X but present"
            elif action == "K":
                assert present and str(got) == str(original), f"{label}: K but changed"
            elif action == "Z":
                assert present and is_empty(got), f"{label}: Z but {got!r}"
            elif action == "U":
                self.uids(label, original, got)
            elif action == "C":
                assert present, f"{label}: C but removed"
                self.clean(elem, out[elem.tag], label)
            elif action in ("D", "Z/D", "X/D", "X/Z", "X/Z/D", "X/Z/U*"):
                allowed = set(action.split("/"))
                if not present:
                    assert "X" in allowed, f"{label}: {action} but removed"
                elif elem.VR == "SQ":
                    if len(got) == 0:
                        assert allowed & {"Z", "X"} or not original, f"{label}: emptied"
                    else:
                        self.items(elem, out[elem.tag], label)
                elif is_empty(got):
                    assert "Z" in allowed or is_empty(original), f"{label}: {action} but empty"
                elif elem.VR == "UI":
                    self.uids(label, original, got)
                else:
                    assert "D" in allowed, f"{label}: {action} but a value"
                    if not is_empty(original):
                        assert str(got) != str(original), f"{label}: dummy equals original"
            else:
                raise AssertionError(f"unknown action {action}")

    def items(self, inp_elem: Any, out_elem: Any, label: str) -> None:
        assert len(out_elem.value) == len(inp_elem.value), f"{label}: items lost"
        for n, (a, b) in enumerate(zip(inp_elem.value, out_elem.value, strict=True)):
            self.check(a, b, f"{label}[{n}].")

    def uids(self, label: str, original: Any, got: Any) -> None:
        originals = original if not isinstance(original, str) else [original]
        gots = got if not isinstance(got, str) else [got]
        assert len(originals) == len(gots), label
        for before, after in zip(originals, gots, strict=True):
            if not str(before).strip():
                continue
            assert UID_RE.match(str(after)) and len(str(after)) <= 64, f"{label}: bad UID {after}"
            assert str(after) == self.deid.uid(str(before)), f"{label}: UID not keyed"

    def clean(self, inp_elem: Any, out_elem: Any, label: str) -> None:
        before, after = inp_elem.value, out_elem.value
        if inp_elem.VR == "SQ":
            self.items(inp_elem, out_elem, label)
        elif inp_elem.VR in ("DA", "DT") and not is_empty(before):
            try:
                old = dt.datetime.strptime(str(before).strip()[:8], "%Y%m%d").date()
            except ValueError:
                assert is_empty(after), f"{label}: unparseable date kept"
                return
            new = dt.datetime.strptime(str(after)[:8], "%Y%m%d").date()
            self.shifts.add((old - new).days)
            assert str(after)[8:] == str(before).strip()[8:], f"{label}: time part changed"


def deidentify_all(deid: Deidentifier, datasets: list[Dataset]) -> list[tuple[Dataset, Dataset]]:
    return [(ds, deid.deidentify(ds).dataset) for ds in datasets]


@pytest.fixture(scope="module")
def inputs(test_files: list[Path]) -> list[Dataset]:
    return [read(p) for p in test_files] + [
        synthetic_dataset(),
        synthetic_dataset(burned_in="YES"),
        synthetic_dataset("1.2.840.10008.5.1.4.1.1.7", burned_in=None),
    ]


def test_table_is_complete_and_well_formed() -> None:
    table = load_table()
    actions = {"D", "Z", "X", "K", "C", "U", "Z/D", "X/Z", "X/D", "X/Z/D", "X/Z/U*"}
    assert len(TABLE) >= 600
    for rule in table:
        assert rule.basic in actions, rule
        assert set(rule.options.values()) <= {"K", "C"}, rule
    kw = {r["keyword"]: r for r in TABLE.values()}
    # spot checks against the standard's wording
    assert kw["PatientName"]["basic"] == "Z" and kw["PatientID"]["basic"] == "Z/D"
    assert kw["StudyInstanceUID"]["basic"] == "U" and kw["AccessionNumber"]["basic"] == "Z"
    assert kw["InstitutionName"]["basic"] == "X/Z/D"
    assert kw["StudyDate"]["retain_modified_dates"] == "C"
    assert kw["PatientAge"]["retain_patient_characteristics"] == "K"
    assert kw["SeriesDescription"]["clean_descriptors"] == "C"
    assert table.meta["option_codes"]["retain_modified_dates"] == "113107"


@pytest.mark.parametrize(
    "columns",
    [DEFAULT_COLUMNS, ()],
    ids=["training-defaults", "basic-only"],
)
def test_every_table_attribute_is_handled_per_profile(
    inputs: list[Dataset], columns: tuple[str, ...]
) -> None:
    options = DeidOptions(
        retain_patient_characteristics="retain_patient_characteristics" in columns,
        retain_modified_dates="retain_modified_dates" in columns,
        clean_descriptors="clean_descriptors" in columns,
    )
    deid = Deidentifier(KEY, options)
    checker = ProfileChecker(deid, columns)
    for before, after in deidentify_all(deid, inputs):
        checker.check(before, after)
        assert after.PatientIdentityRemoved == "YES"
        codes = [item.CodeValue for item in after.DeidentificationMethodCodeSequence]
        assert codes[0] == "113100"
        assert ("113107" in codes) == ("retain_modified_dates" in columns)
        assert ("113108" in codes) == ("retain_patient_characteristics" in columns)
        assert ("113105" in codes) == ("clean_descriptors" in columns)
        assert after.LongitudinalTemporalInformationModified == (
            "MODIFIED" if "retain_modified_dates" in columns else "REMOVED"
        )
    # the inputs exercise a broad part of the table and every kind of action
    assert len(checker.tags) >= 60, sorted(checker.tags)
    assert {"X", "Z", "U"} <= set(checker.covered), checker.covered
    if columns:
        assert {"K", "C"} <= set(checker.covered)
        assert checker.shifts and all(1 <= s <= 3650 for s in checker.shifts)


def test_no_phi_value_survives_in_the_bytes(inputs: list[Dataset]) -> None:
    deid = Deidentifier(KEY)
    checked = 0
    for before, after in deidentify_all(deid, inputs):
        secrets = phi_values(before)
        data = to_bytes(after)
        # a secret that is part of a legitimately kept public value (InstitutionName "TOSHIBA"
        # inside Manufacturer "TOSHIBA_MEC") can only be checked by its own element, which the
        # table-driven test does
        kept = [
            str(e.value)
            for e in after.iterall()
            if e.VR not in ("SQ", "UI") and e.keyword not in PHI_KEYWORDS and not e.tag.is_private
        ]
        for secret in secrets:
            if any(secret in value for value in kept):
                continue
            for encoded in {secret.encode("utf-8"), secret.encode("latin-1", "ignore")}:
                assert encoded not in data, f"{secret!r} survived"
            checked += 1
    assert checked >= 300
    synthetic = synthetic_dataset()
    after = deid.deidentify(synthetic).dataset
    buffer = io.BytesIO()
    after.save_as(buffer, enforce_file_format=True)
    for value in SYNTHETIC_PHI.values():
        assert value.encode() not in buffer.getvalue(), value
    assert "Zhang" not in str(after.get("StudyDescription", ""))
    assert str(after.StudyDescription).startswith("Chest PA for")  # cleaned, not dropped


def test_patient_characteristics_and_dates_per_patient() -> None:
    deid = Deidentifier(KEY)
    a = deid.deidentify(synthetic_dataset(patient_id="P-1")).dataset
    b = deid.deidentify(synthetic_dataset(patient_id="P-1")).dataset
    c = deid.deidentify(synthetic_dataset(patient_id="P-2")).dataset
    assert (a.PatientAge, a.PatientSex, str(a.PatientWeight)) == ("063Y", "F", "58.5")
    assert a.StudyDate == b.StudyDate != "20240615"
    assert a.PatientID == b.PatientID != c.PatientID
    assert a.StudyTime == "093000"  # whole-day shifts keep the time of day
    assert a.AcquisitionDateTime[8:] == "093012.123456+0800"
    assert a.AcquisitionDateTime[:8] == a.StudyDate


def test_uids_consistent_across_runs_and_studies() -> None:
    first = synthetic_dataset()
    second = synthetic_dataset()
    source = Dataset()
    source.ReferencedSOPClassUID = first.SOPClassUID
    source.ReferencedSOPInstanceUID = first.SOPInstanceUID
    second.SourceImageSequence = [source]  # X/Z/U*: references keep pointing at the new UIDs
    run1 = Deidentifier(KEY)
    run2 = Deidentifier(KEY)  # a second run: a new object, same key
    out1 = run1.deidentify(first).dataset
    out2 = run2.deidentify(second).dataset
    again = run2.deidentify(first).dataset
    assert out1.SOPInstanceUID == again.SOPInstanceUID
    assert out1.StudyInstanceUID == again.StudyInstanceUID
    assert out2.SourceImageSequence[0].ReferencedSOPInstanceUID == out1.SOPInstanceUID
    assert out2.SourceImageSequence[0].ReferencedSOPClassUID == first.SOPClassUID
    assert out1.RequestAttributesSequence[0].StudyInstanceUID == out1.StudyInstanceUID
    assert out1.file_meta.MediaStorageSOPInstanceUID == out1.SOPInstanceUID
    assert out1.SOPClassUID == first.SOPClassUID  # well-known UIDs stay
    other = Deidentifier("another-key").deidentify(first).dataset
    assert other.SOPInstanceUID != out1.SOPInstanceUID
    for uid in (out1.SOPInstanceUID, out1.StudyInstanceUID, out1.SeriesInstanceUID):
        assert UID_RE.match(uid) and len(uid) <= 64


def test_private_elements_removed_unless_whitelisted() -> None:
    ds = synthetic_dataset()
    plain = Deidentifier(KEY).deidentify(ds).dataset
    assert not [e for e in plain if e.tag.is_private]
    keep = DeidOptions(private_whitelist=(PrivateKeep.parse("0041,xx11:ACME PHI STORE"),))
    kept = Deidentifier(KEY, keep).deidentify(ds).dataset
    block = kept.private_block(0x0041, "ACME PHI STORE")
    assert block[0x11].value == "kept private value"
    assert block.get_tag(0x10) not in kept
    with pytest.raises(ValueError, match="gggg,xxee"):
        PrivateKeep.parse("0041:ACME")


def test_burned_in_risks_are_reported() -> None:
    deid = Deidentifier(KEY)
    assert deid.deidentify(synthetic_dataset()).risks == []
    assert deid.deidentify(synthetic_dataset(burned_in="YES")).risks == ["burned-in-annotation"]
    sc = synthetic_dataset("1.2.840.10008.5.1.4.1.1.7", burned_in=None)
    assert deid.deidentify(sc).risks == ["secondary-capture-may-have-burned-in-text"]
    sc_no = synthetic_dataset("1.2.840.10008.5.1.4.1.1.7", burned_in="NO")
    assert deid.deidentify(sc_no).risks == []


def test_input_is_not_modified() -> None:
    ds = synthetic_dataset()
    before = ds.to_json()
    Deidentifier(KEY).deidentify(ds)
    assert ds.to_json() == before


def test_key_is_required() -> None:
    with pytest.raises(ValueError, match="key"):
        Deidentifier("")
