"""Every referral change reaches the other side: the hospital's webhook (a real loopback HTTP
server) hears of a new referral, the clinic's mailbox (aiosmtpd) of its acceptance and of the
plan coming back down; a refused webhook is retried; no message names the patient."""

from __future__ import annotations

import datetime as dt
import email
import json
import threading
import time
from collections.abc import Callable, Iterator
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from fastapi.testclient import TestClient
from tests.support.referral_site import HOSPITAL, SITE_A, referral_settings

from medgate.api.app import create_app
from medgate.core.config import NotifyConfig, Settings
from medgate.core.ports import free_port
from medgate.delivery.referral_notify import ReferralNotifier
from medgate.store.referrals import ReferralStore
from medgate.trust.audit import AuditLog

PATIENT = "PID-NOTIFY-31"


class Webhook:
    """A loopback HTTP receiver; answers 500 to the first ``fail_first`` requests."""

    def __init__(self, fail_first: int = 0) -> None:
        self.received: list[tuple[dict[str, Any], str]] = []
        self.fail_first = fail_first
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if outer.fail_first > 0:
                    outer.fail_first -= 1
                    self.send_response(500)
                else:
                    outer.received.append(
                        (json.loads(body), self.headers.get("Idempotency-Key", ""))
                    )
                    self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/referrals"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Mailbox:
    """aiosmtpd's handler: keeps every message."""

    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def handle_DATA(self, server: object, session: object, envelope: Any) -> str:
        self.messages.append(email.message_from_bytes(envelope.content))
        return "250 OK"


@pytest.fixture
def peers() -> Iterator[tuple[Webhook, Mailbox, int]]:
    hook = Webhook(fail_first=1)
    box = Mailbox()
    port = free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield hook, box, port
    finally:
        controller.stop()
        hook.close()


@pytest.fixture
def notify_settings(
    settings_factory: Callable[..., Settings], peers: tuple[Webhook, Mailbox, int]
) -> Settings:
    hook, _, smtp_port = peers
    base = referral_settings(settings_factory)
    channels = {
        "channels": [
            {
                "name": "clinic-a-mail",
                "kind": "smtp",
                "site": "clinic-a",
                "role": "clinic",
                "smtp_port": smtp_port,
                "mail_to": ["doctor@clinic-a.example"],
            },
            {"name": "referral-desk", "kind": "webhook", "role": "hospital", "url": hook.url},
        ]
    }
    return base.model_copy(update={"notify": NotifyConfig.model_validate(channels)})


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_each_change_notifies_the_other_side(
    notify_settings: Settings, peers: tuple[Webhook, Mailbox, int]
) -> None:
    hook, box, _ = peers
    with TestClient(create_app(notify_settings)) as client:
        made = client.post(
            "/api/v1/referrals",
            json={"patient_id": PATIENT, "reason": "BP 190/120 mmHg twice", "urgency": "urgent"},
            headers=SITE_A,
        ).json()
        store = ReferralStore(client.app.state.index.engine)  # type: ignore[attr-defined]
        # the webhook refused the first try: the message waits for its retry
        wait_for(lambda: store.notifications_of(made["id"])[0]["attempts"] == 1, "first try")
        first = store.notifications_of(made["id"])[0]
        assert first["status"] == "pending" and "500" in first["last_error"]
        notifier = ReferralNotifier(
            notify_settings,
            client.app.state.index.engine,  # type: ignore[attr-defined]
            AuditLog(notify_settings.audit_path, notify_settings.audit.hash_key),
        )
        assert notifier.run_once(dt.datetime.now(dt.UTC) + dt.timedelta(seconds=5)) == 1
        assert len(hook.received) == 1
        body, key = hook.received[0]
        assert body["status"] == "requested" and body["to"] == "hospital"
        assert body["referral"] == made["id"] and body["urgency"] == "urgent"
        assert body["link"].endswith(f"/api/v1/referrals/{made['id']}")
        assert key == f"referral-{made['id']}-1-referral-desk"

        url = f"/api/v1/referrals/{made['id']}"
        client.patch(url, json={"status": "accepted"}, headers=HOSPITAL)
        wait_for(lambda: len(box.messages) == 1, "the acceptance mail")
        client.patch(
            url,
            json={"status": "completed", "follow_up_plan": "amlodipine 5 mg; BP weekly"},
            headers=HOSPITAL,
        )
        wait_for(lambda: len(box.messages) == 2, "the completion mail")
        subjects = [m["Subject"] for m in box.messages]
        assert subjects == [
            "[medgate] referral accepted (urgent)",
            "[medgate] referral completed: follow-up plan for the clinic (urgent)",
        ]
        assert box.messages[0]["To"] == "doctor@clinic-a.example"
        assert all(PATIENT not in m.as_string() for m in box.messages)
        assert PATIENT not in json.dumps([b for b, _ in hook.received])
        wait_for(
            lambda: all(n["status"] == "sent" for n in store.notifications_of(made["id"])),
            "all messages marked sent",
        )
    trail = [json.loads(line) for line in notify_settings.audit_path.read_text().splitlines()]
    notified = [e["details"] for e in trail if e["event"] == "referral-notified"]
    assert [(d["status"], d["channel"]) for d in notified] == [
        ("requested", "referral-desk"),
        ("accepted", "clinic-a-mail"),
        ("completed", "clinic-a-mail"),
    ]


def test_the_loop_retries_a_refused_message_without_another_change(
    notify_settings: Settings, peers: tuple[Webhook, Mailbox, int]
) -> None:
    """The loop ``medgate serve`` starts beside the delivery loop: a message the webhook refused
    reaches it after the back-off, though the referral does not change again."""
    hook, _, _ = peers
    with TestClient(create_app(notify_settings)) as client:
        made = client.post(
            "/api/v1/referrals",
            json={"patient_id": PATIENT, "reason": "HbA1c 11 %", "urgency": "routine"},
            headers=SITE_A,
        ).json()
        store = ReferralStore(client.app.state.index.engine)  # type: ignore[attr-defined]
        wait_for(lambda: store.notifications_of(made["id"])[0]["attempts"] == 1, "first try")
        assert hook.received == []
        loop = ReferralNotifier(
            notify_settings,
            client.app.state.index.engine,  # type: ignore[attr-defined]
            AuditLog(notify_settings.audit_path, notify_settings.audit.hash_key),
            interval_s=0.3,
        ).start()
        try:
            wait_for(lambda: len(hook.received) == 1, "the retried message", timeout=20.0)
        finally:
            loop.stop()
        assert hook.received[0][0]["referral"] == made["id"]
        assert store.notifications_of(made["id"])[0]["status"] == "sent"
