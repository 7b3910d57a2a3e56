"""The outbox sender: result objects go to the PACS by C-STORE, until the PACS confirms them.

State lives only in the database (``outbox`` table), so a restart resumes where it stopped. Two
kinds of failure are told apart, because they need different answers:

* the PACS cannot be reached, refuses or drops the association: nothing is wrong with the object,
  so it is retried with exponential back-off (``pacs.send_backoff_seconds`` doubling up to
  ``pacs.send_backoff_max_seconds``) for as long as it takes;
* the PACS answers the C-STORE with a failure status: the object itself is refused, so it is
  retried up to ``pacs.send_max_attempts`` times and then dead-lettered (status ``dead``, visible
  in ``medgate outbox``), never looped on forever.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

from pydicom import dcmread
from pydicom.errors import InvalidDicomError
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom.status import code_to_category

from medgate.core.config import Settings
from medgate.core.logs import phi_hash
from medgate.dicom.net import (
    SUCCESS_OR_WARNING,
    Peer,
    associate,
    association_failure,
    pacs_peer,
    scu_ae,
)
from medgate.store.db import Index, OutboxItem
from medgate.trust.audit import AuditLog

log = logging.getLogger(__name__)


@dataclass
class SendSummary:
    sent: int = 0
    retried: int = 0
    dead: int = 0
    errors: list[str] = field(default_factory=list)


def backoff_seconds(settings: Settings, attempts: int) -> float:
    """Delay after ``attempts`` failed tries (1-based): base * 2^(n-1), capped at the max."""
    pacs = settings.pacs
    return float(
        min(pacs.send_backoff_seconds * 2 ** max(attempts - 1, 0), pacs.send_backoff_max_seconds)
    )


class ResultSender:
    """Drains the outbox to the PACS; ``run_once()`` for one pass, ``start()``/``stop()`` a loop."""

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
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ loop
    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="medgate-sender", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def wake(self) -> None:
        """Look at the outbox now (the worker calls this after queuing results)."""
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:
                log.exception("outbox pass failed")
            self._wake.wait(self.interval)
            self._wake.clear()

    # ------------------------------------------------------------------ one pass
    def run_once(self) -> SendSummary:
        """Send every due outbox item over one association; record each outcome."""
        summary = SendSummary()
        items = self.index.due_outbox(limit=self.batch)
        if items:  # another instance's sender may hold some of them
            claimed = self.index.claim_outbox([item.id for item in items])
            items = [item for item in items if item.id in claimed]
        if not items:
            return summary
        loaded: list[tuple[OutboxItem, object]] = []
        for item in items:
            try:
                ds = dcmread(item.path)
            except (OSError, InvalidDicomError) as exc:
                self._dead(item, f"result file unreadable: {type(exc).__name__}", summary)
                continue
            loaded.append((item, ds))
        if not loaded:
            return summary
        ae = scu_ae(self.settings)
        contexts = sorted(
            {(str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID)) for _, ds in loaded}  # type: ignore[attr-defined]
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
                self._retry(item, reason, summary)
            return summary
        try:
            for item, ds in loaded:
                if not assoc.is_established:
                    self._retry(item, "association lost", summary)
                    continue
                try:
                    status = assoc.send_c_store(ds)  # type: ignore[arg-type]
                except ValueError as exc:  # no accepted presentation context for this object
                    self._failed(item, f"not accepted by the PACS: {exc}"[:200], summary)
                    continue
                code = int(getattr(status, "Status", -1)) if status else -1
                if code == -1:
                    self._retry(item, "no response (timeout or abort)", summary)
                elif code_to_category(code) in SUCCESS_OR_WARNING:
                    self._sent(item, code, summary)
                else:
                    comment = str(getattr(status, "ErrorComment", "") or "")
                    self._failed(item, f"PACS status 0x{code:04X} {comment}".strip(), summary)
        finally:
            if assoc.is_established:
                assoc.release()
        return summary

    # ------------------------------------------------------------------ outcomes
    def _sent(self, item: OutboxItem, code: int, summary: SendSummary) -> None:
        self.index.outbox_sent(item.id)
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
        self.index.outbox_retry(item.id, delay, reason, refused=refused)
        summary.retried += 1
        summary.errors.append(reason)
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
        self.index.outbox_dead(item.id, reason)
        summary.dead += 1
        summary.errors.append(reason)
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
