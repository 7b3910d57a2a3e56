"""The outbox sender's lease against a real, slow DICOM peer: a pass longer than the lease keeps
its claim (heartbeat), and a pass whose claim was taken stops sending."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from pydicom import dcmread
from pydicom.uid import generate_uid
from pynetdicom import AE, StoragePresentationContexts, evt
from pynetdicom.dimse_primitives import C_STORE

from medgate.cli.dicom_service import DicomService
from medgate.core.ports import free_port
from medgate.datasets.synthetic_series import ct_series
from medgate.store.db import Index
from medgate.store.schema import outbox

LEASE_S = 1.0  # heartbeat every 0.25 s
STORE_S = 0.8  # the peer's time per C-STORE: four objects outlast the lease three times


class SlowPacs:
    """A pynetdicom C-STORE SCP on loopback that takes ``STORE_S`` per object."""

    def __init__(self) -> None:
        self.port = free_port()
        self.received: list[str] = []
        self.first_store = threading.Event()
        ae = AE("SLOWPACS")
        ae.supported_contexts = StoragePresentationContexts
        server = ae.start_server(
            ("127.0.0.1", self.port),
            block=False,
            evt_handlers=[(evt.EVT_C_STORE, self._store)],
        )
        assert server is not None  # non-blocking: the server object is returned
        self.server = server

    def _store(self, event: evt.Event) -> int:
        self.first_store.set()
        time.sleep(STORE_S)
        request = event.request
        assert isinstance(request, C_STORE)
        self.received.append(str(request.AffectedSOPInstanceUID))
        return 0x0000


@pytest.fixture
def slow_pacs() -> Iterator[SlowPacs]:
    pacs = SlowPacs()
    yield pacs
    pacs.server.shutdown()


@pytest.fixture
def sender_service(
    service_factory: Callable[..., DicomService], slow_pacs: SlowPacs, tmp_path: Path
) -> DicomService:
    service = service_factory(
        pacs={"ae_title": "SLOWPACS", "host": "127.0.0.1", "port": slow_pacs.port},
        serving={"job_lease_seconds": LEASE_S},
    )
    assert service.sender is not None
    service.sender.stop()  # passes are driven by the test
    for n, path in enumerate(ct_series(tmp_path / "results", 4, rows=8, columns=8)):
        ds = dcmread(path)
        ds.SOPInstanceUID = generate_uid()
        stored = service.store.write_result(ds)
        service.index.outbox.add([(str(ds.SOPInstanceUID), "1.2.3", f"sr{n}", str(stored))])
    return service


def test_a_pass_longer_than_its_lease_keeps_its_claim(
    sender_service: DicomService, slow_pacs: SlowPacs
) -> None:
    sender = sender_service.sender
    assert sender is not None
    ids = [item.id for item in sender_service.index.outbox.due()]
    other = Index(sender_service.index.url, create=False)  # a second instance's sender
    refused: list[int] = []

    def second_sender() -> None:
        slow_pacs.first_store.wait(10)
        deadline = time.monotonic() + 3 * LEASE_S
        while time.monotonic() < deadline:  # long after the first lease would have run out
            refused.append(len(other.outbox.claim(ids, LEASE_S).ids))
            time.sleep(0.1)

    thread = threading.Thread(target=second_sender)
    thread.start()
    try:
        summary = sender.run_once()
    finally:
        thread.join(30)
        other.close()
    assert summary.sent == 4
    assert len(refused) >= 10 and set(refused) == {0}  # never claimable while it sent
    assert sorted(slow_pacs.received) == sorted(
        item.sop_instance_uid for item in sender_service.index.outbox.list()
    )  # each object once
    assert sender_service.index.outbox.delivery("1.2.3").state == "delivered"


def test_a_pass_whose_claim_was_taken_stops_sending(
    sender_service: DicomService, slow_pacs: SlowPacs
) -> None:
    sender = sender_service.sender
    assert sender is not None
    taken_until = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)

    def take_over() -> None:  # as another sender would after a stall: new lease ends
        slow_pacs.first_store.wait(10)
        with sender_service.index.engine.begin() as conn:
            conn.execute(
                outbox.update()
                .where(outbox.c.status == "pending")
                .values(next_attempt_at=taken_until)
            )

    thread = threading.Thread(target=take_over)
    thread.start()
    summary = sender.run_once()
    thread.join(30)
    assert 1 <= summary.sent < 4  # what was on the wire is recorded, the rest is not sent
    assert len(slow_pacs.received) == summary.sent
    left = sender_service.index.outbox.list(status="pending")
    assert len(left) == 4 - summary.sent
    with sender_service.index.engine.connect() as conn:
        untouched = conn.execute(
            sa.select(sa.func.count())
            .select_from(outbox)
            .where(outbox.c.status == "pending", outbox.c.attempts == 0)
        ).scalar_one()
    assert untouched == len(left)  # the taker's items: no attempt counted by the loser
