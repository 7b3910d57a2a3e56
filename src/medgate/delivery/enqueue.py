"""Turn built and reviewed results into queued messages for the study's site.

* ``queue_new_results`` (run by the delivery loop): every ``done`` study with a result and no
  report status yet becomes ``preliminary`` and gets its site's messages: the result objects for
  its PACS, a result-status-P ORU^R01 for its HIS, a transaction Bundle for its FHIR server;
* ``enqueue_final_result`` (the entry point for a saved review; ``queue_reviewed_results``, run
  by the loop, calls it for every stored review whose report is still preliminary, with the
  verdicts applied): the report becomes ``final`` and the status-F messages are queued;
* ``queue_amended_results`` (run by the loop): a review stored after the final result makes the
  report ``amended`` and queues the corrections (status C, one set per review revision).

All are idempotent: message ids are derived from (study, destination, status[, revision]) and
the payload is built once, when queued, so repeating a call (or a restart between two calls)
adds nothing.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Iterable, Iterator
from typing import Any

from pydicom.errors import InvalidDicomError
from sqlalchemy.engine import Engine

from medgate.core.config import Settings, SiteConfig
from medgate.core.logs import phi_hash
from medgate.delivery.fhir_resources import StudyResources, transaction_bundle
from medgate.delivery.hl7_oru import RESULT_STATUSES as REPORT_STATUS
from medgate.delivery.hl7_oru import build_oru, message_control_id
from medgate.delivery.site_pacs import files_payload
from medgate.delivery.sites import site_for_aes
from medgate.delivery.study_header import StudyHeader, read_study_header
from medgate.delivery.verified_result import apply_verdicts
from medgate.store.deliveries import DeliveryStore, NewDelivery
from medgate.store.schema import studies

log = logging.getLogger(__name__)


def hl7_destination(site: SiteConfig) -> str:
    """The destination name of a site's HIS in the queue and the study JSON."""
    return f"hl7:{site.name}"


def study_site(settings: Settings, store: DeliveryStore, study_uid: str) -> SiteConfig | None:
    """The site whose AE sent the study, or None."""
    if not settings.sites:
        return None
    return site_for_aes(settings, store.calling_aes([study_uid]).get(study_uid, set()))


def fhir_destination(site: SiteConfig) -> str:
    """The destination name of a site's FHIR server in the queue and the study JSON."""
    return f"fhir:{site.name}"


def messages_for(
    settings: Settings,
    store: DeliveryStore,
    study_uid: str,
    result: dict[str, Any],
    result_status: str,
    *,
    message_time: dt.datetime | None = None,
    revision: int | None = None,
) -> list[NewDelivery]:
    """The messages one result makes for its site's destinations: its result objects for its
    PACS, an ORU^R01 for its HIS, a transaction Bundle for its FHIR server (none without a site
    or destinations). ``result_status`` is P, F or C (a correction: an amended review, whose
    ``revision`` makes each correction a message of its own).

    A message that cannot be built (the study's files are gone) is queued as ``dead-letter``
    with the reason, so it shows in the study JSON instead of being retried forever."""
    site = study_site(settings, store, study_uid)
    if site is None:
        return []
    rows: list[NewDelivery] = []
    if site.pacs is not None:
        rows.extend(_pacs_message(store, site, study_uid, result_status, revision))
    channels = [
        (channel, destination)
        for channel, destination, wanted in (
            ("hl7", hl7_destination(site), site.hl7 is not None),
            ("fhir", fhir_destination(site), site.fhir is not None),
        )
        if wanted
    ]
    if not channels:
        return rows
    when = message_time or dt.datetime.now(dt.UTC)
    path = store.first_instance_path(study_uid)
    header: StudyHeader | None = None
    reason = ""
    try:
        if path is None:
            raise FileNotFoundError("the study has no stored instance")
        header = read_study_header(path)
    except (OSError, InvalidDicomError) as exc:
        reason = f"study header unreadable: {type(exc).__name__}"
        log.error("study %s: result messages not built: %s", phi_hash(study_uid), reason)
    for channel, destination in channels:
        control_id = message_control_id(study_uid, destination, _key(result_status, revision))
        common: dict[str, Any] = {
            "message_id": control_id,
            "study_instance_uid": study_uid,
            "site": site.name,
            "destination": destination,
            "channel": channel,
            "result_status": result_status,
        }
        if header is None:
            rows.append(NewDelivery(**common, payload="", status="dead-letter", error=reason))
        elif channel == "hl7":
            payload = _oru(settings, site, header, result, result_status, control_id, when)
            rows.append(NewDelivery(**common, payload=payload))
        else:
            resources = StudyResources(
                study_uid=study_uid,
                result=result,
                header=header,
                status=REPORT_STATUS[result_status],
                issued=when,
                site=site.name,
                languages=settings.reports.languages,
            )
            rows.append(
                NewDelivery(**common, payload=transaction_bundle(resources).model_dump_json())
            )
    return rows


def pacs_destination(site: SiteConfig) -> str:
    """The destination name of a site's own PACS in the queue and the study JSON."""
    return f"pacs:{site.name}"


def _key(result_status: str, revision: int | None) -> str:
    """What makes a message of a study to a destination unique: P, F, or C<revision>."""
    return f"C{revision or 0}" if result_status == "C" else result_status


def _pacs_message(
    store: DeliveryStore,
    site: SiteConfig,
    study_uid: str,
    result_status: str,
    revision: int | None,
) -> list[NewDelivery]:
    """The result objects for the site's PACS: with P every object in the outbox; later (F, C)
    the objects added since the earlier messages (the review's verified SRs), if any."""
    destination = pacs_destination(site)
    sent: set[str] = set()
    for earlier in store.payloads(study_uid, destination):
        if earlier:
            sent.update(o["sop_instance_uid"] for o in json.loads(earlier)["objects"])
    objects = [o for o in store.result_files(study_uid) if o["sop_instance_uid"] not in sent]
    if not objects:
        return []
    return [
        NewDelivery(
            message_id=message_control_id(study_uid, destination, _key(result_status, revision)),
            study_instance_uid=study_uid,
            site=site.name,
            destination=destination,
            channel="dicom",
            result_status=result_status,
            payload=files_payload(objects),
        )
    ]


def _oru(
    settings: Settings,
    site: SiteConfig,
    header: StudyHeader,
    result: dict[str, Any],
    result_status: str,
    control_id: str,
    when: dt.datetime,
) -> str:
    hl7 = settings.delivery.hl7
    if site.hl7 is None:
        raise ValueError(f"site {site.name!r} has no HIS")
    return build_oru(
        header=header,
        result=result,
        result_status=result_status,
        control_id=control_id,
        sending_application=hl7.sending_application,
        sending_facility=hl7.sending_facility or settings.reports.institution_name,
        receiving_application=site.hl7.receiving_application,
        receiving_facility=site.hl7.receiving_facility or site.name,
        message_time=when,
        languages=settings.reports.languages,
    )


def queue_new_results(settings: Settings, store: DeliveryStore, limit: int = 100) -> int:
    """Give every newly built result its preliminary status and messages; returns how many
    studies were taken up."""
    taken = 0
    for row in store.results_without_report(limit=limit):
        uid = row["study_instance_uid"]
        rows = messages_for(
            settings, store, uid, row["result"], "P", message_time=row["updated_at"]
        )
        store.record_preliminary(uid, rows, issued_at=row["updated_at"])
        taken += 1
        if rows:
            log.info("study %s: preliminary result queued for %s", phi_hash(uid), rows[0].site)
    return taken


def _verified(
    store: DeliveryStore, reviews: Iterable[dict[str, Any]]
) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(study UID, review row, verified result) for each review whose study has a built result:
    the AI's result with the review's verdicts applied."""
    for review in reviews:
        uid = review["study_instance_uid"]
        built = store.built_results(uid)
        if built:
            yield uid, review, apply_verdicts(built[0]["result"], review["verdicts"])


def queue_reviewed_results(settings: Settings, store: DeliveryStore, limit: int = 100) -> int:
    """Finalise every study whose review is stored but whose report is still preliminary: the
    verified result (verdicts applied) goes out as the final messages. Returns how many."""
    done = 0
    for uid, row, verified in _verified(store, store.reviewed_not_final(limit=limit)):
        enqueue_final_result(
            settings, store.engine, uid, verified_by=row["reviewer_id"], result=verified
        )
        done += 1
    return done


def queue_amended_results(settings: Settings, store: DeliveryStore, limit: int = 100) -> int:
    """Correct every final result whose review was amended afterwards: the report becomes
    ``amended`` and the correction (ORU^R01 result status C, FHIR ``amended``, the new verified
    SR for the site PACS) is queued. Returns how many studies."""
    done = 0
    for uid, row, verified in _verified(store, store.reviewed_since_final(limit=limit)):
        rows = messages_for(settings, store, uid, verified, "C", revision=row["revision"])
        store.record_amended(uid, rows, verified_by=row["reviewer_id"], amended_result=verified)
        log.info("study %s: amended review %d queued", phi_hash(uid), row["revision"])
        done += 1
    return done


def enqueue_final_result(
    settings: Settings,
    engine: Engine,
    study_uid: str,
    *,
    verified_by: str | None = None,
    result: dict[str, Any] | None = None,
) -> list[str]:
    """The reviewed (final) result of ``study_uid`` to its site: the report status becomes
    ``final`` and a result-status-F ORU^R01 is queued for the site's HIS.

    ``result`` is the verified result JSON (same shape as ``studies.result_json``) when the
    review changed findings; None keeps the AI's result. Returns the queued message ids (empty
    without a site HIS or when the final result was already queued). Raises LookupError when
    the study has no built result."""
    store = DeliveryStore(engine)
    if result is None:
        with engine.connect() as conn:
            raw = conn.execute(
                studies.select().where(studies.c.study_instance_uid == study_uid)
            ).first()
        if raw is None or not raw.result_json:
            raise LookupError(f"study {study_uid} has no built result to finalise")
        base: dict[str, Any] = json.loads(raw.result_json)
    else:
        base = result
    rows = messages_for(settings, store, study_uid, base, "F")
    added = store.record_final(study_uid, rows, verified_by=verified_by, final_result=result)
    log.info("study %s: final result recorded, %d message(s) queued", phi_hash(study_uid), added)
    return [r.message_id for r in rows] if added else []
