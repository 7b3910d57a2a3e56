"""A hospital information system for the tests: hl7apy's MLLP server, parsing and acknowledging.

``MllpHis`` listens on a loopback port, parses every message with hl7apy (strict validation of
the v2.5.1 ORU^R01 structure), keeps it, and answers an ACK built with hl7apy whose MSA-1 is the
current ``mode``: ``AA`` (accept), ``AE`` / ``AR`` (refuse), ``die`` (close the connection without
an answer) or ``hold`` (keep the message and the connection open, unanswered, until released, so
a sender can be killed while it waits for the ACK). Like a real HIS it recognises a message it
already holds by its control ID (MSH-10).
"""

from __future__ import annotations

import datetime as dt
import threading
from dataclasses import dataclass, field
from typing import Any

from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.core import Message
from hl7apy.mllp import AbstractHandler, MLLPServer
from hl7apy.parser import parse_message


@dataclass
class Received:
    control_id: str
    er7: str
    message: Any


@dataclass
class HisState:
    mode: str = "AA"
    nak_text: str = "refused by the test HIS"
    received: list[Received] = field(default_factory=list)
    answered: list[str] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)


def build_ack(message: Any, code: str, text: str = "refused by the test HIS") -> str:
    """An ACK^R01 for ``message`` built with hl7apy, MLLP framed."""
    ack = Message("ACK", version="2.5.1", validation_level=VALIDATION_LEVEL.TOLERANT)
    ack.msh.msh_3 = message.msh.msh_5.to_er7() or "HIS"
    ack.msh.msh_4 = message.msh.msh_6.to_er7()
    ack.msh.msh_5 = message.msh.msh_3.to_er7()
    ack.msh.msh_6 = message.msh.msh_4.to_er7()
    ack.msh.msh_7 = dt.datetime.now().strftime("%Y%m%d%H%M%S")
    ack.msh.msh_9 = "ACK^R01^ACK"
    ack.msh.msh_10 = "ACK" + message.msh.msh_10.to_er7()[:17]
    ack.msh.msh_11 = "P"
    ack.msh.msh_12 = "2.5.1"
    ack.msh.msh_18 = "UNICODE UTF-8"
    ack.msa.msa_1 = code
    ack.msa.msa_2 = message.msh.msh_10.to_er7()
    if code != "AA":
        ack.msa.msa_3 = text
    return "\x0b" + ack.to_er7() + "\x1c\x0d"


class OruHandler(AbstractHandler):
    def __init__(self, message: str, state: HisState) -> None:
        super().__init__(message)
        self.state = state

    def reply(self) -> str:
        parsed = parse_message(
            self.incoming_message, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True
        )
        parsed.validate()
        control_id = parsed.msh.msh_10.to_er7()
        with self.state.lock:
            mode = self.state.mode
            self.state.received.append(Received(control_id, self.incoming_message, parsed))
        if mode == "die":
            raise ConnectionAbortedError("the test HIS dies without an answer")
        if mode == "hold":
            self.state.release.wait(120)
            mode = "AA"
        with self.state.lock:
            self.state.answered.append(control_id)
        return build_ack(parsed, mode, self.state.nak_text)


class MllpHis:
    """The listener; ``start()`` binds a free loopback port (``port``), ``stop()`` closes it."""

    def __init__(self) -> None:
        self.state = HisState()
        self.server = MLLPServer(
            "127.0.0.1", 0, {"ORU^R01^ORU_R01": (OruHandler, self.state)}, timeout=30
        )
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> MllpHis:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.state.release.set()
        self.server.shutdown()
        self.server.server_close()

    @property
    def received(self) -> list[Received]:
        with self.state.lock:
            return list(self.state.received)

    def unique(self) -> dict[str, Received]:
        """Messages by control ID: what the HIS files (a repeat of an ID is the same message)."""
        return {r.control_id: r for r in self.received}
