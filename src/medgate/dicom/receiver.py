"""The DICOM listener: a pynetdicom AE answering C-ECHO and C-STORE for every storage SOP class.

Durability comes first: the C-STORE handler returns success only after ``InstanceStore.store``
has made the file and the index row durable. pynetdicom calls the handler only once a data set
has arrived complete, so an aborted association leaves nothing behind.

Speed comes second, and matters (a CT series is hundreds of instances): the handler never
decodes the data set (it parses the header lazily from the raw bytes and writes the bytes as
received), and the AE offers a large maximum PDU so that a 512x512 slice crosses in a few PDUs
instead of dozens, each of which costs Python work in pynetdicom's state machine.
"""

from __future__ import annotations

import logging
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import (
    AE,
    ALL_TRANSFER_SYNTAXES,
    AllStoragePresentationContexts,
    build_context,
    evt,
)
from pynetdicom.dsutils import encode_file_meta
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer

from medgate.audit import AuditLog
from medgate.config import Settings
from medgate.db import Index, InstanceRecord
from medgate.dicom import fastpath
from medgate.dicom.audit_queue import AuditQueue
from medgate.dicom.header import MalformedDataset, parse_header
from medgate.dicom.net import set_nodelay
from medgate.dicom.store import InstanceStore, StoreError
from medgate.logs import phi_hash

log = logging.getLogger(__name__)

PREAMBLE = b"\x00" * 128 + b"DICM"
# A 512x512 16-bit slice is 512 KiB; one PDU of up to 1 MiB carries it whole.
RECEIVE_MAX_PDU = 1 << 20


def make_storage_ae(settings: Settings) -> AE:
    """An AE that accepts every storage SOP class in every transfer syntax, plus Verification."""
    fastpath.install()
    dicom = settings.dicom
    ae = AE(ae_title=dicom.ae_title)
    for context in AllStoragePresentationContexts:
        ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
    ae.add_supported_context(Verification, ALL_TRANSFER_SYNTAXES)
    ae.require_called_aet = True
    ae.require_calling_aet = list(dicom.allowed_calling_aes)
    ae.maximum_associations = dicom.max_associations
    ae.acse_timeout = dicom.acse_timeout
    ae.network_timeout = dicom.network_timeout
    ae.dimse_timeout = dicom.network_timeout
    ae.maximum_pdu_size = RECEIVE_MAX_PDU
    return ae


def prefer_requestor_syntaxes(event: evt.Event) -> None:
    """EVT_REQUESTED: accept, in each proposed context, the transfer syntax the peer lists first.

    pynetdicom, as acceptor, picks the first syntax of *its own* list that the peer proposes, so a
    modality offering [JPEG Baseline, Explicit VR] would be made to decompress (or fail, as DCMTK
    storescu does without codecs). Storing "as sent" means honouring the sender's preference: the
    association's copy of the supported contexts is reordered by the proposal before negotiation.
    """
    assoc = event.assoc
    proposed: dict[str, list[str]] = {}
    for context in assoc.requestor.primitive.presentation_context_definition_list:
        ordered = proposed.setdefault(str(context.abstract_syntax), [])
        ordered.extend(str(ts) for ts in context.transfer_syntax if str(ts) not in ordered)
    contexts = []
    for context in assoc.acceptor.supported_contexts:
        preference = proposed.get(str(context.abstract_syntax))
        if preference:
            ours = [str(ts) for ts in context.transfer_syntax]
            ranked = [ts for ts in preference if ts in ours] + [
                ts for ts in ours if ts not in preference
            ]
            context = build_context(context.abstract_syntax, ranked)
        contexts.append(context)
    assoc.acceptor.supported_contexts = contexts


def _failure(status: int, reason: str) -> Dataset:
    """A C-STORE response with an Error Comment the peer can show (no PHI: codes only)."""
    rsp = Dataset()
    rsp.Status = status
    rsp.ErrorComment = reason[:64]
    return rsp


class StorageReceiver:
    """C-ECHO / C-STORE SCP writing into an ``InstanceStore``; ``start()`` / ``stop()``."""

    def __init__(
        self,
        settings: Settings,
        index: Index,
        audit: AuditLog,
        store: InstanceStore | None = None,
    ) -> None:
        self.settings = settings
        self.index = index
        self.audit = audit
        self.audit_queue: AuditQueue | None = None
        self.store = store or InstanceStore(settings, index)
        self.ae = make_storage_ae(settings)
        self.server: ThreadedAssociationServer | None = None
        self.received = 0
        self.rejected = 0

    # ------------------------------------------------------------------ lifecycle
    @property
    def port(self) -> int:
        if self.server is None:
            return self.settings.dicom.port
        return int(self.server.server_address[1])

    def start(self) -> None:
        self.audit_queue = AuditQueue(self.audit)
        handlers = [
            (evt.EVT_C_ECHO, self._on_echo),
            (evt.EVT_C_STORE, self.handle_store),
            (evt.EVT_REJECTED, self._on_rejected),
            (evt.EVT_REQUESTED, prefer_requestor_syntaxes),
            (evt.EVT_CONN_OPEN, set_nodelay),
        ]
        tls = getattr(self.settings, "tls", None)
        ssl_context = None
        if tls is not None and tls.enabled:
            from medgate.dicom.tls import server_context

            ssl_context = server_context(tls)
        self.server = self.ae.start_server(
            (self.settings.dicom.host, self.settings.dicom.port),
            block=False,
            evt_handlers=handlers,
            ssl_context=ssl_context,
        )
        log.info(
            "DICOM receiver %s listening on %s:%d",
            self.settings.dicom.ae_title,
            self.settings.dicom.host,
            self.port,
        )

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server = None
        self.ae.shutdown()
        if self.audit_queue is not None:
            self.audit_queue.close()

    # ------------------------------------------------------------------ handlers
    def _audit(self, event: str, **kwargs: Any) -> None:
        if self.audit_queue is not None:
            self.audit_queue.record(event, **kwargs)
        else:
            self.audit.record(event, **kwargs)

    def _on_echo(self, event: evt.Event) -> int:
        return 0x0000

    def _on_rejected(self, event: evt.Event) -> None:
        calling = event.assoc.requestor.ae_title
        log.warning("association from calling AE %r rejected", calling)
        self._audit(
            "security-alert",
            outcome="rejected",
            actor=calling,
            details={"reason": "association rejected (AE title not allowed)"},
        )

    def handle_store(self, event: evt.Event) -> Any:
        """C-STORE handler; also used by the retriever for C-GET sub-operations."""
        assoc = event.assoc
        # The peer that sent the data set: the caller, or the PACS we called for a C-GET.
        calling = assoc.acceptor.ae_title if assoc.is_requestor else assoc.requestor.ae_title
        request = event.request
        sop_uid = str(request.AffectedSOPInstanceUID or "")
        try:
            return self._store(event, calling)
        except (MalformedDataset, StoreError) as exc:
            return self._reject(calling, sop_uid, None, exc.status, str(exc))
        except Exception as exc:  # never let one bad instance take the service down
            log.exception("unexpected error storing instance %s", phi_hash(sop_uid))
            return self._reject(
                calling, sop_uid, None, 0xC000, f"internal error: {type(exc).__name__}"
            )

    def _store(self, event: evt.Event, calling: str) -> Any:
        request = event.request
        transfer_syntax = str(event.context.transfer_syntax)
        encoded: bytes = request.DataSet.getvalue()
        header = parse_header(
            encoded,
            transfer_syntax,
            expected_sop_class=str(request.AffectedSOPClassUID or ""),
            expected_sop_instance=str(request.AffectedSOPInstanceUID or ""),
        )
        record = InstanceRecord(
            sop_instance_uid=header.sop_instance_uid,
            study_instance_uid=header.study_instance_uid,
            series_instance_uid=header.series_instance_uid,
            sop_class_uid=header.sop_class_uid,
            transfer_syntax_uid=transfer_syntax,
            size=0,
            sha256="",
            path="",
            modality=header.modality,
            body_part=header.body_part,
            series_description=header.series_description,
            instance_number=header.instance_number,
            calling_ae=calling,
        )
        prefix = PREAMBLE + encode_file_meta(event.file_meta)
        try:
            result = self.store.store(record, (prefix, encoded))
        except StoreError as exc:
            return self._reject(
                calling, header.sop_instance_uid, header.study_instance_uid, exc.status, str(exc)
            )
        self.received += 1
        details: dict[str, Any] = {"size": result.size, "sha256": result.sha256}
        if result.duplicate:
            details["duplicate"] = result.duplicate
        self._audit(
            "instance-received",
            actor=calling,
            study_uid=header.study_instance_uid,
            sop_instance_uid=header.sop_instance_uid,
            details=details,
        )
        return result.status

    def _reject(
        self, calling: str, sop_uid: str, study_uid: str | None, status: int, reason: str
    ) -> Dataset:
        self.rejected += 1
        log.warning(
            "C-STORE of %s from %r refused with 0x%04X: %s",
            phi_hash(sop_uid),
            calling,
            status,
            reason,
        )
        self._audit(
            "instance-rejected",
            outcome="failure",
            actor=calling,
            study_uid=study_uid,
            sop_instance_uid=sop_uid or None,
            details={"status": f"0x{status:04X}", "reason": reason},
        )
        return _failure(status, reason)
