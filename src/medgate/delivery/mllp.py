"""Send one HL7 v2 message over MLLP and read the HIS's acknowledgement.

MLLP (HL7 v2 transport, Minimal Lower Layer Protocol) frames a message as ``<VT> message <FS><CR>``
on a TCP connection. hl7apy ships an MLLP server but no client, so the framing is done here; the
ACK is parsed with hl7apy. Only an ACK whose MSA-2 names the message sent counts as an answer.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.exceptions import HL7apyException
from hl7apy.parser import parse_message

START_BLOCK = b"\x0b"
END_BLOCK = b"\x1c\x0d"
MAX_ACK_BYTES = 1 << 20


class MllpError(Exception):
    """No usable answer: the HIS could not be reached, closed the connection or timed out, or
    answered something that is not an ACK to this message. The message itself may be fine."""


@dataclass(frozen=True)
class Ack:
    """MSA-1 (AA, AE, AR or the enhanced-mode CA, CE, CR), MSA-2 and MSA-3 / ERR text."""

    code: str
    control_id: str
    text: str

    @property
    def accepted(self) -> bool:
        return self.code in ("AA", "CA")


def frame(message: str) -> bytes:
    """The MLLP block of an ER7 message (UTF-8, as MSH-18 announces)."""
    return START_BLOCK + message.encode("utf-8") + END_BLOCK


def read_block(sock: socket.socket) -> bytes:
    """One MLLP block's content from ``sock``; raises MllpError on a short or oversized read."""
    data = b""
    while not data.endswith(END_BLOCK):
        chunk = sock.recv(65536)
        if not chunk:
            raise MllpError("the HIS closed the connection without an ACK")
        data += chunk
        if len(data) > MAX_ACK_BYTES:
            raise MllpError("the HIS's answer is larger than any ACK")
    start = data.find(START_BLOCK)
    if start < 0:
        raise MllpError("the HIS's answer is not MLLP framed")
    return data[start + 1 : -len(END_BLOCK)]


def parse_ack(content: bytes, control_id: str) -> Ack:
    """The ACK in ``content`` for the message ``control_id``; raises MllpError otherwise."""
    try:
        text = content.decode("utf-8")
        ack = parse_message(text.strip(), validation_level=VALIDATION_LEVEL.TOLERANT)
        code = ack.msa.msa_1.to_er7()
        acked = ack.msa.msa_2.to_er7()
        detail = ack.msa.msa_3.to_er7() if ack.msa.msa_3.to_er7() else ""
    except (UnicodeDecodeError, HL7apyException, AttributeError, IndexError) as exc:
        raise MllpError(f"the HIS's answer is not an HL7 ACK: {type(exc).__name__}") from exc
    if acked != control_id:
        raise MllpError(f"the ACK names message {acked!r}, not {control_id!r}")
    if code not in ("AA", "AE", "AR", "CA", "CE", "CR"):
        raise MllpError(f"the ACK's MSA-1 is {code!r}")
    return Ack(code=code, control_id=acked, text=detail)


def send_message(
    host: str,
    port: int,
    message: str,
    control_id: str,
    *,
    connect_timeout: float = 10.0,
    ack_timeout: float = 30.0,
) -> Ack:
    """Send ``message`` and return the HIS's ACK to it; raises MllpError without one."""
    try:
        with socket.create_connection((host, port), timeout=connect_timeout) as sock:
            sock.settimeout(ack_timeout)
            sock.sendall(frame(message))
            return parse_ack(read_block(sock), control_id)
    except TimeoutError as exc:
        raise MllpError("no ACK from the HIS in time") from exc
    except OSError as exc:
        raise MllpError(f"the HIS cannot be reached: {exc.strerror or exc}") from exc
