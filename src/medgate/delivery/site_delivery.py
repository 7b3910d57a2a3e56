"""The delivery loop: results become queued messages for each site's PACS, HIS and FHIR server.

Each pass (``run_once``) first queues the messages of newly built results
(``enqueue.queue_new_results``) and of newly reviewed ones (``enqueue.queue_reviewed_results``:
the verdicts applied, result status final), then sends every due message it can claim: result
objects by C-STORE to the site's PACS (``site_pacs``), ORU^R01 over MLLP to its HIS (``mllp``),
transaction Bundles over HTTP to its FHIR server (``fhir_push``).
Outcomes follow the PACS sender's rules (``delivery.pacs``), because the failures mean the same
things:

* the destination cannot be reached, drops the connection or does not answer in time (for FHIR
  also 408, 429 and 5xx): nothing is wrong with the message, so it is retried with exponential
  back-off for as long as it takes;
* the HIS answers AE or AR (CE/CR), the FHIR server a 4xx: the message was refused, so it is
  retried up to ``delivery.hl7.max_attempts`` (``delivery.fhir.push_max_attempts``) times, then
  dead-lettered (``dead-letter``), never looped on;
* AA (CA), 2xx: delivered.

State lives only in the database, so a ``kill -9`` loses nothing: a claimed message whose lease
runs out is sent again, with the same bytes and the same message control ID (MSH-10), so the HIS
can recognise it as the message it may already hold (a FHIR transaction of PUTs is idempotent).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import NamedTuple, TypeVar

from sqlalchemy.engine import Engine

from medgate.core.config import Settings, SiteConfig
from medgate.core.logs import phi_hash
from medgate.core.pass_loop import PassLoop
from medgate.delivery.enqueue import (
    queue_amended_results,
    queue_new_results,
    queue_reviewed_results,
)
from medgate.delivery.fhir_push import FhirPushError, push_bundle
from medgate.delivery.mllp import MllpError, send_message
from medgate.delivery.outcomes import PassOutcomes, doubling_delay
from medgate.delivery.site_pacs import DicomStoreError, store_objects
from medgate.delivery.sites import site_named
from medgate.dicom.net import Peer
from medgate.store.deliveries import Delivery, DeliveryStore
from medgate.trust.audit import AuditLog

log = logging.getLogger(__name__)
Destination = TypeVar("Destination")


@dataclass
class DeliverySummary(PassOutcomes):
    queued_studies: int = 0
    finalised: int = 0
    amended: int = 0
    delivered: int = 0


def backoff_seconds(settings: Settings, attempts: int) -> float:
    """Delay after ``attempts`` failed tries (1-based), by ``delivery.hl7``'s back-off."""
    hl7 = settings.delivery.hl7
    return doubling_delay(hl7.backoff_seconds, hl7.backoff_max_seconds, attempts)


class Answer(NamedTuple):
    """What a destination said (``code``: MSA-1, HTTP status or DIMSE status; ``text``: its own
    words), and how many refusals on its channel dead-letter a message."""

    accepted: bool
    code: str
    text: str
    max_refusals: int


class DestinationMissing(Exception):
    """The message's site, or the site's destination for its channel, is no longer configured."""


#: no usable answer: the destination could not be reached, dropped the connection or timed out
UNREACHABLE = (MllpError, FhirPushError, DicomStoreError)


def _configured(destination: Destination | None, what: str) -> Destination:
    if destination is None:
        raise DestinationMissing(f"the site or its {what} is no longer configured")
    return destination


class SiteDelivery(PassLoop):
    """Queues and sends result messages; ``run_once()`` for one pass, ``start()``/``stop()`` a
    loop (``wake()``: a result or a review was just saved)."""

    thread_name = "medgate-site-delivery"

    def __init__(
        self, settings: Settings, engine: Engine, audit: AuditLog, *, batch: int = 20
    ) -> None:
        self.settings = settings
        self.store = DeliveryStore(engine)
        self.audit = audit
        self.batch = batch
        self.interval = settings.delivery.hl7.poll_seconds
        super().__init__()

    # ------------------------------------------------------------------ one pass
    def run_once(self) -> DeliverySummary:
        summary = DeliverySummary()
        summary.queued_studies = queue_new_results(self.settings, self.store)
        summary.finalised = queue_reviewed_results(self.settings, self.store)
        summary.amended = queue_amended_results(self.settings, self.store)
        hl7 = self.settings.delivery.hl7
        for item in self.store.claim_due(limit=self.batch, lease_seconds=hl7.lease_seconds):
            if self._stop.is_set():
                break
            self._send(item, summary)
        return summary

    def _send(self, item: Delivery, summary: DeliverySummary) -> None:
        try:
            answer = self._deliver(item, site_named(self.settings, item.site))
        except DestinationMissing as exc:
            self._dead(item, str(exc), None, summary)
            return
        except UNREACHABLE as exc:
            self._retry(item, str(exc), summary, refused=False, ack_code=None)
            return
        self._answered(item, answer, summary)

    def _deliver(self, item: Delivery, site: SiteConfig | None) -> Answer:
        """Send ``item`` on its channel: ORU^R01 by MLLP to the HIS, a transaction Bundle to the
        FHIR server, result objects by C-STORE to the site's PACS."""
        settings = self.settings
        if item.channel == "fhir":
            fhir = _configured(site.fhir if site else None, "FHIR server")
            timeout = settings.delivery.fhir.push_timeout_s
            pushed = push_bundle(fhir.base_url, item.payload, token=fhir.token, timeout=timeout)
            limit = settings.delivery.fhir.push_max_attempts
            return Answer(pushed.accepted, str(pushed.status), pushed.text, limit)
        if item.channel == "dicom":
            pacs = _configured(site.pacs if site else None, "PACS")
            peer = Peer(pacs.ae_title, pacs.host, pacs.port)
            stored = store_objects(settings, peer, item.payload)
            return Answer(
                stored.accepted, stored.code, stored.text, settings.pacs.send_max_attempts
            )
        his = _configured(site.hl7 if site else None, "HIS")
        hl7 = settings.delivery.hl7
        ack = send_message(
            his.host,
            his.port,
            item.payload,
            item.message_id,
            connect_timeout=hl7.connect_timeout_s,
            ack_timeout=hl7.ack_timeout_s,
        )
        return Answer(ack.accepted, ack.code, ack.text, hl7.max_attempts)

    def _answered(self, item: Delivery, answer: Answer, summary: DeliverySummary) -> None:
        """The destination answered: delivered, or refused (bounded retries, dead letter)."""
        if answer.accepted:
            self.store.delivered(item.id, answer.code)
            summary.delivered += 1
            log.info(
                "result %s (%s) delivered to %s",
                phi_hash(item.study_instance_uid),
                item.result_status,
                item.destination,
            )
            self.audit.record(
                "result-sent",
                actor=item.destination,
                study_uid=item.study_instance_uid,
                details={
                    "channel": item.channel,
                    "message_id": item.message_id,
                    "result_status": item.result_status,
                    "ack": answer.code,
                    "attempt": item.attempts + 1,
                },
            )
            return
        # the peer's own words (MSA-3, OperationOutcome) may name the patient: stored, not logged
        reason = f"{item.destination} answered {answer.code}"
        if item.refusals + 1 >= answer.max_refusals:
            self._dead(item, reason, answer.code, summary, detail=answer.text)
        else:
            self._retry(
                item, reason, summary, refused=True, ack_code=answer.code, detail=answer.text
            )

    # ------------------------------------------------------------------ outcomes
    def _retry(
        self,
        item: Delivery,
        reason: str,
        summary: DeliverySummary,
        *,
        refused: bool,
        ack_code: str | None,
        detail: str = "",
    ) -> None:
        delay = backoff_seconds(self.settings, item.attempts + 1)
        stored = f"{reason}: {detail}" if detail else reason
        self.store.retry(item.id, delay, stored, refused=refused, ack_code=ack_code)
        summary.count_retry(reason)
        log.info(
            "result %s to %s: %s; next try in %.1f s",
            phi_hash(item.study_instance_uid),
            item.destination,
            reason,
            delay,
        )

    def _dead(
        self,
        item: Delivery,
        reason: str,
        ack_code: str | None,
        summary: DeliverySummary,
        *,
        detail: str = "",
    ) -> None:
        self.store.dead(item.id, f"{reason}: {detail}" if detail else reason, ack_code)
        summary.count_dead(reason)
        log.error(
            "result %s to %s dead-lettered after %d attempt(s): %s",
            phi_hash(item.study_instance_uid),
            item.destination,
            item.attempts + 1,
            reason,
        )
        self.audit.record(
            "result-dead-lettered",
            outcome="failure",
            actor=item.destination,
            study_uid=item.study_instance_uid,
            details={
                "channel": item.channel,
                "message_id": item.message_id,
                "reason": reason,
                "attempts": item.attempts + 1,
            },
        )
