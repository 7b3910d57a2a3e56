"""DIMSE command sets (PS3.7 Annex E) for the storage acceptor: requests in, responses out.

A command set is a short group-0000 data set, always Implicit VR Little Endian. The acceptor
(``medgate.dicom.acceptor``) sees one per C-STORE, and building a pydicom ``Dataset`` for each
costs more than the rest of the command handling together; the handful of elements a storage
SCP reads and writes are coded here directly, with their VRs from PS3.7 E.1.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

# Command Field values (PS3.7 E.1, Table E.1-1)
C_STORE_RQ = 0x0001
C_ECHO_RQ = 0x0030
C_CANCEL_RQ = 0x0FFF
RESPONSE_BIT = 0x8000

NO_DATA_SET = 0x0101
"""Command Data Set Type: no data set follows."""

STATUS_UNRECOGNIZED_OPERATION = 0x0211
STATUS_SOP_CLASS_NOT_SUPPORTED = 0x0122

_AFFECTED_SOP_CLASS = 0x0002
_COMMAND_FIELD = 0x0100
_MESSAGE_ID = 0x0110
_MESSAGE_ID_RESPONDED = 0x0120
_PRIORITY = 0x0700
_DATA_SET_TYPE = 0x0800
_STATUS = 0x0900
_ERROR_COMMENT = 0x0902
_AFFECTED_SOP_INSTANCE = 0x1000
_MOVE_ORIGINATOR_AE = 0x1030
_MOVE_ORIGINATOR_ID = 0x1031

_HEADER = struct.Struct("<HHI")
_US = struct.Struct("<H")
_UL = struct.Struct("<I")


class CommandError(ValueError):
    """The bytes are not a well-formed command set (the association is aborted)."""


@dataclass(frozen=True)
class Command:
    """The fields of a DIMSE request a storage SCP acts on."""

    command_field: int
    message_id: int
    data_set_type: int
    affected_sop_class_uid: str = ""
    affected_sop_instance_uid: str = ""
    priority: int = 0
    move_originator_ae: str = ""
    move_originator_message_id: int | None = None

    @property
    def has_data_set(self) -> bool:
        return self.data_set_type != NO_DATA_SET

    @property
    def is_request(self) -> bool:
        return not self.command_field & RESPONSE_BIT


def _text(value: bytes) -> str:
    return value.decode("ascii", "replace").rstrip("\x00 ").lstrip(" ")


def _us(value: bytes, tag: int) -> int:
    if len(value) != 2:
        raise CommandError(f"command element (0000,{tag:04X}) is not a US value")
    return int(_US.unpack(value)[0])


def decode_command(data: bytes | memoryview) -> Command:
    """Decode an Implicit VR Little Endian command set; ``CommandError`` if it is malformed."""
    view = memoryview(data)
    values: dict[int, bytes] = {}
    pos = 0
    end = len(view)
    while pos < end:
        if end - pos < 8:
            raise CommandError("command set ends inside an element header")
        group, element, length = _HEADER.unpack_from(view, pos)
        pos += 8
        if group != 0x0000:
            raise CommandError(f"element ({group:04X},{element:04X}) in a command set")
        if length > end - pos:
            raise CommandError(f"command element (0000,{element:04X}) is truncated")
        values[element] = bytes(view[pos : pos + length])
        pos += length
    for required in (_COMMAND_FIELD, _DATA_SET_TYPE):
        if required not in values:
            raise CommandError(f"command set lacks (0000,{required:04X})")
    command_field = _us(values[_COMMAND_FIELD], _COMMAND_FIELD)
    message_key = _MESSAGE_ID_RESPONDED if command_field & RESPONSE_BIT else _MESSAGE_ID
    move_id = values.get(_MOVE_ORIGINATOR_ID)
    return Command(
        command_field=command_field,
        message_id=_us(values[message_key], message_key) if message_key in values else 0,
        data_set_type=_us(values[_DATA_SET_TYPE], _DATA_SET_TYPE),
        affected_sop_class_uid=_text(values.get(_AFFECTED_SOP_CLASS, b"")),
        affected_sop_instance_uid=_text(values.get(_AFFECTED_SOP_INSTANCE, b"")),
        priority=_us(values[_PRIORITY], _PRIORITY) if _PRIORITY in values else 0,
        move_originator_ae=_text(values.get(_MOVE_ORIGINATOR_AE, b"")),
        move_originator_message_id=_us(move_id, _MOVE_ORIGINATOR_ID) if move_id else None,
    )


def _element(element: int, value: bytes) -> bytes:
    return _HEADER.pack(0x0000, element, len(value)) + value


def _uid(value: str) -> bytes:
    raw = value.encode("ascii")
    return raw + b"\x00" if len(raw) % 2 else raw


def _lo(value: str) -> bytes:
    raw = value.encode("ascii", "replace")[:64]
    return raw + b" " if len(raw) % 2 else raw


def encode_response(request: Command, status: int, error_comment: str | None = None) -> bytes:
    """The response command set to ``request`` with ``status`` (elements in tag order)."""
    body = []
    if request.affected_sop_class_uid:
        body.append(_element(_AFFECTED_SOP_CLASS, _uid(request.affected_sop_class_uid)))
    body.append(_element(_COMMAND_FIELD, _US.pack(request.command_field | RESPONSE_BIT)))
    body.append(_element(_MESSAGE_ID_RESPONDED, _US.pack(request.message_id)))
    body.append(_element(_DATA_SET_TYPE, _US.pack(NO_DATA_SET)))
    body.append(_element(_STATUS, _US.pack(status)))
    if error_comment and status != 0x0000:
        body.append(_element(_ERROR_COMMENT, _lo(error_comment)))
    if request.affected_sop_instance_uid:
        body.append(_element(_AFFECTED_SOP_INSTANCE, _uid(request.affected_sop_instance_uid)))
    content = b"".join(body)
    return _element(0x0000, _UL.pack(len(content))) + content
