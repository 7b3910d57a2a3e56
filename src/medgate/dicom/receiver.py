"""The DICOM listener: C-ECHO and C-STORE SCP for every storage SOP class, into the store.

Durability comes first: a C-STORE gets its success status only after ``InstanceStore.store``
has made the file and the index row durable. The acceptor hands over a data set only once it has
arrived complete, so an aborted association leaves nothing behind.

Speed comes second, and matters (a CT series is hundreds of instances): the listener is medgate's
own lean acceptor (``medgate.dicom.acceptor``, one thread per association, a large maximum PDU so
that a 512x512 slice crosses in one PDU), the data set is never decoded (the header is parsed
lazily from the raw bytes) and it is written exactly as received. ``handle_store`` serves the
same path for pynetdicom associations medgate opens itself (C-GET sub-operations).
"""

from __future__ import annotations

import logging
import os
import socket
import struct
from typing import TYPE_CHECKING, Any, cast

from pydicom.dataset import Dataset
from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION, evt
from pynetdicom.dimse_primitives import C_STORE

from medgate.core.config import Settings
from medgate.core.dicom_status import StatusError
from medgate.core.logs import phi_hash
from medgate.dicom.acceptor import (
    AcceptedContext,
    AcceptorConfig,
    AssociationServer,
    Peer,
)
from medgate.dicom.dimse import Command
from medgate.dicom.header import parse_header
from medgate.store.db import Index
from medgate.store.files import InstanceStore
from medgate.store.instances import InstanceRecord
from medgate.trust.audit import AuditLog
from medgate.trust.audit_queue import AuditQueue

if TYPE_CHECKING:
    from medgate.dicom.receiver_pool import ReceiverPool

log = logging.getLogger(__name__)

PREAMBLE = b"\x00" * 128 + b"DICM"
# A 512x512 16-bit slice is 512 KiB; one PDU of up to 1 MiB carries it whole.
RECEIVE_MAX_PDU = 1 << 20


def acceptor_config(settings: Settings) -> AcceptorConfig:
    dicom = settings.dicom
    return AcceptorConfig(
        ae_title=dicom.ae_title,
        allowed_calling_aes=tuple(dicom.allowed_calling_aes),
        max_associations=dicom.max_associations,
        acse_timeout=dicom.acse_timeout,
        network_timeout=dicom.network_timeout,
        max_pdu=RECEIVE_MAX_PDU,
    )


def _meta_element(element: int, vr: bytes, value: bytes) -> bytes:
    """One explicit VR little endian group-0002 element (PS3.5 7.1.2)."""
    if vr == b"OB":
        return struct.pack("<HH2s2xI", 0x0002, element, vr, len(value)) + value
    return struct.pack("<HH2sH", 0x0002, element, vr, len(value)) + value


def _padded(value: str, pad: bytes) -> bytes:
    raw = value.encode("ascii")
    return raw + pad if len(raw) % 2 else raw


_IMPLEMENTATION = _meta_element(
    0x0012, b"UI", _padded(str(PYNETDICOM_IMPLEMENTATION_UID), b"\x00")
) + _meta_element(0x0013, b"SH", _padded(PYNETDICOM_IMPLEMENTATION_VERSION, b" "))


def file_meta_prefix(sop_class_uid: str, sop_instance_uid: str, transfer_syntax: str) -> bytes:
    """Preamble + File Meta Information (PS3.10 7.1) for a received data set.

    The same elements pynetdicom writes, encoded directly: building a pydicom data set for
    five elements cost a third of a millisecond per instance on the receive path.
    """
    body = b"".join(
        (
            _meta_element(0x0001, b"OB", b"\x00\x01"),
            _meta_element(0x0002, b"UI", _padded(sop_class_uid, b"\x00")),
            _meta_element(0x0003, b"UI", _padded(sop_instance_uid, b"\x00")),
            _meta_element(0x0010, b"UI", _padded(transfer_syntax, b"\x00")),
            _IMPLEMENTATION,
        )
    )
    return PREAMBLE + _meta_element(0x0000, b"UL", struct.pack("<I", len(body))) + body


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
        self.server: AssociationServer | None = None
        self.pool: ReceiverPool | None = None
        self.received = 0
        self.rejected = 0

    # ------------------------------------------------------------------ lifecycle
    @property
    def port(self) -> int:
        if self.pool is not None:
            return self.pool.port
        if self.server is None:
            return self.settings.dicom.port
        return self.server.server_address[1]

    def start(self) -> None:
        """Listen on the DICOM port: in this process, or in ``dicom.receiver_processes``
        child processes (``medgate.dicom.receiver_pool``) when that is more than one."""
        from medgate.dicom.receiver_pool import PoolAuditQueue, ReceiverPool, receiver_process_count

        processes = receiver_process_count(self.settings)
        if processes <= 1:
            self.start_serving(None)
            return
        pool = ReceiverPool(self.settings, processes, self.index.url)
        # this process still stores what its own SCU associations bring (C-GET sub-operations)
        self.audit_queue = PoolAuditQueue(self.audit, pool)
        try:
            pool.start()
        except BaseException:
            self.audit_queue.close()
            self.audit_queue = None
            raise
        self.pool = pool

    def start_serving(self, listener: socket.socket | None) -> None:
        """Accept associations in this process: on ``listener`` (a socket inherited from a
        receiver pool's parent) or on a port bound here."""
        from medgate.dicom.receiver_pool import InheritedSocketServer

        self.audit_queue = AuditQueue(self.audit)
        tls = getattr(self.settings, "tls", None)
        ssl_context = None
        if tls is not None and tls.enabled:
            from medgate.dicom.tls import server_context

            ssl_context = server_context(tls)
        config = acceptor_config(self.settings)
        if listener is None:
            server = AssociationServer(config, self, ssl_context)
            server.start(self.settings.dicom.host, self.settings.dicom.port)
        else:
            inherited = InheritedSocketServer(config, self, ssl_context)
            inherited.start_on(listener)
            server = inherited
        self.server = server
        log.info(
            "DICOM receiver %s listening on %s:%d (pid %d)",
            self.settings.dicom.ae_title,
            self.settings.dicom.host,
            self.port,
            os.getpid(),
        )

    def stop(self) -> None:
        if self.pool is not None:
            self.pool.stop()
            self.pool = None
        if self.server is not None:
            self.server.stop()
            self.server = None
        if self.audit_queue is not None:
            self.audit_queue.close()

    # ------------------------------------------------------------------ acceptor callbacks
    def _audit(self, event: str, **kwargs: Any) -> None:
        if self.audit_queue is not None:
            self.audit_queue.record(event, **kwargs)
        else:
            self.audit.record(event, **kwargs)

    def on_rejected(self, peer: Peer, reason: str) -> None:
        self._audit(
            "security-alert",
            outcome="rejected",
            actor=peer.calling_ae,
            details={"reason": f"association rejected ({reason})"},
        )

    def on_store(
        self, peer: Peer, context: AcceptedContext, request: Command, data: list[memoryview]
    ) -> tuple[int, str | None]:
        """A C-STORE from the acceptor: (status, error comment)."""
        encoded = data[0] if len(data) == 1 else b"".join(data)
        return self.store_data_set(
            peer.calling_ae,
            context.transfer_syntax,
            request.affected_sop_class_uid,
            request.affected_sop_instance_uid,
            encoded,
        )

    def handle_store(self, event: evt.Event) -> Any:
        """pynetdicom EVT_C_STORE handler, for C-GET sub-operations on medgate's own SCU."""
        assoc = event.assoc
        # The peer that sent the data set: the caller, or the PACS we called for a C-GET.
        calling = assoc.acceptor.ae_title if assoc.is_requestor else assoc.requestor.ae_title
        request = event.request
        if not isinstance(request, C_STORE) or request.DataSet is None:
            return _failure(0xA900, "not a C-STORE request with a data set")
        status, comment = self.store_data_set(
            calling,
            str(event.context.transfer_syntax),
            str(request.AffectedSOPClassUID or ""),
            str(request.AffectedSOPInstanceUID or ""),
            request.DataSet.getvalue(),
        )
        return status if comment is None else _failure(status, comment)

    # ------------------------------------------------------------------ storing
    def store_data_set(
        self,
        calling: str,
        transfer_syntax: str,
        sop_class_uid: str,
        sop_instance_uid: str,
        encoded: bytes | memoryview,
    ) -> tuple[int, str | None]:
        """Store one received data set; (status, error comment) of the response (never
        raises)."""
        study_uid: str | None = None
        try:
            header = parse_header(
                encoded,
                transfer_syntax,
                expected_sop_class=sop_class_uid,
                expected_sop_instance=sop_instance_uid,
            )
            sop_instance_uid, study_uid = header.sop_instance_uid, header.study_instance_uid
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
            prefix = file_meta_prefix(
                header.sop_class_uid, header.sop_instance_uid, transfer_syntax
            )
            # the store hashes and writes any bytes-like chunk; a memoryview spares a copy
            result = self.store.store(record, cast("tuple[bytes, ...]", (prefix, encoded)))
            self.received += 1
            details: dict[str, Any] = {"size": result.size, "sha256": result.sha256}
            if result.duplicate:
                details["duplicate"] = result.duplicate
            self._audit(
                "instance-received",
                actor=calling,
                study_uid=study_uid,
                sop_instance_uid=sop_instance_uid,
                details=details,
            )
        except StatusError as exc:  # a malformed data set or a failed store
            return self._reject(calling, sop_instance_uid, study_uid, exc.status, str(exc))
        except Exception as exc:  # never let one bad instance take the service down
            log.exception("unexpected error storing instance %s", phi_hash(sop_instance_uid))
            return self._reject(
                calling,
                sop_instance_uid,
                study_uid,
                0xC000,
                f"internal error: {type(exc).__name__}",
            )
        return result.status, None

    def _reject(
        self, calling: str, sop_uid: str, study_uid: str | None, status: int, reason: str
    ) -> tuple[int, str]:
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
        return status, reason[:64]
