"""The delivery queue on SQLite and PostgreSQL: two senders sharing one database send each
message once; a final result waits behind its preliminary; queueing twice adds nothing."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from medgate.core.config import Settings
from medgate.delivery.enqueue import enqueue_final_result, queue_new_results
from medgate.delivery.site_delivery import SiteDelivery
from medgate.store.deliveries import DeliveryStore
from medgate.store.migrations import upgrade
from medgate.trust.audit import AuditLog

from .delivery_support import add_study
from .his_listener import MllpHis


@pytest.fixture
def shared(database_url: str) -> Iterator[sa.engine.Engine]:
    engine = sa.create_engine(database_url)
    upgrade(engine)
    yield engine
    engine.dispose()


def test_two_senders_on_one_database_send_each_message_once(
    sites_settings: Settings, shared: sa.engine.Engine, audit: AuditLog, his_a: MllpHis
) -> None:
    uids = [add_study(shared, sites_settings, calling_ae="CLINIC_A_CT") for _ in range(6)]
    assert queue_new_results(sites_settings, DeliveryStore(shared)) == 6
    engines = [sa.create_engine(shared.url) for _ in range(2)]
    senders = [SiteDelivery(sites_settings, e, audit, batch=2) for e in engines]
    start = threading.Barrier(2)

    def drain(sender: SiteDelivery) -> None:
        start.wait()
        for _ in range(10):
            sender.run_once()

    threads = [threading.Thread(target=drain, args=(s,)) for s in senders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    for engine in engines:
        engine.dispose()
    rows = DeliveryStore(shared).entries()
    assert len(rows) == 6 and {r["status"] for r in rows} == {"delivered"}
    assert all(r["attempts"] == 1 for r in rows)
    assert len(his_a.received) == 6 and len(his_a.unique()) == 6  # nothing sent twice
    assert {r["study_instance_uid"] for r in rows} == set(uids)


def test_final_waits_behind_its_preliminary_and_queueing_is_idempotent(
    sites_settings: Settings, shared: sa.engine.Engine, audit: AuditLog, his_a: MllpHis
) -> None:
    uid = add_study(shared, sites_settings, calling_ae="CLINIC_A_CT")
    store = DeliveryStore(shared)
    assert queue_new_results(sites_settings, store) == 1
    assert queue_new_results(sites_settings, store) == 0
    his_a.state.mode = "die"  # the preliminary cannot get through for now
    sender = SiteDelivery(sites_settings, shared, audit)
    sender.run_once()
    [final_id] = enqueue_final_result(sites_settings, shared, uid, verified_by="dr-li")
    assert enqueue_final_result(sites_settings, shared, uid) == []
    claimed = store.claim_due(limit=10, lease_seconds=5)
    assert [c.result_status for c in claimed] in ([], ["P"])  # never the F first
    for item in claimed:
        store.retry(item.id, 0.0, "released by the test", refused=False)
    his_a.state.mode = "AA"
    for _ in range(40):
        sender.run_once()
        if len(store.entries(status="delivered")) == 2:
            break
    assert [r.control_id for r in his_a.unique().values()][-1] == final_id
    sent_order = [r.control_id for r in his_a.received if r.control_id in his_a.unique()]
    assert sent_order.index(final_id) == len(sent_order) - 1
    with pytest.raises(LookupError):
        enqueue_final_result(sites_settings, shared, "1.2.3.999")
