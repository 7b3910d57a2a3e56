"""The delivery queue on SQLite and PostgreSQL: two senders sharing one database send each
message once; a final result waits behind its preliminary; queueing twice adds nothing."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from tests.support.delivery_studies import add_study
from tests.support.his_listener import MllpHis

from medgate.core.config import Settings
from medgate.delivery.enqueue import (
    enqueue_final_result,
    queue_new_results,
    queue_reviewed_results,
)
from medgate.delivery.site_delivery import SiteDelivery
from medgate.store.deliveries import DeliveryStore
from medgate.store.migrations import upgrade
from medgate.store.schema import reviews
from medgate.trust.audit import AuditLog


@pytest.fixture
def shared(database_url: str) -> Iterator[sa.engine.Engine]:
    engine = sa.create_engine(database_url)
    upgrade(engine)
    yield engine
    engine.dispose()


def test_two_senders_on_one_database_send_each_message_once(
    sites_settings: Settings, shared: sa.engine.Engine, audit: AuditLog, his_a: MllpHis
) -> None:
    uids = [add_study(shared, sites_settings, calling_ae="CLINIC_A_CT") for _ in range(6)]
    assert queue_new_results(sites_settings, DeliveryStore(shared)) == 6
    engines = [sa.create_engine(shared.url) for _ in range(2)]
    senders = [SiteDelivery(sites_settings, e, audit, batch=2) for e in engines]
    start = threading.Barrier(2)

    def drain(sender: SiteDelivery) -> None:
        start.wait()
        for _ in range(10):
            sender.run_once()

    threads = [threading.Thread(target=drain, args=(s,)) for s in senders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    for engine in engines:
        engine.dispose()
    rows = DeliveryStore(shared).entries()
    assert len(rows) == 6 and {r["status"] for r in rows} == {"delivered"}
    assert all(r["attempts"] == 1 for r in rows)
    assert len(his_a.received) == 6 and len(his_a.unique()) == 6  # nothing sent twice
    assert {r["study_instance_uid"] for r in rows} == set(uids)


def test_final_waits_behind_its_preliminary_and_queueing_is_idempotent(
    sites_settings: Settings, shared: sa.engine.Engine, audit: AuditLog, his_a: MllpHis
) -> None:
    uid = add_study(shared, sites_settings, calling_ae="CLINIC_A_CT")
    store = DeliveryStore(shared)
    assert queue_new_results(sites_settings, store) == 1
    assert queue_new_results(sites_settings, store) == 0
    his_a.state.mode = "die"  # the preliminary cannot get through for now
    sender = SiteDelivery(sites_settings, shared, audit)
    sender.run_once()
    [final_id] = enqueue_final_result(sites_settings, shared, uid, verified_by="dr-li")
    assert enqueue_final_result(sites_settings, shared, uid) == []
    claimed = store.claim_due(limit=10, lease_seconds=5)
    assert [c.result_status for c in claimed] in ([], ["P"])  # never the F first
    for item in claimed:
        store.retry(item.id, 0.0, "released by the test", refused=False)
    his_a.state.mode = "AA"
    for _ in range(40):
        sender.run_once()
        if len(store.entries(status="delivered")) == 2:
            break
    assert [r.control_id for r in his_a.unique().values()][-1] == final_id
    sent_order = [r.control_id for r in his_a.received if r.control_id in his_a.unique()]
    assert sent_order.index(final_id) == len(sent_order) - 1
    with pytest.raises(LookupError):
        enqueue_final_result(sites_settings, shared, "1.2.3.999")


def test_reviewed_study_is_finalised_with_its_verdicts(
    sites_settings: Settings, shared: sa.engine.Engine
) -> None:
    uid = add_study(shared, sites_settings, calling_ae="CLINIC_A_CT")
    other = add_study(shared, sites_settings, calling_ae="CLINIC_A_CT")
    store = DeliveryStore(shared)
    queue_new_results(sites_settings, store)
    now = dt.datetime.now(dt.UTC)
    with shared.begin() as conn:
        for revision, verdict in ((1, "confirmed"), (2, "rejected")):  # an amended review
            conn.execute(
                reviews.insert().values(
                    study_instance_uid=uid,
                    revision=revision,
                    reviewer_id="rad-1",
                    reviewer_name="Li^Na",
                    verdicts_json=json.dumps([{"finding": "nodule", "verdict": verdict}]),
                    request_sha256=f"{revision:064d}",
                    sr_sop_instance_uid=f"1.2.3.{revision}",
                    predecessor_sop_instance_uid="1.2.3",
                    bundle_versions="{}",
                    created_at=now,
                )
            )
    assert [r["study_instance_uid"] for r in store.reviewed_not_final()] == [uid]
    assert queue_reviewed_results(sites_settings, store) == 1
    assert store.reviewed_not_final() == [] and queue_reviewed_results(sites_settings, store) == 0
    report = store.report(uid)
    assert report is not None and report["status"] == "final"
    assert report["verified_by"] == "rad-1"
    nodule = report["final_result"]["findings"][0]
    assert nodule["verdict"] == "rejected" and nodule["present"] is False  # the latest revision
    assert store.report(other)["status"] == "preliminary"  # type: ignore[index]
    assert [(r["result_status"], r["status"]) for r in store.for_study(uid)] == [
        ("P", "pending"),
        ("F", "pending"),
    ]
    assert store.destination_states(uid)["hl7:clinic-a"]["state"] == "pending"
    paths = store.first_instance_paths([uid, other])
    assert set(paths) == {uid, other} and all(p.endswith(".dcm") for p in paths.values())


def test_review_amended_after_final_sends_a_correction(
    sites_settings: Settings, shared: sa.engine.Engine, audit: AuditLog, his_a: MllpHis
) -> None:
    uid = add_study(shared, sites_settings, calling_ae="CLINIC_A_CT")
    store = DeliveryStore(shared)
    sender = SiteDelivery(sites_settings, shared, audit)

    def review(revision: int, verdict: str) -> None:
        with shared.begin() as conn:
            conn.execute(
                reviews.insert().values(
                    study_instance_uid=uid,
                    revision=revision,
                    reviewer_id=f"rad-{revision}",
                    reviewer_name="Li^Na",
                    verdicts_json=json.dumps([{"finding": "nodule", "verdict": verdict}]),
                    request_sha256=f"{revision:064d}",
                    sr_sop_instance_uid=f"1.2.3.{revision}",
                    predecessor_sop_instance_uid="1.2.3",
                    bundle_versions="{}",
                    created_at=dt.datetime.now(dt.UTC),
                )
            )

    sender.run_once()  # preliminary
    review(1, "confirmed")
    assert sender.run_once().finalised == 1
    assert sender.run_once().amended == 0  # nothing amended yet
    time.sleep(0.01)
    review(2, "rejected")
    summary = sender.run_once()
    assert summary.amended == 1 and summary.delivered == 1
    assert sender.run_once().amended == 0
    report = store.report(uid)
    assert report is not None and report["status"] == "amended"
    assert report["verified_by"] == "rad-2"
    assert report["final_result"]["findings"][0]["present"] is False
    statuses = [
        m.message.oru_r01_patient_result.oru_r01_order_observation.obr.obr_25.to_er7()
        for m in his_a.received
    ]
    assert statuses == ["P", "F", "C"]
    assert len(his_a.unique()) == 3
    correction = his_a.received[2].message.oru_r01_patient_result.oru_r01_order_observation
    nodule = next(
        g.obx for g in correction.oru_r01_observation if g.obx.obx_3.to_er7().startswith("27925004")
    )
    assert nodule.obx_5.to_er7() == "272519000^Absent^SCT" and nodule.obx_11.to_er7() == "C"
