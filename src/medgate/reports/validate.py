"""Checks a result object must pass before it is queued for the PACS.

``check_object`` runs in memory on every build: the object is encoded as a Part 10 file, read
back, and compared with what it must be (same study and patient as the sources, decodable
pixels, an SR that highdicom parses back as a TID 1500 report). ``dciodvfy`` runs dicom3tools'
IOD validator on one object; the tests and ``medgate``'s diagnostics use it, the hot path does
not depend on an external program.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
from pydicom import Dataset, dcmread

from medgate.reports.errors import ReportError


def encode(ds: Dataset) -> bytes:
    """The object as Part 10 bytes (what the outbox stores and the sender sends)."""
    buffer = io.BytesIO()
    try:
        ds.save_as(buffer, enforce_file_format=True)
    except Exception as exc:  # pydicom raises ValueError/TypeError/LookupError on bad values
        raise ReportError(f"cannot encode {ds.get('SOPClassUID', '?')}: {exc}") from exc
    return buffer.getvalue()


def check_object(kind: str, ds: Dataset, study_uid: str, patient_id: str | None) -> Dataset:
    """Round-trip ``ds`` through Part 10 bytes and check it; returns the decoded copy."""
    data = encode(ds)
    try:
        back = dcmread(io.BytesIO(data))
    except Exception as exc:
        raise ReportError(f"{kind}: written object cannot be read back: {exc}") from exc
    for keyword in ("SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID"):
        if back.get(keyword) != ds.get(keyword) or not back.get(keyword):
            raise ReportError(f"{kind}: {keyword} lost or changed on encoding")
    if back.StudyInstanceUID != study_uid:
        raise ReportError(f"{kind}: object is not in the source study")
    if patient_id is not None and back.get("PatientID") != patient_id:
        raise ReportError(f"{kind}: PatientID differs from the source study")
    if kind in ("seg", "overlay", "summary"):
        try:
            pixels = back.pixel_array
        except Exception as exc:
            raise ReportError(f"{kind}: pixel data does not decode: {exc}") from exc
        if pixels.size == 0:
            raise ReportError(f"{kind}: empty pixel data")
    if kind == "sr":
        try:
            sr = hd.sr.srread(io.BytesIO(data))
            report = sr.content
        except Exception as exc:
            raise ReportError(f"sr: highdicom cannot parse the SR back: {exc}") from exc
        if not isinstance(report, hd.sr.MeasurementReport):
            raise ReportError("sr: content is not a TID 1500 Measurement Report")
    return back


@dataclass
class ValidatorVerdict:
    """An external validator's verdict on one object: error and warning lines, full output."""

    errors: list[str]
    warnings: list[str]
    output: str

    @classmethod
    def from_output(cls, output: str) -> ValidatorVerdict:
        lines = [line.strip() for line in output.splitlines() if line.strip()]
        return cls(
            errors=[line for line in lines if line.startswith("Error")],
            warnings=[line for line in lines if line.startswith("Warning")],
            output=output,
        )


def _run_on_file(
    ds: Dataset | bytes, command: list[str], timeout: float
) -> subprocess.CompletedProcess[str]:
    """Run ``command`` with the object written to a temporary file as its last argument (the
    validators read files, not standard input)."""
    data = ds if isinstance(ds, bytes) else encode(ds)
    with tempfile.TemporaryDirectory(prefix="medgate-validate-") as tmp:
        path = Path(tmp) / "object.dcm"
        path.write_bytes(data)
        return subprocess.run(
            [*command, str(path)], capture_output=True, text=True, timeout=timeout
        )


def dciodvfy(ds: Dataset | bytes, timeout: float = 60.0) -> ValidatorVerdict:
    """Run dicom3tools' ``dciodvfy`` on an object; ReportError if it is not installed."""
    binary = shutil.which("dciodvfy")
    if binary is None:
        raise ReportError("dciodvfy is not installed (apt-get install dicom3tools)")
    proc = _run_on_file(ds, [binary, "-new"], timeout)
    return ValidatorVerdict.from_output(proc.stdout + proc.stderr)


#: PixelMed's jar (Debian ``pixelmed-apps``/``libpixelmed-java``) and its SR validator class.
PIXELMED_JAR = Path("/usr/share/java/pixelmed.jar")
PIXELMED_SR_VALIDATOR = "com.pixelmed.validate.DicomSRValidator"
#: Java's XPath limits (JDK 17+) stop the validator's compiled templates on a full TID 1500.
_JAVA_XPATH_UNLIMITED = (
    "-Djdk.xml.xpathExprOpLimit=0",
    "-Djdk.xml.xpathExprGrpLimit=0",
    "-Djdk.xml.xpathTotalOpLimit=0",
)


def dicom_sr_validator(ds: Dataset | bytes, timeout: float = 180.0) -> ValidatorVerdict:
    """Run PixelMed's DicomSRValidator (IOD and template checks) on an SR; ReportError when
    java or the PixelMed jar is missing."""
    java = shutil.which("java")
    if java is None or not PIXELMED_JAR.exists():
        raise ReportError("PixelMed's DicomSRValidator needs java and pixelmed-apps installed")
    command = [java, *_JAVA_XPATH_UNLIMITED, "-cp", str(PIXELMED_JAR), PIXELMED_SR_VALIDATOR]
    proc = _run_on_file(ds, command, timeout)
    verdict = ValidatorVerdict.from_output(proc.stdout + proc.stderr)
    if proc.returncode != 0 or "validation complete" not in verdict.output:
        raise ReportError(
            f"DicomSRValidator did not finish (exit {proc.returncode}): {verdict.output}"
        )
    return verdict
