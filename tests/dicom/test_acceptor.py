"""medgate's own storage acceptor at the byte level: negotiation, P-DATA, DIMSE, protocol errors.

DCMTK and pynetdicom peers exercise the normal paths in test_receive / test_faults; here a raw
socket speaks the upper-layer protocol (PDUs built with pynetdicom's encoders) so that each rule
of PS3.8 / PS3.7 the acceptor relies on is checked on its own, including the malformed cases no
well-behaved peer sends.
"""

from __future__ import annotations

import queue
import socket
import struct
from collections.abc import Callable
from io import BytesIO
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import FileMetaDataset
from pydicom.filereader import read_dataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION
from pynetdicom.dsutils import encode_file_meta
from pynetdicom.pdu import A_ASSOCIATE_AC, A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import A_ASSOCIATE, MaximumLengthNotification
from pynetdicom.presentation import build_context

from medgate.cli.dicom_service import DicomService
from medgate.datasets.synthetic_series import ct_series
from medgate.dicom import dimse, fastpath
from medgate.dicom.acceptor import negotiate_contexts
from medgate.dicom.receiver import PREAMBLE, RECEIVE_MAX_PDU, file_meta_prefix

VERIFICATION = "1.2.840.10008.1.1"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"


def _associate_rq(called: str = "MEDGATE", calling: str = "RAWSCU") -> bytes:
    primitive = A_ASSOCIATE()
    primitive.application_context_name = "1.2.840.10008.3.1.1.1"
    primitive.calling_ae_title = calling
    primitive.called_ae_title = called
    contexts = [
        build_context(VERIFICATION, [ImplicitVRLittleEndian]),
        build_context(CTImageStorage, [JPEG_BASELINE, ExplicitVRLittleEndian]),
        build_context("1.2.3.4.5.6", [ImplicitVRLittleEndian]),  # not a SOP class we store
    ]
    for number, context in enumerate(contexts):
        context.context_id = 2 * number + 1
    primitive.presentation_context_definition_list = contexts
    max_length = MaximumLengthNotification()
    max_length.maximum_length_received = 16384
    primitive.user_information = [max_length]
    return A_ASSOCIATE_RQ(primitive).encode()


def _pdu(pdu_type: int, body: bytes) -> bytes:
    return struct.pack(">BxI", pdu_type, len(body)) + body


def _pdv(context_id: int, control: int, data: bytes) -> bytes:
    return struct.pack(">IBB", len(data) + 2, context_id, control) + data


def _command(**elements: tuple[int, bytes]) -> bytes:
    body = b"".join(
        struct.pack("<HHI", 0, tag, len(value)) + value for tag, value in sorted(elements.values())
    )
    return struct.pack("<HHI", 0, 0, 4) + struct.pack("<I", len(body)) + body


def _uid(value: str) -> bytes:
    raw = value.encode()
    return raw + b"\0" if len(raw) % 2 else raw


def _recv_pdu(sock: socket.socket) -> tuple[int, bytes]:
    header = _recv_exact(sock, 6)
    pdu_type, length = struct.unpack(">BxI", header)
    return pdu_type, _recv_exact(sock, length)


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


class RawPeer:
    """A DICOM requestor on a bare socket."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)

    def associate(self, **kwargs: str) -> A_ASSOCIATE_AC:
        self.sock.sendall(_associate_rq(**kwargs))
        pdu_type, body = _recv_pdu(self.sock)
        assert pdu_type == 0x02, f"expected A-ASSOCIATE-AC, got 0x{pdu_type:02X}"
        accept = A_ASSOCIATE_AC()
        accept.decode(_pdu(pdu_type, body))
        return accept

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def response(self) -> dimse.Command:
        pdu_type, body = _recv_pdu(self.sock)
        assert pdu_type == 0x04, f"expected P-DATA-TF, got 0x{pdu_type:02X}"
        return dimse.decode_command(body[6:])

    def status(self) -> int:
        pdu_type, body = _recv_pdu(self.sock)
        assert pdu_type == 0x04
        return int(read_dataset(BytesIO(body[6:]), True, True).Status)

    def expect_abort(self) -> int:
        pdu_type, body = _recv_pdu(self.sock)
        assert pdu_type == 0x07, f"expected A-ABORT, got 0x{pdu_type:02X}"
        return body[3]  # provider reason

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def raw_peer(service: DicomService) -> Callable[[], RawPeer]:
    peers: list[RawPeer] = []

    def make() -> RawPeer:
        peer = RawPeer(service.port)
        peers.append(peer)
        return peer

    yield make  # type: ignore[misc]
    for peer in peers:
        peer.close()


def _store_request(sop_instance: str, message_id: int = 7) -> bytes:
    return _command(
        sop_class=(0x0002, _uid(CTImageStorage)),
        field=(0x0100, struct.pack("<H", dimse.C_STORE_RQ)),
        message=(0x0110, struct.pack("<H", message_id)),
        priority=(0x0700, struct.pack("<H", 0)),
        data_set=(0x0800, struct.pack("<H", 0x0000)),
        sop_instance=(0x1000, _uid(sop_instance)),
    )


def _data_set(path: Path) -> tuple[str, bytes]:
    data = path.read_bytes()
    ds = dcmread(path, stop_before_pixels=True)
    start = len(PREAMBLE) + len(encode_file_meta(ds.file_meta))
    return str(ds.SOPInstanceUID), data[start:]


def test_negotiation_prefers_the_requestors_syntax_and_answers_each_context() -> None:
    rq = A_ASSOCIATE_RQ()
    rq.decode(_associate_rq())
    results, accepted = negotiate_contexts(rq.to_primitive().presentation_context_definition_list)
    assert [(r.context_id, r.result) for r in results] == [(1, 0), (3, 0), (5, 3)]
    assert accepted[3].transfer_syntax == JPEG_BASELINE  # the sender's first choice
    assert accepted[1].abstract_syntax == VERIFICATION


def test_echo_store_in_fragments_and_release(
    tmp_path: Path, service: DicomService, raw_peer: Callable[[], RawPeer]
) -> None:
    peer = raw_peer()
    accept = peer.associate()
    contexts = {item.context_id: item.result for item in accept.presentation_context}
    assert contexts == {1: 0, 3: 0, 5: 3}
    assert accept.user_information.maximum_length == RECEIVE_MAX_PDU
    echo = _command(
        sop_class=(0x0002, _uid(VERIFICATION)),
        field=(0x0100, struct.pack("<H", dimse.C_ECHO_RQ)),
        message=(0x0110, struct.pack("<H", 3)),
        data_set=(0x0800, struct.pack("<H", dimse.NO_DATA_SET)),
    )
    peer.send(_pdu(0x04, _pdv(1, 0x03, echo)))
    response = peer.response()
    assert (response.command_field, response.message_id) == (0x8030, 3)
    # a C-STORE whose command and data set are split over several PDVs and PDUs; the
    # presentation context transfer syntax is JPEG Baseline, but explicit VR data is sent
    # (storing never decodes), so the stored file must carry the negotiated syntax
    path = ct_series(tmp_path, 1, rows=16, columns=16)[0]
    sop_uid, data = _data_set(path)
    command = _store_request(sop_uid)
    peer.send(_pdu(0x04, _pdv(3, 0x01, command[:10]) + _pdv(3, 0x03, command[10:])))
    peer.send(_pdu(0x04, _pdv(3, 0x00, data[:100])))
    peer.send(_pdu(0x04, _pdv(3, 0x00, data[100:300]) + _pdv(3, 0x02, data[300:])))
    response = peer.response()
    assert response.message_id == 7 and response.affected_sop_instance_uid == sop_uid
    stored = service.store.path_for(sop_uid)
    assert stored.read_bytes().endswith(data)
    assert str(dcmread(stored, stop_before_pixels=True).file_meta.TransferSyntaxUID) == (
        JPEG_BASELINE
    )
    peer.send(_pdu(0x05, b"\0\0\0\0"))
    assert _recv_pdu(peer.sock)[0] == 0x06  # A-RELEASE-RP


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(_pdu(0x04, _pdv(9, 0x03, b"x" * 10)), id="unaccepted-context"),
        pytest.param(_pdu(0x04, struct.pack(">IBB", 400, 3, 3) + b"abc"), id="pdv-overruns-pdu"),
        pytest.param(_pdu(0x04, _pdv(3, 0x03, b"\x00\x00\x00\x01garbage")), id="bad-command"),
        pytest.param(_pdu(0x04, _pdv(3, 0x02, b"data without a command")), id="data-first"),
        pytest.param(_pdu(0x01, b"\0" * 20), id="second-associate-rq"),
        pytest.param(struct.pack(">BxI", 0x04, RECEIVE_MAX_PDU + 100), id="pdu-over-maximum"),
    ],
)
def test_protocol_errors_abort_and_keep_nothing(
    bad: bytes, service: DicomService, raw_peer: Callable[[], RawPeer]
) -> None:
    peer = raw_peer()
    peer.associate()
    peer.send(bad)
    assert peer.expect_abort() in (0x02, 0x06)
    assert service.index.instances.count() == 0
    fresh = raw_peer()  # ... and the next association works
    fresh.associate()


def test_half_sent_data_set_then_abort_keeps_nothing(
    tmp_path: Path, service: DicomService, raw_peer: Callable[[], RawPeer]
) -> None:
    peer = raw_peer()
    peer.associate()
    sop_uid, data = _data_set(ct_series(tmp_path, 1, rows=16, columns=16)[0])
    peer.send(_pdu(0x04, _pdv(3, 0x03, _store_request(sop_uid))))
    peer.send(_pdu(0x04, _pdv(3, 0x00, data[:200])))
    peer.send(_pdu(0x07, b"\0\0\0\0"))  # A-ABORT from the requestor
    peer.close()
    fresh = raw_peer()
    fresh.associate()  # the acceptor went on; nothing of the half data set was kept
    assert service.index.instances.count() == 0
    assert not [p for p in service.store.instances_dir.rglob("*") if p.is_file()]


def test_unsupported_operation_gets_a_status_not_a_hang(
    service: DicomService, raw_peer: Callable[[], RawPeer]
) -> None:
    peer = raw_peer()
    peer.associate()
    find = _command(
        sop_class=(0x0002, _uid(CTImageStorage)),
        field=(0x0100, struct.pack("<H", 0x0020)),  # C-FIND-RQ
        message=(0x0110, struct.pack("<H", 11)),
        data_set=(0x0800, struct.pack("<H", dimse.NO_DATA_SET)),
    )
    peer.send(_pdu(0x04, _pdv(3, 0x03, find)))
    assert peer.status() == dimse.STATUS_UNRECOGNIZED_OPERATION


def test_command_codec_round_trip_and_errors() -> None:
    request = dimse.decode_command(_store_request("1.2.3.4", message_id=513))
    assert request.command_field == dimse.C_STORE_RQ and request.message_id == 513
    assert request.affected_sop_class_uid == CTImageStorage and request.has_data_set
    encoded = dimse.encode_response(request, 0xA700, "free disk below minimum")
    ds = read_dataset(BytesIO(encoded), True, True)
    assert ds.CommandGroupLength == len(encoded) - 12
    assert (ds.CommandField, ds.MessageIDBeingRespondedTo, ds.Status) == (0x8001, 513, 0xA700)
    assert ds.AffectedSOPInstanceUID == "1.2.3.4" and ds.ErrorComment == "free disk below minimum"
    for broken in (b"\x00\x00\x00", _store_request("1.2")[:-3], b"\x08\x00" + b"\0" * 10):
        with pytest.raises(dimse.CommandError):
            dimse.decode_command(broken)


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
def test_file_meta_is_what_pynetdicom_writes(syntax: str) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = "1.2.826.0.1.3680043.8.498.1"
    meta.TransferSyntaxUID = syntax
    meta.ImplementationClassUID = PYNETDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = PYNETDICOM_IMPLEMENTATION_VERSION
    expected = PREAMBLE + encode_file_meta(meta)
    assert file_meta_prefix(CTImageStorage, "1.2.826.0.1.3680043.8.498.1", syntax) == expected


def test_stolen_response_goes_back_to_the_waiting_sender() -> None:
    class Message:
        def __init__(self, request: bool) -> None:
            self.is_valid_request = request

    class Dimse:
        msg_queue: queue.Queue[tuple[int, Message]] = queue.Queue()

    class Assoc:
        is_requestor = True
        dimse = Dimse()

    served: list[Message] = []
    serve = fastpath.return_stolen_responses(lambda assoc, msg, cx: served.append(msg))
    response, request = Message(False), Message(True)
    serve(Assoc(), response, 3)
    serve(Assoc(), request, 3)
    assert Assoc.dimse.msg_queue.get_nowait() == (3, response)
    assert Assoc.dimse.msg_queue.empty()
    assert served == [request]
