"""A site's own PACS (Orthanc) gets the result objects through the delivery queue; a PACS that
refuses them ends in the dead letter, one that is down is waited for."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from pathlib import Path

import pydicom
import sqlalchemy as sa
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid
from tests.support.delivery_studies import add_study

from medgate.core.config import Settings, SitePacs
from medgate.core.ports import free_port
from medgate.delivery.enqueue import enqueue_final_result
from medgate.delivery.site_delivery import SiteDelivery
from medgate.dicom.orthanc import OrthancServer
from medgate.store.deliveries import DeliveryStore
from medgate.store.schema import outbox
from medgate.trust.audit import AuditLog

# Orthanc answers C-STORE success when the filter returns false; an error makes it refuse.
REJECT_ALL = """
function ReceivedInstanceFilter(dicom, origin, info)
  error("rejected by site policy")
end
"""


def _result_object(engine: sa.engine.Engine, folder: Path, study_uid: str, kind: str) -> str:
    """A result file of the study in the outbox, as the worker (or the review) leaves it."""
    ds = pydicom.dcmread(str(get_testdata_file("CT_small.dcm")))
    ds.StudyInstanceUID = study_uid
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    path = folder / f"{ds.SOPInstanceUID}.dcm"
    ds.save_as(path, enforce_file_format=True)
    now = dt.datetime.now(dt.UTC)
    with engine.begin() as conn:
        conn.execute(
            outbox.insert().values(
                sop_instance_uid=str(ds.SOPInstanceUID),
                study_instance_uid=study_uid,
                kind=kind,
                path=str(path),
                status="pending",
                attempts=0,
                refusals=0,
                next_attempt_at=now,
                created_at=now,
            )
        )
    return str(ds.SOPInstanceUID)


def _with_pacs(settings: Settings, port: int, ae_title: str = "ORTHANC") -> Settings:
    pacs = SitePacs(ae_title=ae_title, host="127.0.0.1", port=port)
    site = settings.sites[0].model_copy(update={"hl7": None, "pacs": pacs})
    return settings.model_copy(update={"sites": [site]})


def test_site_pacs_gets_results_then_the_reviewed_objects(
    sites_settings: Settings,
    engine: sa.engine.Engine,
    audit: AuditLog,
    orthanc: OrthancServer,
    tmp_path: Path,
) -> None:
    settings = _with_pacs(sites_settings, orthanc.dicom_port, orthanc.ae_title)
    uid = add_study(engine, settings, calling_ae="CLINIC_A_CT")
    first = [_result_object(engine, tmp_path, uid, kind) for kind in ("sr", "seg")]
    sender = SiteDelivery(settings, engine, audit)
    store = DeliveryStore(engine)
    sender.run_once()
    [row] = store.for_study(uid)
    assert (row["destination"], row["status"], row["ack_code"]) == (
        "pacs:clinic-a",
        "delivered",
        "0x0000",
    )
    assert all(orthanc.find_instance(u) for u in first)

    verified = _result_object(engine, tmp_path, uid, "verified-sr")  # the review's object
    enqueue_final_result(settings, engine, uid, verified_by="dr-he")
    sender.run_once()
    rows = store.for_study(uid)
    assert [(r["result_status"], r["status"]) for r in rows] == [
        ("P", "delivered"),
        ("F", "delivered"),
    ]
    assert orthanc.find_instance(verified)
    assert len(orthanc.study_instances(uid)) == 3


def test_site_pacs_refusal_is_dead_lettered_and_outage_waited_for(
    sites_settings: Settings,
    engine: sa.engine.Engine,
    audit: AuditLog,
    orthanc_factory: Callable[..., OrthancServer],
    tmp_path: Path,
) -> None:
    down = _with_pacs(sites_settings, free_port())
    uid = add_study(engine, down, calling_ae="CLINIC_A_CT")
    _result_object(engine, tmp_path, uid, "sr")
    store = DeliveryStore(engine)
    sender = SiteDelivery(down, engine, audit)
    for _ in range(3):
        sender.run_once()
        time.sleep(0.06)
    [row] = store.for_study(uid)
    assert row["status"] == "pending" and row["refusals"] == 0
    assert "unreachable" in row["last_error"]

    strict = orthanc_factory(lua=REJECT_ALL)
    settings = _with_pacs(sites_settings, strict.dicom_port, strict.ae_title)
    settings = settings.model_copy(
        update={"pacs": settings.pacs.model_copy(update={"send_max_attempts": 2})}
    )
    sender = SiteDelivery(settings, engine, audit)
    for _ in range(40):
        sender.run_once()
        if store.for_study(uid)[0]["status"] == "dead-letter":
            break
        time.sleep(0.06)
    [row] = store.for_study(uid)
    assert row["status"] == "dead-letter" and row["refusals"] == 2
    assert "0xA7" in row["last_error"] or "0xC" in row["last_error"]
    assert strict.study_instances(uid) == []
