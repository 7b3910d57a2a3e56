"""The audit trail: tampering of every kind is detected and the bad entry is named."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medgate.cli.main import app
from medgate.trust.audit import EVENT_TYPES, AuditLog, anchor_path

KEY = "test-key"
STUDY = "1.2.826.0.1.3680043.8.498.11122233344455566677"


def fill(path: Path, n: int = 12, key: str | None = KEY) -> AuditLog:
    log = AuditLog(path, key)
    events = ["instance-received", "study-queued", "model-run", "result-created", "result-sent"]
    for i in range(n):
        log.record(
            events[i % len(events)],
            actor="ORTHANC",
            study_uid=STUDY if i % 2 == 0 else f"{STUDY}.{i}",
            sop_instance_uid=f"{STUDY}.1.{i}",
            details={"n": i, "status": "0x0000"},
        )
    return log


def lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


@pytest.fixture
def log(tmp_path: Path) -> AuditLog:
    return fill(tmp_path / "audit.jsonl")


def test_intact_log_verifies(log: AuditLog) -> None:
    result = log.verify()
    assert result.ok, result.reason
    assert result.entries == 12
    seqs = [e["seq"] for e in log.entries()]
    assert seqs == list(range(1, 13))


@pytest.mark.parametrize("line_no", [1, 5, 12])
@pytest.mark.parametrize("keyed", [True, False])
def test_one_flipped_byte_is_named(tmp_path: Path, line_no: int, keyed: bool) -> None:
    log = fill(tmp_path / "audit.jsonl", key=KEY if keyed else None)
    data = bytearray(log.path.read_bytes())
    start = sum(len(x) for x in lines(log.path)[: line_no - 1])
    # flip one byte inside the value of "outcome" (stays valid JSON: the hardest case)
    offset = data.index(b'"success"', start) + 2
    data[offset] ^= 0x01
    log.path.write_bytes(bytes(data))
    result = log.verify()
    assert not result.ok
    assert result.first_bad_line == line_no, result.reason


def test_any_single_byte_change_fails(tmp_path: Path) -> None:
    log = fill(tmp_path / "audit.jsonl", n=4)
    original = log.path.read_bytes()
    for offset in range(0, len(original), 7):
        data = bytearray(original)
        data[offset] = (data[offset] + 1) % 256
        log.path.write_bytes(bytes(data))
        result = log.verify()
        assert not result.ok, f"change at byte {offset} went unnoticed"
        line_of = original[:offset].count(b"\n") + 1
        assert result.first_bad_line in (line_of, line_of + 1), (offset, result)


def test_deleted_entry_is_named(log: AuditLog) -> None:
    body = lines(log.path)
    del body[4]  # entry 5
    log.path.write_bytes(b"".join(body))
    result = log.verify()
    assert not result.ok and result.first_bad_line == 5
    assert "deleted" in (result.reason or "")


def test_inserted_copy_is_named(log: AuditLog) -> None:
    body = lines(log.path)
    body.insert(7, body[2])  # a genuine entry replayed at line 8
    log.path.write_bytes(b"".join(body))
    result = log.verify()
    assert not result.ok and result.first_bad_line == 8


def test_forged_entry_with_recomputed_chain_is_named(log: AuditLog, tmp_path: Path) -> None:
    """Someone without the key rewrites the tail with a valid SHA-256 chain: the MAC catches it."""
    body = lines(log.path)
    forger = AuditLog(tmp_path / "forged.jsonl", "not-the-key")
    forged_path = forger.path
    forged_path.write_bytes(b"".join(body[:6]))
    anchor_path(forged_path).unlink(missing_ok=True)
    forger.record("export", study_uid=STUDY, details={"instances": 999})
    log.path.write_bytes(forged_path.read_bytes())
    result = log.verify()
    assert not result.ok and result.first_bad_line == 7
    assert "MAC" in (result.reason or "")


def test_reordered_entries_are_named(log: AuditLog) -> None:
    body = lines(log.path)
    body[3], body[4] = body[4], body[3]
    log.path.write_bytes(b"".join(body))
    result = log.verify()
    assert not result.ok and result.first_bad_line == 4


def test_truncated_tail_is_detected_by_the_anchor(log: AuditLog) -> None:
    body = lines(log.path)
    log.path.write_bytes(b"".join(body[:9]))
    result = log.verify()
    assert not result.ok and result.first_bad_line == 10
    assert "truncated" in (result.reason or "")


def test_deleted_anchor_and_forged_anchor_fail(log: AuditLog) -> None:
    anchor = anchor_path(log.path)
    saved = anchor.read_bytes()
    data = json.loads(saved)
    data["count"] = 9
    anchor.write_text(json.dumps(data))
    assert not log.verify().ok
    anchor.unlink()
    result = log.verify()
    assert not result.ok and "anchor" in (result.reason or "")
    anchor.write_bytes(saved)
    assert log.verify().ok


def test_half_written_last_line_is_named_and_appends_continue(log: AuditLog) -> None:
    with open(log.path, "ab") as handle:
        handle.write(b'{"event": "instance-rec')  # a crash in the middle of an append
    result = log.verify()
    assert not result.ok and result.first_bad_line == 13
    log.record("application-start")
    result = log.verify()
    assert not result.ok and result.first_bad_line == 13  # the damage stays visible


def test_concurrent_writers_keep_one_chain(tmp_path: Path) -> None:
    """Several processes append at once: the file lock keeps one unbroken chain."""
    path = tmp_path / "audit.jsonl"
    script = (
        "import sys; from medgate.trust.audit import AuditLog\n"
        f"log = AuditLog(sys.argv[1], {KEY!r})\n"
        "for i in range(40): log.record('model-run', study_uid='1.2.3', details={'i': i})\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", script, str(path)]) for _ in range(3)]
    assert all(p.wait(60) == 0 for p in procs)
    result = AuditLog(path, KEY).verify()
    assert result.ok, result.reason
    assert result.entries == 120


def test_event_codes_are_cid_400() -> None:
    """Every code used is a PS3.16 CID 400 audit event ID with its exact meaning."""
    cid_400 = {
        "110100": "Application Activity",
        "110101": "Audit Log Used",
        "110102": "Begin Transferring DICOM Instances",
        "110103": "DICOM Instances Accessed",
        "110104": "DICOM Instances Transferred",
        "110105": "DICOM Study Deleted",
        "110106": "Export",
        "110107": "Import",
        "110108": "Network Entry",
        "110109": "Order Record",
        "110110": "Patient Record",
        "110111": "Procedure Record",
        "110112": "Query",
        "110113": "Security Alert",
        "110114": "User Authentication",
    }
    for event, (code, meaning, action) in EVENT_TYPES.items():
        assert action in ("C", "R", "U", "D", "E"), event
        if code:
            assert cid_400[code] == meaning, event
    assert EVENT_TYPES["export"][0] == "110106"
    assert EVENT_TYPES["instance-received"][:1] == ("110104",)
    assert EVENT_TYPES["audit-log-used"][0] == "110101"


def test_identifiers_only_as_keyed_hashes(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl", KEY)
    entry = log.record(
        "instance-received",
        study_uid=STUDY,
        sop_instance_uid=STUDY + ".7",
        details={"patient_id": "MRN-0045817", "series": STUDY + ".3", "count": 3, "modality": "CT"},
    )
    text = log.path.read_text()
    for secret in (STUDY, "MRN-0045817"):
        assert secret not in text
    assert entry["details"]["count"] == 3 and entry["details"]["modality"] == "CT"
    assert entry["study"].startswith("h:") and entry["details"]["series"].startswith("h:")
    assert AuditLog(tmp_path / "audit.jsonl", "other-key").trace(STUDY) == []
    assert len(log.trace(STUDY)) == 1


# ------------------------------------------------------------------ the CLI


def test_cli_verify_and_trace(settings_factory: Callable, tmp_path: Path) -> None:
    settings = settings_factory()
    config = tmp_path / "medgate.toml"
    config.write_text(f'[storage]\npath = "{settings.storage.path}"\n[audit]\nhash_key = "{KEY}"\n')
    log = AuditLog(settings.audit_path, KEY)
    story = [
        "instance-received",
        "study-queued",
        "model-run",
        "result-created",
        "result-sent",
        "result-confirmed",
    ]
    for event in story:
        log.record(event, study_uid=STUDY, details={"step": event})
    log.record("instance-received", study_uid=STUDY + ".99")
    runner = CliRunner()
    ok = runner.invoke(app, ["audit", "verify", "--config", str(config)])
    assert ok.exit_code == 0, ok.output
    assert "OK: 7 entries" in ok.output
    trace = runner.invoke(app, ["audit", "trace", "--study", STUDY, "--config", str(config)])
    assert trace.exit_code == 0, trace.output
    positions = [trace.output.find(event) for event in story]
    assert all(p >= 0 for p in positions) and positions == sorted(positions)
    assert "110104" in trace.output
    assert STUDY not in log.path.read_text()
    # verify and trace were themselves audited (110101), and the chain still holds
    assert [e["event"] for e in log.entries()][-2:] == ["audit-log-used", "audit-log-used"]
    body = lines(log.path)
    body[2] = body[2].replace(b"model-run", b"model-ran")
    log.path.write_bytes(b"".join(body))
    bad = subprocess.run(
        [sys.executable, "-m", "medgate.cli.main", "audit", "verify", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 1
    assert "line 3" in bad.stderr
