"""medgate's DICOM storage acceptor: associations, P-DATA and DIMSE for C-STORE and C-ECHO SCP.

Why not pynetdicom's ``AE.start_server`` (which medgate used before, and still uses for every SCU
role)? pynetdicom moves each PDU through three threads, two polling loops and an event system,
about 4 ms per instance on this class of machine; DCMTK's ``storescp`` stores a whole 512 KiB CT
slice in about 1 ms. A gateway that receives CT series all day needs the receive path to be
lean, so the storage SCP, the one hot loop, is written here for that single job, in the shape
of the standard (PS3.8 upper layer, PS3.7 DIMSE):

* one thread per association reads PDUs from the socket (buffered, ``readinto``: a 512 KiB data
  set is received without intermediate copies) and answers in the same thread;
* A-ASSOCIATE-RQ/-AC are decoded and encoded with pynetdicom's PDU classes, so negotiation bytes
  are pynetdicom's well-tested ones; only the data phase is hand-written;
* DIMSE command sets are coded by ``medgate.dicom.dimse``; data sets are never decoded here: the
  handler gets the fragments exactly as received.

Conformance: storage SOP classes and Verification are accepted in every transfer syntax, the one
the requestor lists first being chosen (the data set is stored as sent); SCP/SCU role selection
and extended negotiation items get no response item (the defaults apply, PS3.7 D.3.3.4); a
malformed or unexpected PDU aborts the association (A-ABORT, source service-provider, PS3.8
9.3.8), which discards a partly received data set. The requestor's maximum PDU length is honoured
for our (small) responses.
"""

from __future__ import annotations

import contextlib
import io
import logging
import socket
import ssl
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol, cast

from pydicom.uid import UID
from pynetdicom import (
    ALL_TRANSFER_SYNTAXES,
    PYNETDICOM_IMPLEMENTATION_UID,
    AllStoragePresentationContexts,
)
from pynetdicom.pdu import A_ASSOCIATE_AC, A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    ImplementationClassUIDNotification,
    ImplementationVersionNameNotification,
    MaximumLengthNotification,
)
from pynetdicom.presentation import PresentationContext
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from medgate import __version__
from medgate.dicom import dimse
from medgate.dicom.dimse import Command, CommandError

log = logging.getLogger(__name__)

APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"
IMPLEMENTATION_CLASS_UID = str(PYNETDICOM_IMPLEMENTATION_UID)
"""pynetdicom's: medgate's negotiation bytes are pynetdicom's PDU code."""
IMPLEMENTATION_VERSION = f"MEDGATE_{__version__}"[:16]

# PDU types (PS3.8 9.3)
A_ASSOCIATE_RQ_PDU = 0x01
A_ASSOCIATE_AC_PDU = 0x02
A_ASSOCIATE_RJ_PDU = 0x03
P_DATA_TF_PDU = 0x04
A_RELEASE_RQ_PDU = 0x05
A_RELEASE_RP_PDU = 0x06
A_ABORT_PDU = 0x07

# A-ASSOCIATE-RJ (result, source, reason) triples (PS3.8 9.3.4)
REJECT_CALLING_AE = (0x01, 0x01, 0x03)
REJECT_CALLED_AE = (0x01, 0x01, 0x07)
REJECT_APPLICATION_CONTEXT = (0x01, 0x01, 0x02)
REJECT_LOCAL_LIMIT = (0x02, 0x03, 0x02)

# A-ABORT provider reasons (PS3.8 9.3.8)
ABORT_UNSPECIFIED = 0x00
ABORT_UNEXPECTED_PDU = 0x02
ABORT_INVALID_PARAMETER = 0x06

MAX_NEGOTIATION_PDU = 1 << 20
"""An A-ASSOCIATE-RQ larger than this is an attack, not a modality."""

_PDU_HEADER = struct.Struct(">BxI")
_PDV_HEADER = struct.Struct(">IBB")

STORAGE_SOP_CLASSES = frozenset(str(cx.abstract_syntax) for cx in AllStoragePresentationContexts)
SUPPORTED_TRANSFER_SYNTAXES = frozenset(str(ts) for ts in ALL_TRANSFER_SYNTAXES)
VERIFICATION = str(Verification)
IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"


class AssociationAborted(Exception):
    """The association ended without a release: a peer abort, a closed socket or a timeout."""


class ProtocolError(Exception):
    """The peer broke the upper-layer protocol; we abort with ``reason``."""

    def __init__(self, message: str, reason: int = ABORT_UNEXPECTED_PDU) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class AcceptorConfig:
    """What the acceptor negotiates; built from ``DicomSettings`` by the receiver."""

    ae_title: str
    allowed_calling_aes: tuple[str, ...] = ()
    max_associations: int = 10
    acse_timeout: float = 30.0
    network_timeout: float = 60.0
    max_pdu: int = 1 << 20


@dataclass(frozen=True)
class AcceptedContext:
    context_id: int
    abstract_syntax: str
    transfer_syntax: str


@dataclass(frozen=True)
class Peer:
    """The requestor of an association (AE titles as sent, socket address)."""

    calling_ae: str
    called_ae: str
    address: tuple[str, int]


class StorageHandler(Protocol):
    """What the acceptor calls; ``medgate.dicom.receiver.StorageReceiver`` implements it."""

    def on_store(
        self, peer: Peer, context: AcceptedContext, request: Command, data: list[memoryview]
    ) -> tuple[int, str | None]:
        """Store one data set (``data``: its fragments, as received); return (status, comment).

        Called in the association's thread; the response is sent when it returns, so a success
        status must mean the instance is durable."""
        ...

    def on_rejected(self, peer: Peer, reason: str) -> None:
        """An association was rejected at negotiation (audit it)."""
        ...


def negotiate_contexts(
    proposed: list[PresentationContext],
) -> tuple[list[PresentationContext], dict[int, AcceptedContext]]:
    """Answer each proposed presentation context: results for the A-ASSOCIATE-AC, and the
    accepted ones by context ID. The requestor's first supported transfer syntax wins, so the
    data set is stored exactly as the modality prefers to send it."""
    results: list[PresentationContext] = []
    accepted: dict[int, AcceptedContext] = {}
    for context in proposed:
        abstract = str(context.abstract_syntax)
        offered = [str(ts) for ts in context.transfer_syntax]
        answer = PresentationContext()
        answer.context_id = context.context_id
        answer.abstract_syntax = context.abstract_syntax
        # a refused context still carries one transfer syntax item (its value is not significant)
        chosen = offered[0] if offered else IMPLICIT_VR_LITTLE_ENDIAN
        usable = [ts for ts in offered if ts in SUPPORTED_TRANSFER_SYNTAXES]
        if abstract not in STORAGE_SOP_CLASSES and abstract != VERIFICATION:
            answer.result = 0x03  # abstract syntax not supported
        elif not usable:
            answer.result = 0x04  # transfer syntaxes not supported
        else:
            answer.result = 0x00
            chosen = usable[0]
            context_id = int(context.context_id or 0)
            accepted[context_id] = AcceptedContext(context_id, abstract, chosen)
        answer.transfer_syntax = [UID(chosen)]
        results.append(answer)
    return results, accepted


def _abort_pdu(reason: int, source: int = 0x02) -> bytes:
    return _PDU_HEADER.pack(A_ABORT_PDU, 4) + bytes((0, 0, source, reason))


def _reject_pdu(result: int, source: int, reason: int) -> bytes:
    return _PDU_HEADER.pack(A_ASSOCIATE_RJ_PDU, 4) + bytes((0, result, source, reason))


RELEASE_RP = _PDU_HEADER.pack(A_RELEASE_RP_PDU, 4) + b"\x00\x00\x00\x00"


def p_data_command(context_id: int, command: bytes) -> bytes:
    """One P-DATA-TF PDU carrying a whole command set (last fragment)."""
    item = _PDV_HEADER.pack(len(command) + 2, context_id, 0x03) + command
    return _PDU_HEADER.pack(P_DATA_TF_PDU, len(item)) + item


def iter_pdvs(body: memoryview) -> Iterator[tuple[int, int, memoryview]]:
    """(context ID, message control header, fragment) of each PDV item of a P-DATA-TF body."""
    pos = 0
    end = len(body)
    while pos < end:
        if end - pos < 6:
            raise ProtocolError("P-DATA-TF ends inside a PDV header", ABORT_INVALID_PARAMETER)
        length, context_id, control = _PDV_HEADER.unpack_from(body, pos)
        if length < 2 or length > end - pos - 4:
            raise ProtocolError("PDV item length out of range", ABORT_INVALID_PARAMETER)
        yield context_id, control, body[pos + 6 : pos + 4 + length]
        pos += 4 + length


class _Connection:
    """One socket with a buffered reader: whole PDUs in, whole PDUs out."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        # a BufferedReader (typeshed types makefile with a non-literal buffer size as IOBase)
        self.reader = cast(io.BufferedReader, sock.makefile("rb", buffering=1 << 16))

    def read_exact(self, size: int) -> bytearray:
        buffer = bytearray(size)
        view = memoryview(buffer)
        got = 0
        while got < size:
            try:
                count = self.reader.readinto(view[got:])
            except (TimeoutError, OSError) as exc:
                raise AssociationAborted(f"connection lost ({type(exc).__name__})") from exc
            if not count:
                raise AssociationAborted("connection closed by the peer")
            got += count
        return buffer

    def read_pdu(self, max_length: int) -> tuple[int, bytearray]:
        pdu_type, length = _PDU_HEADER.unpack(self.read_exact(6))
        if length > max_length:
            raise ProtocolError(
                f"PDU of {length} bytes exceeds the negotiated maximum {max_length}",
                ABORT_INVALID_PARAMETER,
            )
        return pdu_type, self.read_exact(length)

    def send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError as exc:
            raise AssociationAborted(f"connection lost ({type(exc).__name__})") from exc

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.reader.close()
        with contextlib.suppress(OSError):
            self.sock.close()


class Association:
    """The data phase of one accepted association: DIMSE messages in, responses out."""

    def __init__(
        self,
        conn: _Connection,
        peer: Peer,
        contexts: dict[int, AcceptedContext],
        handler: StorageHandler,
        max_pdu: int,
    ) -> None:
        self.conn = conn
        self.peer = peer
        self.contexts = contexts
        self.handler = handler
        self.max_pdu = max_pdu

    def run(self) -> None:
        """Serve until the peer releases (returns) or the association is lost (raises; a data
        set cut off in the middle is dropped: only complete ones reach the handler)."""
        command_parts: list[memoryview] = []
        data_parts: list[memoryview] = []
        command: Command | None = None
        message_context: AcceptedContext | None = None
        while True:
            pdu_type, body = self.conn.read_pdu(self.max_pdu + 6)
            if pdu_type == P_DATA_TF_PDU:
                for context_id, control, fragment in iter_pdvs(memoryview(body)):
                    context = self.contexts.get(context_id)
                    if context is None:
                        raise ProtocolError(f"PDV on unaccepted presentation context {context_id}")
                    if control & 0x01:  # command fragment
                        if command is not None:
                            raise ProtocolError("a command arrived before the last data set ended")
                        command_parts.append(fragment)
                        if control & 0x02:
                            try:
                                command = dimse.decode_command(b"".join(command_parts))
                            except CommandError as exc:
                                raise ProtocolError(str(exc), ABORT_INVALID_PARAMETER) from exc
                            command_parts = []
                            message_context = context
                            if not command.has_data_set:
                                self._dispatch(command, context, [])
                                command = None
                    else:  # data set fragment
                        if command is None or message_context is None:
                            raise ProtocolError("a data set fragment arrived without its command")
                        if context is not message_context:
                            raise ProtocolError("a data set changed presentation context")
                        data_parts.append(fragment)
                        if control & 0x02:
                            self._dispatch(command, message_context, data_parts)
                            command, data_parts = None, []
            elif pdu_type == A_RELEASE_RQ_PDU:
                self.conn.send(RELEASE_RP)
                return
            elif pdu_type == A_ABORT_PDU:
                raise AssociationAborted("aborted by the peer")
            else:
                raise ProtocolError(f"unexpected PDU type 0x{pdu_type:02X} in the data phase")

    def _dispatch(self, command: Command, context: AcceptedContext, data: list[memoryview]) -> None:
        """Answer one complete DIMSE message."""
        if not command.is_request or command.command_field == dimse.C_CANCEL_RQ:
            return  # a response or a cancel needs no answer from a storage SCP
        comment: str | None = None
        if command.command_field == dimse.C_ECHO_RQ:
            status = 0x0000
        elif command.command_field == dimse.C_STORE_RQ and command.has_data_set:
            if context.abstract_syntax not in STORAGE_SOP_CLASSES:
                status, comment = dimse.STATUS_SOP_CLASS_NOT_SUPPORTED, "not a storage context"
            else:
                try:
                    status, comment = self.handler.on_store(self.peer, context, command, data)
                except Exception as exc:  # the handler must answer; never leave the peer hanging
                    log.exception("storage handler failed")
                    status, comment = 0xC000, f"internal error: {type(exc).__name__}"
        else:
            status, comment = dimse.STATUS_UNRECOGNIZED_OPERATION, "storage SCP only"
        response = dimse.encode_response(command, status, comment)
        self.conn.send(p_data_command(context.context_id, response))


class AssociationServer:
    """Listens on a TCP port; one thread per association; ``start()`` / ``stop()``."""

    def __init__(
        self,
        config: AcceptorConfig,
        handler: StorageHandler,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.config = config
        self.handler = handler
        self.ssl_context = ssl_context
        self._listener: socket.socket | None = None
        self._accept_thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._active: dict[int, tuple[socket.socket, threading.Thread]] = {}
        self._established = 0
        self._serial = 0

    @property
    def server_address(self) -> tuple[str, int]:
        if self._listener is None:
            raise RuntimeError("the server is not started")
        host, port = self._listener.getsockname()[:2]
        return str(host), int(port)

    def start(self, host: str, port: int) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
        listener.listen(64)
        self.start_on(listener)

    def start_on(self, listener: socket.socket) -> None:
        """Accept associations on ``listener`` (bound and listening) in a background thread."""
        listener.settimeout(0.2)  # accept() wakes up to notice stop()
        self._listener = listener
        self._stopping.clear()
        self._accept_thread = threading.Thread(
            target=self._accept_loop, name="medgate-dicom-accept", daemon=True
        )
        self._accept_thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop listening, cut live associations (a half-received data set is dropped; an
        instance being stored finishes first) and wait for their threads."""
        self._stopping.set()
        if self._accept_thread is not None:
            self._accept_thread.join(timeout)
            self._accept_thread = None
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        with self._lock:
            live = list(self._active.values())
        for sock, _thread in live:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for _sock, thread in live:
            thread.join(timeout)

    # ------------------------------------------------------------------ connections
    def _before_accept(self) -> None:
        """Runs before each ``accept()``; a receiver pool's process yields to idle siblings."""

    def _accept_loop(self) -> None:
        assert self._listener is not None
        listener = self._listener
        while not self._stopping.is_set():
            self._before_accept()
            try:
                sock, address = listener.accept()
            except (TimeoutError, BlockingIOError):  # BlockingIOError: a sibling process took it
                continue
            except OSError:
                if self._stopping.is_set():
                    return
                log.exception("accept() failed on the DICOM port")
                continue
            with self._lock:
                self._serial += 1
                serial = self._serial
                thread = threading.Thread(
                    target=self._serve,
                    args=(serial, sock, address),
                    name=f"medgate-assoc-{serial}",
                    daemon=True,
                )
                self._active[serial] = (sock, thread)
            thread.start()

    def _serve(self, serial: int, raw: socket.socket, address: tuple[str, int]) -> None:
        conn: _Connection | None = None
        established = False
        try:
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            raw.settimeout(self.config.acse_timeout)
            sock: socket.socket = raw
            if self.ssl_context is not None:
                try:
                    sock = self.ssl_context.wrap_socket(raw, server_side=True)
                except (ssl.SSLError, OSError) as exc:
                    log.warning("TLS handshake from %s failed: %s", address[0], exc)
                    return
                with self._lock:
                    self._active[serial] = (sock, self._active[serial][1])
            conn = _Connection(sock)
            association = self._negotiate(conn, address)
            if association is None:
                return
            established = True
            sock.settimeout(self.config.network_timeout)
            try:
                association.run()
                log.debug("association from %r released", association.peer.calling_ae)
            except ProtocolError as exc:
                log.warning("association from %r aborted: %s", association.peer.calling_ae, exc)
                with contextlib.suppress(AssociationAborted):
                    conn.send(_abort_pdu(exc.reason))
            except AssociationAborted as exc:
                log.info("association from %r ended: %s", association.peer.calling_ae, exc)
        except AssociationAborted as exc:
            log.info("association attempt from %s ended: %s", address[0], exc)
        except ProtocolError as exc:
            log.warning("association attempt from %s aborted: %s", address[0], exc)
            if conn is not None:
                with contextlib.suppress(AssociationAborted):
                    conn.send(_abort_pdu(exc.reason))
        except Exception:
            log.exception("association from %s failed", address[0])
        finally:
            if conn is not None:
                conn.close()
            else:
                with contextlib.suppress(OSError):
                    raw.close()
            with self._lock:
                self._active.pop(serial, None)
                if established:
                    self._established -= 1

    def _negotiate(self, conn: _Connection, address: tuple[str, int]) -> Association | None:
        """Read the A-ASSOCIATE-RQ and accept (an ``Association``) or reject it (None)."""
        pdu_type, body = conn.read_pdu(MAX_NEGOTIATION_PDU)
        if pdu_type != A_ASSOCIATE_RQ_PDU:
            raise ProtocolError(f"expected A-ASSOCIATE-RQ, got PDU type 0x{pdu_type:02X}")
        request_pdu = A_ASSOCIATE_RQ()
        try:
            request_pdu.decode(bytes(_PDU_HEADER.pack(pdu_type, len(body)) + body))
            request = request_pdu.to_primitive()
        except Exception as exc:
            raise ProtocolError(
                f"malformed A-ASSOCIATE-RQ ({type(exc).__name__})", ABORT_INVALID_PARAMETER
            ) from exc
        peer = Peer(
            calling_ae=str(request.calling_ae_title).strip(),
            called_ae=str(request.called_ae_title).strip(),
            address=address,
        )
        rejection = self._rejection(request, peer)
        if rejection is not None:
            reason, triple = rejection
            log.warning("association from calling AE %r rejected: %s", peer.calling_ae, reason)
            conn.send(_reject_pdu(*triple))
            self.handler.on_rejected(peer, reason)
            return None
        try:
            return self._accept(conn, request, peer)
        except BaseException:
            with self._lock:
                self._established -= 1  # counted in by _rejection, never established
            raise

    def _accept(self, conn: _Connection, request: A_ASSOCIATE, peer: Peer) -> Association:
        results, accepted = negotiate_contexts(list(request.presentation_context_definition_list))
        response = A_ASSOCIATE()
        response.application_context_name = UID(APPLICATION_CONTEXT)
        response.calling_ae_title = request.calling_ae_title
        response.called_ae_title = request.called_ae_title
        response.result = 0x00
        response.result_source = 0x01
        response.presentation_context_definition_results_list = results
        max_length = MaximumLengthNotification()
        max_length.maximum_length_received = self.config.max_pdu
        implementation = ImplementationClassUIDNotification()
        implementation.implementation_class_uid = UID(IMPLEMENTATION_CLASS_UID)
        version = ImplementationVersionNameNotification()
        version.implementation_version_name = IMPLEMENTATION_VERSION
        response.user_information = [max_length, implementation, version]
        conn.send(A_ASSOCIATE_AC(response).encode())
        log.debug(
            "association from %r accepted: %d of %d presentation contexts",
            peer.calling_ae,
            len(accepted),
            len(results),
        )
        return Association(conn, peer, accepted, self.handler, self.config.max_pdu)

    def _rejection(
        self, request: A_ASSOCIATE, peer: Peer
    ) -> tuple[str, tuple[int, int, int]] | None:
        """Why the association must be rejected (reason, RJ triple), or None; counts it in."""
        if str(request.application_context_name) != APPLICATION_CONTEXT:
            return "application context name not supported", REJECT_APPLICATION_CONTEXT
        if peer.called_ae != self.config.ae_title.strip():
            return "called AE title not recognised", REJECT_CALLED_AE
        allowed = [ae.strip() for ae in self.config.allowed_calling_aes]
        if allowed and peer.calling_ae not in allowed:
            return "calling AE title not recognised", REJECT_CALLING_AE
        with self._lock:
            if self._established >= self.config.max_associations:
                return "too many associations", REJECT_LOCAL_LIMIT
            self._established += 1
        return None
