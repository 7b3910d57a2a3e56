"""``medgate export --deidentify``: from the index and the store to a clean training folder."""

from __future__ import annotations

import json
import re
import subprocess
import warnings
from pathlib import Path

import pydicom
from tests.support.phi_data import PHI_KEYWORDS, phi_values
from tests.support.tools import require_tool
from typer.testing import CliRunner

from medgate.cli.main import app
from medgate.trust.audit import AuditLog
from medgate.trust.export import deidentifier_from_settings, export_deidentified


def write_config(settings, tmp_path: Path, extra: str = "") -> Path:
    config = tmp_path / "medgate.toml"
    config.write_text(
        f'[storage]\npath = "{settings.storage.path}"\nmin_free_mb = 0\n'
        f'[audit]\nhash_key = "{settings.audit.hash_key}"\n{extra}'
    )
    return config


def read_all(files: list[Path]) -> list[pydicom.Dataset]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [pydicom.dcmread(p) for p in files]


def test_export_all_studies(filled_store, tmp_path: Path) -> None:
    settings, store = filled_store(25)
    config = write_config(settings, tmp_path)
    out = tmp_path / "export"
    runner = CliRunner()
    result = runner.invoke(app, ["export", "--deidentify", str(out), "-c", str(config), "-q"])
    manifest = json.loads((out / "manifest.json").read_text())
    assert result.exit_code in (0, 1), result.output
    exported = sorted(out.rglob("*.dcm"))
    assert len(exported) == manifest["exported"] >= 8
    # the burned-in synthetic and the secondary capture without BurnedInAnnotation NO are left out
    assert manifest["excluded"].get("burned-in-annotation") == 1
    assert manifest["excluded"].get("secondary-capture-may-have-burned-in-text", 0) >= 1
    assert [c["code"] for c in manifest["method_codes"]] == ["113100", "113108", "113107", "113105"]
    # no identifying value of any input is anywhere in the output bytes (manifest included)
    blob = b"".join(p.read_bytes() for p in exported) + (out / "manifest.json").read_bytes()
    kept: list[str] = []
    for ds in read_all(exported):
        assert ds.PatientIdentityRemoved == "YES"
        kept += [
            str(e.value)
            for e in ds.iterall()
            if e.VR not in ("SQ", "UI") and e.keyword not in PHI_KEYWORDS and not e.tag.is_private
        ]
    secrets = set().union(*(phi_values(ds) for ds in read_all(store.files)))
    assert len(secrets) >= 100
    leaked = [s for s in secrets if s.encode() in blob and not any(s in k for k in kept)]
    assert not leaked, leaked[:5]
    # the audit trail has one export event (110106) per study, with no identifier in clear
    log = AuditLog(settings.audit_path, settings.audit.hash_key)
    events = [e for e in log.entries() if e["event"] == "export"]
    assert len(events) == len(store.study_uids)
    assert {e["event_code"] for e in events} == {"110106"}
    trail = settings.audit_path.read_bytes()
    assert not [s for s in secrets if s.encode() in trail]
    assert log.verify().ok


def test_export_selected_studies_is_repeatable(filled_store, tmp_path: Path) -> None:
    settings, store = filled_store(4)
    config = write_config(settings, tmp_path)
    synthetic = [uid for uid in store.study_uids if len(store.index.instances.of_study(uid)) == 3]
    assert len(synthetic) == 1
    runner = CliRunner()
    outs = []
    for run in ("a", "b"):
        out = tmp_path / run
        args = ["export", "--deidentify", str(out), "--study", synthetic[0], "-c", str(config)]
        result = runner.invoke(app, [*args, "-q"])
        assert result.exit_code == 0, result.output
        outs.append(sorted(p.relative_to(out) for p in out.rglob("*.dcm")))
    assert outs[0] == outs[1] and len(outs[0]) == 3  # same UIDs, same paths in both runs
    study_folders = {p.parts[0] for p in outs[0]}
    assert len(study_folders) == 1 and next(iter(study_folders)).startswith("2.25.")
    # the second study of the same patient gets the same pseudonym and the same date shift
    everything = tmp_path / "all"
    runner.invoke(app, ["export", "--deidentify", str(everything), "-c", str(config), "-q"])
    synthetic_out = [
        ds
        for ds in read_all(sorted(everything.rglob("*.dcm")))
        if ds.get("Manufacturer") == "ACME Imaging"
    ]
    assert len(synthetic_out) == 4
    assert len({ds.PatientID for ds in synthetic_out}) == 1
    assert len({ds.StudyDate for ds in synthetic_out}) == 1
    assert len({ds.StudyInstanceUID for ds in synthetic_out}) == 2


def test_export_flag_policy_and_bad_input(filled_store, tmp_path: Path) -> None:
    settings, store = filled_store(2)
    config = write_config(settings, tmp_path, '[deid]\nburned_in = "flag"\n')
    Path(store.files[0]).write_bytes(b"not dicom at all")
    out = tmp_path / "out"
    runner = CliRunner()
    result = runner.invoke(app, ["export", "--deidentify", str(out), "-c", str(config), "-q"])
    assert result.exit_code == 1  # one unreadable instance: reported, the rest exported
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["failed"] == {"unreadable": 1}
    assert manifest["flagged"] == 2 and not manifest["excluded"]
    flagged = [i for i in manifest["instances"] if i["risks"]]
    assert {r for i in flagged for r in i["risks"]} == {
        "burned-in-annotation",
        "secondary-capture-may-have-burned-in-text",
    }
    unknown = runner.invoke(
        app, ["export", "--deidentify", str(out), "--study", "1.2.3.404", "-c", str(config)]
    )
    assert unknown.exit_code == 2 and "not in the index" in unknown.output


# ------------------------------------------------------------------ dciodvfy: no new errors

_UID_IN_TEXT = re.compile(r"(UID\s+)[\d.]+")
_VALUE_IN_TEXT = re.compile(r"= <[^>]*>")


def dciodvfy_errors(path: Path) -> tuple[set[str], bool]:
    """dicom3tools' verdict on one file: its error lines with values masked (a de-identified
    value or a remapped UID is not a new error), and whether the file read through at all."""
    done = subprocess.run(
        [require_tool("dciodvfy"), str(path)], capture_output=True, text=True, timeout=120
    )
    lines = (done.stdout + done.stderr).splitlines()
    errors = {
        _UID_IN_TEXT.sub(r"\1<uid>", _VALUE_IN_TEXT.sub("= <>", line))
        for line in lines
        if line.startswith("Error")
    }
    readable = not any("read failed" in line for line in errors)
    return errors, readable


def test_export_adds_no_dciodvfy_error(filled_store, test_files: list[Path], tmp_path: Path):
    """Every exported object is at least as valid as its input (PS3.3 IODs, as dciodvfy checks
    them): de-identification must not break what the object was (an emptied Type 1, a Type 3
    sequence with zero items, an overlay without its data ...)."""
    settings, store = filled_store(len(test_files))
    out = tmp_path / "export"
    report = export_deidentified(settings, out, index=store.index, progress=False)
    deid = deidentifier_from_settings(settings)
    exported = {
        item["sop_instance_uid"]: out / item["file"]
        for item in json.loads(report.manifest.read_text())["instances"]
    }
    compared, unreadable, new_errors = 0, [], {}
    for source in store.files:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sop = str(pydicom.dcmread(source, stop_before_pixels=True).get("SOPInstanceUID", ""))
        target = exported.get(deid.uid(sop)) if sop else None
        if target is None:
            continue  # excluded (burned-in) or not readable by the exporter: see the manifest
        before, readable = dciodvfy_errors(source)
        if not readable:  # a truncated input: dciodvfy stops early, nothing to compare with
            unreadable.append(source.name)
            continue
        after, _ = dciodvfy_errors(target)
        if after - before:
            new_errors[source.name] = sorted(after - before)
        compared += 1
    assert not new_errors, new_errors
    assert compared >= 30, (compared, unreadable)
    assert len(unreadable) <= 3, unreadable
    print(f"\ndciodvfy: {compared} exported objects, no new error; unreadable inputs {unreadable}")
