"""Pulling studies from the PACS: C-FIND (study root) to look, C-MOVE or C-GET to fetch.

C-MOVE asks the PACS to send the study to medgate's own AE (``dicom.ae_title``; the PACS must know
that AE's address, and medgate's receiver must be listening). C-GET (``dicom.retrieve_method =
"get"``) fetches over the same association, for PACS that cannot reach medgate. Either way the
instances arrive through the receiver's C-STORE handler: the same store, index, de-duplication
and audit as pushed instances.

The optional poll mode (``dicom.poll_seconds`` > 0) asks the PACS for studies (restricted to
``dicom.poll_modalities`` when set) and pulls each one the index does not know yet, once.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import StoragePresentationContexts, build_role, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)
from pynetdicom.status import code_to_category

from medgate.core.config import Settings
from medgate.core.logs import phi_hash
from medgate.core.pass_loop import PassLoop
from medgate.dicom.net import Peer, associate, association_failure, pacs_peer, scu_ae
from medgate.dicom.receiver import StorageReceiver
from medgate.store.db import Index
from medgate.trust.audit import AuditLog

log = logging.getLogger(__name__)

# Attributes asked for (returned) in a study-level C-FIND.
STUDY_RETURN_KEYS = (
    "StudyInstanceUID",
    "PatientID",
    "PatientName",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "StudyDescription",
    "ModalitiesInStudy",
    "NumberOfStudyRelatedInstances",
)


class RetrieveError(RuntimeError):
    """The PACS could not be queried or could not deliver; the message says why (no PHI)."""


@dataclass
class RetrieveResult:
    study_instance_uid: str
    method: str
    status: int
    completed: int = 0
    failed: int = 0
    warning: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return code_to_category(self.status) in ("Success", "Warning") and self.failed == 0


def _study_query(filters: dict[str, str]) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    for key in STUDY_RETURN_KEYS:
        setattr(ds, key, "")
    for key, value in filters.items():
        if value:
            setattr(ds, key, value)
    return ds


def _to_dict(identifier: Dataset) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for key in STUDY_RETURN_KEYS:
        value = identifier.get(key)
        if value is None or value == "":
            row[key] = None
        elif key == "ModalitiesInStudy":
            row[key] = "\\".join(value) if not isinstance(value, str) else value
        else:
            row[key] = str(value)
    return row


class Retriever:
    """C-FIND / C-MOVE / C-GET against one peer (the configured PACS by default)."""

    def __init__(
        self,
        settings: Settings,
        index: Index,
        audit: AuditLog,
        receiver: StorageReceiver | None = None,
        *,
        peer: Peer | None = None,
    ) -> None:
        self.settings = settings
        self.index = index
        self.audit = audit
        self.receiver = receiver
        self.peer = peer or pacs_peer(settings)
        self._poller = _Poller(self)

    # ------------------------------------------------------------------ C-FIND
    def find(self, **filters: str) -> list[dict[str, Any]]:
        """Study-level C-FIND; ``filters`` are DICOM keywords (``PatientID``, ``StudyDate``...)."""
        ae = scu_ae(self.settings)
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
        assoc = associate(ae, self.settings, self.peer)
        if not assoc.is_established:
            raise RetrieveError(f"C-FIND to {self.peer}: {association_failure(assoc)}")
        results: list[dict[str, Any]] = []
        final = None
        try:
            for status, identifier in assoc.send_c_find(
                _study_query(filters), StudyRootQueryRetrieveInformationModelFind
            ):
                if not status:
                    raise RetrieveError(
                        f"C-FIND to {self.peer}: no response (aborted: may "
                        f"{self.settings.dicom.ae_title} query this peer?)"
                    )
                final = int(status.Status)
                if final in (0xFF00, 0xFF01) and identifier is not None:
                    results.append(_to_dict(identifier))
        finally:
            if assoc.is_established:
                assoc.release()
        if final is not None and code_to_category(final) not in ("Success", "Warning", "Pending"):
            raise RetrieveError(f"C-FIND to {self.peer} failed with status 0x{final:04X}")
        self.audit.record(
            "query",
            actor=self.peer.ae_title,
            details={
                "level": "STUDY",
                "keys": sorted(k for k, v in filters.items() if v),
                "matches": len(results),
            },
        )
        return results

    # ------------------------------------------------------------------ C-MOVE / C-GET
    def pull(self, study_uid: str, method: str | None = None) -> RetrieveResult:
        """Fetch a whole study into the store; returns the sub-operation counts."""
        method = method or self.settings.dicom.retrieve_method
        if method not in ("move", "get"):
            raise ValueError(f"retrieve method must be 'move' or 'get', not {method!r}")
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = study_uid
        result = self._move(study_uid, query) if method == "move" else self._get(study_uid, query)
        self.audit.record(
            "retrieve",
            outcome="success" if result.ok else "failure",
            actor=self.peer.ae_title,
            study_uid=study_uid,
            details={
                "method": method,
                "status": f"0x{result.status:04X}",
                "completed": result.completed,
                "failed": result.failed,
                "warning": result.warning,
            },
        )
        log.info(
            "pulled study %s by C-%s: %d completed, %d failed",
            phi_hash(study_uid),
            method.upper(),
            result.completed,
            result.failed,
        )
        return result

    def _collect(self, study_uid: str, method: str, responses: Iterable[Any]) -> RetrieveResult:
        result = RetrieveResult(study_uid, method, status=0xC000)
        got_any = False
        for status, _identifier in responses:
            if not status:
                result.errors.append("no response (timeout or abort)")
                break
            got_any = True
            result.status = int(status.Status)
            result.completed = int(
                status.get("NumberOfCompletedSuboperations", result.completed) or 0
            )
            result.failed = int(status.get("NumberOfFailedSuboperations", result.failed) or 0)
            result.warning = int(status.get("NumberOfWarningSuboperations", result.warning) or 0)
        if not got_any and not result.errors:
            result.errors.append("no response")
        return result

    def _move(self, study_uid: str, query: Dataset) -> RetrieveResult:
        ae = scu_ae(self.settings)
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
        assoc = associate(ae, self.settings, self.peer)
        if not assoc.is_established:
            raise RetrieveError(f"C-MOVE to {self.peer}: {association_failure(assoc)}")
        try:
            responses = assoc.send_c_move(
                query, self.settings.dicom.ae_title, StudyRootQueryRetrieveInformationModelMove
            )
            return self._collect(study_uid, "move", responses)
        finally:
            if assoc.is_established:
                assoc.release()

    def _get(self, study_uid: str, query: Dataset) -> RetrieveResult:
        receiver = self.receiver or StorageReceiver(self.settings, self.index, self.audit)
        ae = scu_ae(self.settings)
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
        roles = []
        # 127 storage contexts at most (128 in all): the most common storage SOP classes.
        for context in StoragePresentationContexts[:127]:
            syntax = context.abstract_syntax
            assert syntax is not None  # pynetdicom's storage contexts all name their SOP class
            ae.add_requested_context(syntax, context.transfer_syntax)
            roles.append(build_role(syntax, scp_role=True))
        assoc = associate(
            ae,
            self.settings,
            self.peer,
            ext_neg=roles,
            evt_handlers=[(evt.EVT_C_STORE, receiver.handle_store)],
        )
        if not assoc.is_established:
            raise RetrieveError(f"C-GET to {self.peer}: {association_failure(assoc)}")
        try:
            responses = assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet)
            return self._collect(study_uid, "get", responses)
        finally:
            if assoc.is_established:
                assoc.release()

    # ------------------------------------------------------------------ poll mode
    def poll_once(self) -> list[str]:
        """Pull every study the PACS lists (per ``dicom.poll_modalities``) that is not indexed."""
        modalities = self.settings.dicom.poll_modalities or [""]
        seen: set[str] = set()
        pulled: list[str] = []
        for modality in modalities:
            for row in self.find(ModalitiesInStudy=modality):
                uid = row.get("StudyInstanceUID")
                if not uid or uid in seen:
                    continue
                seen.add(uid)
                if self.index.studies.get(uid) is not None:
                    continue
                try:
                    result = self.pull(uid)
                except RetrieveError as exc:
                    log.warning("poll: %s", exc)
                    continue
                if result.completed:
                    pulled.append(uid)
        return pulled

    def start_polling(self) -> None:
        """Poll the PACS every ``dicom.poll_seconds`` (0 disables the poll mode)."""
        if self.settings.dicom.poll_seconds > 0:
            self._poller.start()

    def stop_polling(self) -> None:
        self._poller.stop()


class _Poller(PassLoop):
    """The poll mode's loop: one ``poll_once`` a pass; a PACS that cannot be reached is a
    warning, and the next pass tries again."""

    thread_name = "medgate-poller"

    def __init__(self, retriever: Retriever) -> None:
        super().__init__()
        self.retriever = retriever
        self.interval = retriever.settings.dicom.poll_seconds

    def run_once(self) -> None:
        try:
            self.retriever.poll_once()
        except RetrieveError as exc:
            log.warning("poll: %s", exc)
