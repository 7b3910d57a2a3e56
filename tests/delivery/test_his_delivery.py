"""Results reach the site's HIS over MLLP: the right site only, preliminary then final, refusals
dead-lettered, an unreachable HIS waited for, and a kill -9 mid-send losing and doubling nothing."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from tests.support.configs import settings_to_toml
from tests.support.delivery_studies import add_study
from tests.support.his_listener import MllpHis

from medgate.core.config import Settings
from medgate.core.ports import free_port
from medgate.delivery.enqueue import enqueue_final_result, queue_new_results
from medgate.delivery.site_delivery import SiteDelivery
from medgate.store.deliveries import DeliveryStore
from medgate.trust.audit import AuditLog

HERE = Path(__file__).parent


def _status(message: Any) -> str:
    return str(message.oru_r01_patient_result.oru_r01_order_observation.obr.obr_25.to_er7())


def _study_of(message: Any) -> str:
    obr = message.oru_r01_patient_result.oru_r01_order_observation.obr
    return str(obr.obr_3.to_er7()).split("^")[0]


def _passes(sender: SiteDelivery, until: Any, limit: int = 50) -> None:
    for _ in range(limit):
        sender.run_once()
        if until():
            return
        time.sleep(0.06)
    raise AssertionError("the delivery loop did not get there")


def test_site_a_study_reaches_a_his_only_preliminary_then_final(
    sites_settings: Settings,
    engine: sa.engine.Engine,
    audit: AuditLog,
    his_a: MllpHis,
    his_b: MllpHis,
) -> None:
    uid = add_study(engine, sites_settings, calling_ae="CLINIC_A_CT")
    sender = SiteDelivery(sites_settings, engine, audit)
    summary = sender.run_once()
    assert summary.queued_studies == 1 and summary.delivered == 1
    assert his_b.received == []
    [prelim] = his_a.received
    assert _status(prelim.message) == "P" and _study_of(prelim.message) == uid
    store = DeliveryStore(engine)
    assert store.report(uid)["status"] == "preliminary"  # type: ignore[index]
    assert sender.run_once().queued_studies == 0  # taken up once

    # the review (another module) calls the entry point; the final ORU follows
    ids = enqueue_final_result(sites_settings, engine, uid, verified_by="dr-li")
    assert len(ids) == 1 and ids[0] != prelim.control_id
    assert enqueue_final_result(sites_settings, engine, uid, verified_by="dr-li") == []
    assert sender.run_once().delivered == 1
    assert [r.control_id for r in his_a.received] == [prelim.control_id, ids[0]]
    final = his_a.received[1].message
    assert _status(final) == "F"
    observations = final.oru_r01_patient_result.oru_r01_order_observation.oru_r01_observation
    assert {group.obx.obx_11.to_er7() for group in observations} == {"F"}
    assert his_b.received == []
    report = store.report(uid)
    assert report is not None and report["status"] == "final"
    assert report["verified_by"] == "dr-li"
    rows = store.for_study(uid)
    assert [(r["result_status"], r["status"], r["ack_code"]) for r in rows] == [
        ("P", "delivered", "AA"),
        ("F", "delivered", "AA"),
    ]
    events = [json.loads(line) for line in Path(sites_settings.audit_path).read_text().splitlines()]
    assert sum(1 for e in events if "result-sent" in json.dumps(e)) == 2


def test_study_of_no_site_or_without_sites_sends_nothing(
    sites_settings: Settings,
    engine: sa.engine.Engine,
    audit: AuditLog,
    his_a: MllpHis,
    his_b: MllpHis,
) -> None:
    uid = add_study(engine, sites_settings, calling_ae="SOMEONE_ELSE")
    sender = SiteDelivery(sites_settings, engine, audit)
    assert sender.run_once().queued_studies == 1
    unscoped = sites_settings.model_copy(update={"sites": []})
    other = add_study(engine, unscoped, calling_ae="CLINIC_A_CT")
    assert SiteDelivery(unscoped, engine, audit).run_once().queued_studies == 1
    assert his_a.received == [] and his_b.received == []
    store = DeliveryStore(engine)
    assert store.for_study(uid) == [] and store.for_study(other) == []
    assert store.report(other)["status"] == "preliminary"  # type: ignore[index]


def test_refusal_is_retried_then_dead_lettered(
    sites_settings: Settings,
    engine: sa.engine.Engine,
    audit: AuditLog,
    his_a: MllpHis,
) -> None:
    his_a.state.mode = "AR"
    uid = add_study(engine, sites_settings, calling_ae="CLINIC_A_CT")
    sender = SiteDelivery(sites_settings, engine, audit)
    store = DeliveryStore(engine)
    _passes(sender, lambda: store.for_study(uid)[0]["status"] == "dead-letter")
    [row] = store.for_study(uid)
    assert row["ack_code"] == "AR" and row["refusals"] == sites_settings.delivery.hl7.max_attempts
    assert "AR" in row["last_error"]
    copies = his_a.received
    assert len(copies) == sites_settings.delivery.hl7.max_attempts
    assert len({c.control_id for c in copies}) == 1 and len({c.er7 for c in copies}) == 1
    sender.run_once()
    assert len(his_a.received) == len(copies)  # a dead letter is never sent again
    audit_text = Path(sites_settings.audit_path).read_text()
    assert "result-dead-lettered" in audit_text


def test_a_message_whose_his_is_no_longer_configured_is_dead_lettered_unsent(
    sites_settings: Settings, engine: sa.engine.Engine, audit: AuditLog, his_a: MllpHis
) -> None:
    uid = add_study(engine, sites_settings, calling_ae="CLINIC_A_CT")
    store = DeliveryStore(engine)
    assert queue_new_results(sites_settings, store) == 1
    sites = [
        site.model_copy(update={"hl7": None}) if site.name == "clinic-a" else site
        for site in sites_settings.sites
    ]
    summary = SiteDelivery(
        sites_settings.model_copy(update={"sites": sites}), engine, audit
    ).run_once()
    assert summary.dead == 1 and summary.delivered == summary.retried == 0
    [row] = store.for_study(uid)
    assert row["status"] == "dead-letter"
    assert row["last_error"] == "the site or its HIS is no longer configured"
    assert his_a.received == []


def test_application_error_is_retried_and_then_accepted(
    sites_settings: Settings, engine: sa.engine.Engine, audit: AuditLog, his_a: MllpHis
) -> None:
    his_a.state.mode = "AE"
    uid = add_study(engine, sites_settings, calling_ae="CLINIC_A_CT")
    sender = SiteDelivery(sites_settings, engine, audit)
    sender.run_once()
    store = DeliveryStore(engine)
    [row] = store.for_study(uid)
    assert row["status"] == "pending" and row["ack_code"] == "AE" and row["refusals"] == 1
    his_a.state.mode = "AA"
    _passes(sender, lambda: store.for_study(uid)[0]["status"] == "delivered")
    assert len(his_a.unique()) == 1


def test_unreachable_or_dying_his_is_waited_for_not_dead_lettered(
    sites_settings: Settings, engine: sa.engine.Engine, audit: AuditLog, his_a: MllpHis
) -> None:
    closed = free_port()
    site = sites_settings.sites[0]
    away = sites_settings.model_copy(
        update={
            "sites": [
                site.model_copy(update={"hl7": site.hl7.model_copy(update={"port": closed})}),  # type: ignore[union-attr]
                sites_settings.sites[1],
            ]
        }
    )
    uid = add_study(engine, away, calling_ae="CLINIC_A_CT")
    sender = SiteDelivery(away, engine, audit)
    store = DeliveryStore(engine)
    for _ in range(away.delivery.hl7.max_attempts + 2):
        sender.run_once()
        time.sleep(0.06)
    [row] = store.for_study(uid)
    assert row["status"] == "pending" and row["refusals"] == 0
    assert row["attempts"] >= away.delivery.hl7.max_attempts + 1
    assert "cannot be reached" in row["last_error"]

    his_a.state.mode = "die"  # the HIS takes the message and drops the connection
    sender = SiteDelivery(sites_settings, engine, audit)
    for _ in range(away.delivery.hl7.max_attempts + 1):
        sender.run_once()
        time.sleep(0.06)
    [row] = store.for_study(uid)
    assert row["status"] == "pending" and row["refusals"] == 0
    assert "without an ACK" in row["last_error"]
    his_a.state.mode = "AA"
    _passes(sender, lambda: store.for_study(uid)[0]["status"] == "delivered")


def _start_sender(config: Path, log: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    with open(log, "ab") as out:
        process = subprocess.Popen(
            [sys.executable, str(HERE / "sender_process.py"), str(config)],
            stdout=subprocess.PIPE,
            stderr=out,
            env=env,
        )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == b"ready", log.read_text()
    return process


def _wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_kill_9_mid_send_loses_nothing_and_files_each_message_once(
    sites_settings: Settings, engine: sa.engine.Engine, his_a: MllpHis, tmp_path: Path
) -> None:
    settings = sites_settings.model_copy(
        update={
            "delivery": sites_settings.delivery.model_copy(
                update={
                    "hl7": sites_settings.delivery.hl7.model_copy(
                        update={"lease_seconds": 2.0, "poll_seconds": 0.2, "ack_timeout_s": 60}
                    )
                }
            )
        }
    )
    config = tmp_path / "sender.toml"
    config.write_text(settings_to_toml(settings))
    first, second = (add_study(engine, settings, calling_ae="CLINIC_A_CT") for _ in range(2))
    store = DeliveryStore(engine)

    his_a.state.mode = "hold"  # the HIS keeps the first message and never answers it
    process = _start_sender(config, tmp_path / "sender1.log")
    try:
        _wait(lambda: len(his_a.received) == 1, 60, "the first message at the HIS")
        os.kill(process.pid, signal.SIGKILL)  # medgate dies while waiting for the ACK
        process.wait(30)
    finally:
        if process.poll() is None:
            process.kill()
    in_flight = his_a.received[0]
    rows = store.entries()
    assert len(rows) == 2 and {r["status"] for r in rows} == {"pending"}
    his_a.state.mode = "AA"
    his_a.state.release.set()

    process = _start_sender(config, tmp_path / "sender2.log")
    try:
        _wait(lambda: {r["status"] for r in store.entries()} == {"delivered"}, 60, "both delivered")
        ids = enqueue_final_result(settings, engine, first, verified_by="dr-wu")
        _wait(lambda: len(store.entries(status="delivered")) == 3, 60, "the final result")
    finally:
        process.kill()
        process.wait(30)

    rows = store.entries()
    expected = {r["message_id"] for r in rows}
    assert len(rows) == 3 and set(ids) <= expected
    filed = his_a.unique()  # what the HIS keeps: one message per control ID
    assert set(filed) == expected
    statuses = sorted((_study_of(r.message), _status(r.message)) for r in filed.values())
    assert statuses == sorted([(first, "P"), (second, "P"), (first, "F")])
    # the message in flight at the kill was sent again byte for byte, under the same ID;
    # nothing else was sent twice
    repeats = [r for r in his_a.received if r.control_id == in_flight.control_id]
    assert len(repeats) == 2 and repeats[0].er7 == repeats[1].er7
    assert len(his_a.received) == len(expected) + 1


def test_no_patient_identifier_in_logs_or_audit(
    sites_settings: Settings,
    engine: sa.engine.Engine,
    audit: AuditLog,
    his_a: MllpHis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    his_a.state.mode = "AR"
    his_a.state.nak_text = "unknown patient PID-0001 Wang Fang"  # the HIS names the patient
    caplog.set_level(logging.DEBUG, logger="medgate")
    uid = add_study(engine, sites_settings, calling_ae="CLINIC_A_CT")
    sender = SiteDelivery(sites_settings, engine, audit)
    store = DeliveryStore(engine)
    _passes(sender, lambda: store.for_study(uid)[0]["status"] == "dead-letter")
    enqueue_final_result(sites_settings, engine, uid)
    [row, _] = store.for_study(uid)
    assert "PID-0001" in row["last_error"]  # kept for the operator, in the database
    logged = caplog.text + Path(sites_settings.audit_path).read_text()
    assert "dead-lettered" in caplog.text
    for identifier in ("PID-0001", "Wang", "王", "ACC-7", uid):
        assert identifier not in logged, identifier
