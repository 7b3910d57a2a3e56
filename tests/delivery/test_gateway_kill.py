"""kill -9 of the whole ``medgate serve`` (receiver, worker, API, local Ray, delivery loop) while
a site's HIS holds a result message unanswered: after the restart every message reaches the HIS,
and the HIS files exactly one of each (the message in flight comes again, byte for byte, under
the same control ID)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa
from tests.support.configs import settings_to_toml
from tests.support.delivery_studies import add_study
from tests.support.gateway_process import GatewayProcess
from tests.support.his_listener import MllpHis

from medgate.core.config import Settings
from medgate.store.deliveries import DeliveryStore


def _wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_kill_9_of_medgate_serve_mid_send(
    sites_settings: Settings, engine: sa.engine.Engine, his_a: MllpHis, tmp_path: Path
) -> None:
    models = tmp_path / "no-models"  # delivery is under test: no model to load
    models.mkdir()
    settings = sites_settings.model_copy(
        update={
            "models": sites_settings.models.model_copy(update={"path": models}),
            "delivery": sites_settings.delivery.model_copy(
                update={
                    "hl7": sites_settings.delivery.hl7.model_copy(
                        update={"lease_seconds": 3.0, "poll_seconds": 0.2, "ack_timeout_s": 120}
                    )
                }
            ),
        }
    )
    config = tmp_path / "medgate.toml"
    config.write_text(settings_to_toml(settings))
    uids = [add_study(engine, settings, calling_ae="CLINIC_A_CT") for _ in range(3)]
    store = DeliveryStore(engine)
    gateway = GatewayProcess(config, f"http://127.0.0.1:{settings.api.port}", tmp_path)

    his_a.state.mode = "hold"
    gateway.start()
    try:
        _wait(lambda: len(his_a.received) == 1, 120, "the first ORU at the HIS")
        survivors = gateway.kill9()
    finally:
        gateway.kill9()  # a no-op unless the wait failed
    assert survivors == []
    in_flight = his_a.received[0]
    assert {r["status"] for r in store.entries()} == {"pending"}
    his_a.state.mode = "AA"
    his_a.state.release.set()

    gateway.start()
    try:
        _wait(
            lambda: [r["status"] for r in store.entries()] == ["delivered"] * 3,
            120,
            "every message delivered after the restart",
        )
    finally:
        assert gateway.stop() == 0
    filed = his_a.unique()
    assert set(filed) == {r["message_id"] for r in store.entries()}
    studies = {
        m.message.oru_r01_patient_result.oru_r01_order_observation.obr.obr_3.to_er7().split("^")[0]
        for m in filed.values()
    }
    assert studies == set(uids)
    repeats = [r for r in his_a.received if r.control_id == in_flight.control_id]
    assert len(repeats) == 2 and repeats[0].er7 == repeats[1].er7
    assert len(his_a.received) == 4
