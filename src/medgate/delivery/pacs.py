"""The outbox sender: result objects go to the PACS by C-STORE, until the PACS confirms them.

State lives only in the database (``outbox`` table), so a restart resumes where it stopped. Two
kinds of failure are told apart, because they need different answers:

* the PACS cannot be reached, refuses or drops the association: nothing is wrong with the object,
  so it is retried with exponential back-off (``pacs.send_backoff_seconds`` doubling up to
  ``pacs.send_backoff_max_seconds``) for as long as it takes;
* the PACS answers the C-STORE with a failure status: the object itself is refused, so it is
  retried up to ``pacs.send_max_attempts`` times and then dead-lettered (status ``dead``, visible
  in ``medgate outbox``), never looped on forever.

A pass claims its objects under a short lease (``serving.job_lease_seconds``) that a heartbeat
renews while the pass runs, so another instance sharing the database never sends them at the
same time, and a dead sender's objects are due again one lease later.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

from pydicom import dcmread
from pydicom.errors import InvalidDicomError
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom.status import code_to_category

from medgate.core.config import Settings
from medgate.core.logs import phi_hash
from medgate.core.pass_loop import PassLoop
from medgate.delivery.outcomes import PassOutcomes, doubling_delay
from medgate.dicom.net import (
    SUCCESS_OR_WARNING,
    Peer,
    associate,
    association_failure,
    pacs_peer,
    scu_ae,
)
from medgate.store.db import Index
from medgate.store.heartbeat import Heartbeat
from medgate.store.outbox import OutboxClaim, OutboxItem
from medgate.trust.audit import AuditLog

log = logging.getLogger(__name__)


@dataclass
class SendSummary(PassOutcomes):
    sent: int = 0


def backoff_seconds(settings: Settings, attempts: int) -> float:
    """Delay after ``attempts`` failed tries (1-based), by ``pacs.send_backoff_*``."""
    pacs = settings.pacs
    return doubling_delay(pacs.send_backoff_seconds, pacs.send_backoff_max_seconds, attempts)


class ResultSender(PassLoop):
    """Drains the outbox to the PACS; ``run_once()`` for one pass, ``start()``/``stop()`` a loop
    (``wake()``: the worker has just queued results)."""

    thread_name = "medgate-sender"

    def __init__(
        self,
        settings: Settings,
        index: Index,
        audit: AuditLog,
        *,
        peer: Peer | None = None,
        interval: float = 1.0,
        batch: int = 50,
    ) -> None:
        self.settings = settings
        self.index = index
        self.audit = audit
        self.peer = peer or pacs_peer(settings)
        self.interval = interval
        self.batch = batch
        super().__init__()

    # ------------------------------------------------------------------ one pass
    def run_once(self) -> SendSummary:
        """Send every due outbox item over one association; record each outcome."""
        summary = SendSummary()
        items = self.index.outbox.due(limit=self.batch)
        if not items:
            return summary
        lease = self.settings.serving.job_lease_seconds
        # another instance's sender may hold some of them
        claim = self.index.outbox.claim([item.id for item in items], lease)
        items = [item for item in items if item.id in claim.ids]
        if not items:
            return summary
        held = _HeldItems(self.index, claim, lease)
        with Heartbeat(held.renew, lease / 4, "medgate-sender-lease") as beat:
            self._send(items, summary, held, beat)
        return summary

    def _send(
        self, items: list[OutboxItem], summary: SendSummary, held: _HeldItems, beat: Heartbeat
    ) -> None:
        loaded: list[tuple[OutboxItem, Any]] = []
        for item in items:
            try:
                ds = dcmread(item.path)
            except (OSError, InvalidDicomError) as exc:
                with held.finishing(item.id):
                    self._dead(item, f"result file unreadable: {type(exc).__name__}", summary)
                continue
            loaded.append((item, ds))
        if not loaded:
            return
        ae = scu_ae(self.settings)
        contexts = sorted(
            {(str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID)) for _, ds in loaded}
        )
        for sop_class, syntax in contexts[:128]:
            syntaxes = [syntax] + [
                s for s in (ExplicitVRLittleEndian, ImplicitVRLittleEndian) if s != syntax
            ]
            ae.add_requested_context(sop_class, syntaxes)
        assoc = associate(ae, self.settings, self.peer)
        if not assoc.is_established:
            reason = association_failure(assoc)
            log.warning("outbox: %s %s: %d item(s) wait", self.peer, reason, len(loaded))
            for item, _ in loaded:
                with held.finishing(item.id):
                    self._retry(item, reason, summary)
            return
        try:
            for item, ds in loaded:
                if beat.lost.is_set():
                    log.warning("outbox: lease lost to another sender; this pass stops")
                    return
                record = self._send_one(assoc, item, ds)  # the lease keeps beating meanwhile
                with held.finishing(item.id):
                    record(summary)
        finally:
            if assoc.is_established:
                assoc.release()

    def _send_one(self, assoc: Any, item: OutboxItem, ds: Any) -> Callable[[SendSummary], None]:
        """C-STORE one object; returns how to record the outcome (done under the claim's lock)."""
        if not assoc.is_established:
            return partial(self._retry, item, "association lost")
        try:
            status = assoc.send_c_store(ds)
        except ValueError as exc:  # no accepted presentation context for this object
            return partial(self._failed, item, f"not accepted by the PACS: {exc}"[:200])
        code = int(getattr(status, "Status", -1)) if status else -1
        if code == -1:
            return partial(self._retry, item, "no response (timeout or abort)")
        if code_to_category(code) in SUCCESS_OR_WARNING:
            return partial(self._sent, item, code)
        comment = str(getattr(status, "ErrorComment", "") or "")
        return partial(self._failed, item, f"PACS status 0x{code:04X} {comment}".strip())

    # ------------------------------------------------------------------ outcomes
    def _sent(self, item: OutboxItem, code: int, summary: SendSummary) -> None:
        self.index.outbox.sent(item.id)
        summary.sent += 1
        log.info(
            "result %s (%s) delivered to %s", phi_hash(item.sop_instance_uid), item.kind, self.peer
        )
        self.audit.record(
            "result-sent",
            actor=self.peer.ae_title,
            study_uid=item.study_instance_uid,
            sop_instance_uid=item.sop_instance_uid,
            details={"kind": item.kind, "status": f"0x{code:04X}", "attempt": item.attempts + 1},
        )

    def _retry(
        self, item: OutboxItem, reason: str, summary: SendSummary, *, refused: bool = False
    ) -> None:
        delay = backoff_seconds(self.settings, item.attempts + 1)
        self.index.outbox.retry(item.id, delay, reason, refused=refused)
        summary.count_retry(reason)
        log.info(
            "result %s: %s; next try in %.1f s", phi_hash(item.sop_instance_uid), reason, delay
        )

    def _failed(self, item: OutboxItem, reason: str, summary: SendSummary) -> None:
        """The PACS answered and refused: bounded retries, then the dead letter. Tries that
        never reached the PACS (unreachable, aborted) do not count here."""
        if item.refusals + 1 >= self.settings.pacs.send_max_attempts:
            self._dead(item, reason, summary)
        else:
            self._retry(item, reason, summary, refused=True)

    def _dead(self, item: OutboxItem, reason: str, summary: SendSummary) -> None:
        self.index.outbox.dead(item.id, reason)
        summary.count_dead(reason)
        log.error(
            "result %s dead-lettered after %d attempt(s): %s",
            phi_hash(item.sop_instance_uid),
            item.attempts + 1,
            reason,
        )
        self.audit.record(
            "result-dead-lettered",
            outcome="failure",
            actor=self.peer.ae_title,
            study_uid=item.study_instance_uid,
            sop_instance_uid=item.sop_instance_uid,
            details={"kind": item.kind, "reason": reason, "attempts": item.attempts + 1},
        )


class _HeldItems:
    """The outbox items one pass still holds, and the lease that the heartbeat renews.

    An item leaves the claim when its outcome is recorded (sent, retry, dead letter), under the
    same lock as the renewal, so a renewal never mistakes an item's own new retry time for a
    claim taken by another sender.
    """

    def __init__(self, index: Index, claim: OutboxClaim, lease_seconds: float) -> None:
        self.index = index
        self.claim = claim
        self.lease_seconds = lease_seconds
        self.outstanding = set(claim.ids)
        self._lock = threading.Lock()

    @contextmanager
    def finishing(self, item_id: int) -> Iterator[None]:
        with self._lock:
            self.outstanding.discard(item_id)
            yield

    def renew(self) -> bool:
        with self._lock:
            if not self.outstanding:
                return True
            current = OutboxClaim(frozenset(self.outstanding), self.claim.lease_until)
            renewed = self.index.outbox.renew(current, self.lease_seconds)
            if renewed is None:
                return False
            self.claim = renewed
            return True
