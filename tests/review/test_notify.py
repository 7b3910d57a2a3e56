"""Critical-result notification with real peers on loopback: an HTTP webhook receiver and an
aiosmtpd mail server. A critical study notifies within 10 s; no ack escalates after the
(test-short) limit; an ack stops it; kill -9 between notify and ack loses and doubles nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from email import message_from_bytes
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from tests.support.configs import settings_to_toml
from tests.support.review_gateway import REVIEW_TOKEN, Gateway
from tests.support.serving import wait_for

from medgate.core.ports import free_port
from medgate.review.notify import Notifier
from medgate.store.notifications import NotificationStore

AUTH = {"Authorization": f"Bearer {REVIEW_TOKEN}"}
#: 0.03 min = 1.8 s: long enough to ack in between, short enough for a test.
ESCALATE_MINUTES = 0.03


class Webhook:
    """A loopback HTTP server that records every POSTed JSON body and its headers."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, Any], dict[str, str]]] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                hook.received.append((json.loads(body), dict(self.headers)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Mailbox:
    """aiosmtpd's handler: keeps every message it is given."""

    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(message_from_bytes(envelope.content))
        return "250 OK"


@pytest.fixture
def peers() -> Iterator[tuple[Webhook, Mailbox, int]]:
    hook, box = Webhook(), Mailbox()
    port = free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield hook, box, port
    finally:
        controller.stop()
        hook.close()


@pytest.fixture
def notified(
    gateway_factory: Callable[..., Gateway], peers: tuple[Webhook, Mailbox, int]
) -> Gateway:
    hook, _, smtp_port = peers
    return gateway_factory(
        notify={
            "poll_seconds": 0.2,
            "channels": [
                {
                    "name": "reading-room",
                    "kind": "webhook",
                    "url": hook.url,
                    "role": "radiologist on duty",
                    "escalate_after_minutes": ESCALATE_MINUTES,
                },
                {
                    "name": "chief-mail",
                    "kind": "smtp",
                    "smtp_host": "127.0.0.1",
                    "smtp_port": smtp_port,
                    "mail_to": ["chief@hospital.example"],
                    "role": "chief radiologist",
                    "escalate_after_minutes": 60,
                },
            ],
        },
        review={"base_url": "http://medgate.example:8000"},
    )


def test_critical_study_notifies_then_escalates_without_ack(
    notified: Gateway, peers: tuple[Webhook, Mailbox, int]
) -> None:
    hook, box, _ = peers
    notifier = Notifier(notified.settings, notified.index, notified.audit).start()
    try:
        uid = notified.process(71)
        built = time.monotonic()
        wait_for(lambda: hook.received, 10, what="the webhook message")
        assert time.monotonic() - built < 10
        payload, headers = hook.received[0]
        assert payload["event"] == "critical-result" and payload["priority"] == "critical"
        assert payload["review_url"] == f"http://medgate.example:8000/review/{uid}"
        assert {f["label"] for f in payload["findings"]} >= {"pneumothorax"}
        assert headers["Idempotency-Key"] == payload["ack_url"].rsplit("/", 1)[1]
        source = notified.index.instances.of_study(uid)[0]
        import pydicom

        patient = pydicom.dcmread(source.path, stop_before_pixels=True)
        text = json.dumps(payload, ensure_ascii=False)
        assert str(patient.PatientName) not in text and str(patient.PatientID) not in text
        # nobody acknowledges: the next channel (mail) gets it after the limit, once
        wait_for(lambda: box.messages, 15, what="the escalation mail")
        mail = box.messages[0]
        assert mail["To"] == "chief@hospital.example"
        body = mail.get_payload(decode=True).decode()
        assert f"/review/{uid}" in body and str(patient.PatientName) not in str(mail) + body
        time.sleep(1.0)
        assert len(hook.received) == 1 and len(box.messages) == 1
        events = [e["event"] for e in notified.audit.trace(uid)]
        assert events.count("critical-notified") == 2 and "critical-escalated" in events
    finally:
        notifier.stop()


def test_ack_stops_escalation(notified: Gateway, peers: tuple[Webhook, Mailbox, int]) -> None:
    hook, box, _ = peers
    notifier = Notifier(notified.settings, notified.index, notified.audit).start()
    try:
        uid = notified.process(72)
        wait_for(lambda: hook.received, 10, what="the webhook message")
        (item,) = NotificationStore(notified.index.engine).of_study(uid)
        answer = notified.client.post(f"/api/v1/notifications/{item.id}/ack", headers=AUTH)
        assert answer.status_code == 200, answer.text
        assert answer.json()["status"] == "acknowledged"
        time.sleep(ESCALATE_MINUTES * 60 + 2.0)
        assert box.messages == [] and len(hook.received) == 1
        assert (
            notified.client.post("/api/v1/notifications/999/ack", headers=AUTH).status_code == 404
        )
        assert notified.client.post(f"/api/v1/notifications/{item.id}/ack").status_code == 401
        # an id beyond a 64-bit row id (found by the schema fuzz) is refused, not a 500
        huge = notified.client.post(f"/api/v1/notifications/{2**70}/ack", headers=AUTH)
        assert huge.status_code == 422, huge.text
    finally:
        notifier.stop()


def test_the_link_in_the_message_acknowledges(
    notified: Gateway, peers: tuple[Webhook, Mailbox, int]
) -> None:
    hook = peers[0]
    notifier = Notifier(notified.settings, notified.index, notified.audit)
    uid = notified.process(73)
    assert notifier.run_once() == 1
    path = hook.received[0][0]["ack_url"].replace("http://medgate.example:8000", "")
    page = notified.client.get(path + "?lang=en")
    assert page.status_code == 200 and "acknowledge" in page.text
    assert NotificationStore(notified.index.engine).of_study(uid)[0].acknowledged_at is None
    done = notified.client.post(path, data={"lang": "en"})
    assert done.status_code == 200 and 'id="acknowledged"' in done.text
    assert NotificationStore(notified.index.engine).of_study(uid)[0].acknowledged_at is not None
    assert notified.client.get("/review/ack/nonsense").status_code == 404


def _start_loop(config: Path) -> subprocess.Popen[bytes]:
    code = "import sys; from medgate.review.notify import run_forever; run_forever(sys.argv[1])"
    return subprocess.Popen([sys.executable, "-c", code, str(config)], env={**os.environ})


def test_kill_9_between_notify_and_ack_loses_and_doubles_nothing(
    notified: Gateway, peers: tuple[Webhook, Mailbox, int], tmp_path: Path
) -> None:
    hook, box, _ = peers
    config = tmp_path / "medgate.toml"
    config.write_text(settings_to_toml(notified.settings))
    uid = notified.process(74)  # critical, results built, nobody told yet
    loop = _start_loop(config)
    try:
        wait_for(lambda: hook.received, 20, what="the webhook message")
        store = NotificationStore(notified.index.engine)
        wait_for(lambda: store.of_study(uid)[0].status == "sent", 10, what="the sent mark")
        os.kill(loop.pid, signal.SIGKILL)  # between notify and ack
        loop.wait(timeout=10)
        loop = _start_loop(config)
        # the restarted loop does not announce the study again on the webhook, and the
        # escalation it owed still happens, once
        wait_for(lambda: box.messages, 25, what="the escalation after the restart")
        time.sleep(1.5)
        assert len(hook.received) == 1 and len(box.messages) == 1
        rows = NotificationStore(notified.index.engine).of_study(uid)
        assert [(r.channel, r.status) for r in rows] == [
            ("reading-room", "sent"),
            ("chief-mail", "sent"),
        ]
    finally:
        loop.send_signal(signal.SIGTERM)
        loop.wait(timeout=10)


def test_a_study_reviewed_before_the_loop_saw_it_is_not_announced(
    notified: Gateway, peers: tuple[Webhook, Mailbox, int]
) -> None:
    hook = peers[0]
    uid = notified.process(75)
    body = {
        "reviewer": {"name": "Wang^Li", "id": "rad-007"},
        "verdicts": [{"finding": "pneumothorax", "verdict": "confirmed"}],
    }
    assert notified.client.post(f"/api/v1/studies/{uid}/review", json=body, headers=AUTH).is_success
    assert Notifier(notified.settings, notified.index, notified.audit).run_once() == 0
    assert hook.received == [] and NotificationStore(notified.index.engine).of_study(uid) == []


def test_the_api_starts_the_loop_when_channels_are_configured(
    notified: Gateway, peers: tuple[Webhook, Mailbox, int]
) -> None:
    """Served by a real ASGI server (uvicorn, lifespan on), the app runs the notifier itself."""
    import uvicorn

    hook = peers[0]
    server = uvicorn.Server(
        uvicorn.Config(notified.client.app, host="127.0.0.1", port=free_port(), log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, 20, what="uvicorn to start")
        uid = notified.process(76)
        wait_for(lambda: hook.received, 10, what="the webhook message from the app's loop")
        assert hook.received[0][0]["study_instance_uid"] == uid
    finally:
        server.should_exit = True
        thread.join(timeout=15)
    app: Any = notified.client.app
    assert getattr(app.state, "notifier", None) is not None
