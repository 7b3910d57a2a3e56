"""Referral notifications: tell the other side of a referral that it changed.

Each change of a referral queues one message per channel of the side that did not make it
(``store.referrals``, same transaction as the change). ``ReferralNotifier.run_once`` claims the
due ones (lease, so two gateways never send one twice at once) and sends them: ``webhook``
POSTs the JSON with ``Idempotency-Key`` (referral, change, channel: a repeat after a crash can be
dropped by the receiver), ``smtp`` mails a short text with the same key as Message-ID. A failed
send is retried with back-off and is dead after ``notify.max_attempts``. Messages carry no
patient identifier: the referral id, its status and urgency, the site, and a link.

The API runs a pass in the background after every change (``kick``), so a message leaves within
moments of the change; a message that failed is retried by the next pass (the next change, or
a loop started with ``start``).
"""

from __future__ import annotations

import datetime as dt
import logging
import smtplib
from email.message import EmailMessage
from typing import Any

import httpx
from sqlalchemy.engine import Engine

from medgate.core.config import NotifyChannelConfig, Settings
from medgate.core.pass_loop import PassLoop
from medgate.store.engine import utcnow
from medgate.store.referrals import QueuedNotification, ReferralStore
from medgate.trust.audit import AuditLog

log = logging.getLogger("medgate.referral_notify")
LEASE_SECONDS = 30.0

SUBJECT = {
    "requested": "new referral",
    "accepted": "referral accepted",
    "rejected": "referral rejected",
    "completed": "referral completed: follow-up plan for the clinic",
    "cancelled": "referral withdrawn",
}


def _base_url(settings: Settings) -> str:
    if settings.review.base_url:
        return settings.review.base_url.rstrip("/")
    return f"http://{settings.api.host}:{settings.api.port}"


def message_key(item: QueuedNotification) -> str:
    return f"referral-{item.referral_id}-{item.seq}-{item.channel}"


class ReferralNotifier(PassLoop):
    """Sends queued referral messages; ``run_once`` is one pass, ``kick`` one in the background,
    ``start`` a loop (every ``notify.poll_seconds``, or ``interval_s``)."""

    thread_name = "medgate-referral-notify"

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        audit: AuditLog,
        *,
        interval_s: float | None = None,
    ) -> None:
        self.settings = settings
        self.store = ReferralStore(engine)
        self.audit = audit
        self.interval = interval_s or settings.notify.poll_seconds
        super().__init__()

    def run_once(self, now: dt.datetime | None = None) -> int:
        """Send every due message once; returns how many were sent."""
        by_name = {c.name: c for c in self.settings.notify.channels}
        sent = 0
        for item in self.store.claim_notifications(LEASE_SECONDS, now):
            channel = by_name.get(item.channel)
            if channel is None:
                self.store.notification_failed(
                    item.id, f"channel {item.channel!r} is no longer configured", None
                )
                continue
            try:
                self._deliver(channel, item)
            except Exception as exc:  # any failure of the peer: retried, then dead
                attempts = item.attempts + 1
                retry = None
                if attempts < self.settings.notify.max_attempts:
                    retry = utcnow() + dt.timedelta(seconds=min(60.0, 2.0**attempts))
                self.store.notification_failed(item.id, f"{type(exc).__name__}: {exc}", retry)
                log.warning("referral message %d on %s failed: %s", item.id, item.channel, exc)
                continue
            self.store.notification_sent(item.id)
            sent += 1
            self.audit.record(
                "referral-notified",
                actor="medgate referral-notify",
                details={
                    "referral": item.referral_id,
                    "change": item.seq,
                    "status": item.payload.get("status"),
                    "channel": channel.name,
                    "kind": channel.kind,
                    "to": item.payload.get("to"),
                },
            )
        return sent

    def _message(self, item: QueuedNotification) -> dict[str, Any]:
        base = _base_url(self.settings)
        link = (
            f"{base}/clinic"
            if item.payload.get("to") == "clinic"
            else f"{base}/api/v1/referrals/{item.referral_id}"
        )
        return {**item.payload, "link": link}

    def _deliver(self, channel: NotifyChannelConfig, item: QueuedNotification) -> None:
        timeout = self.settings.notify.send_timeout_s
        body = self._message(item)
        if channel.kind == "webhook":
            response = httpx.post(
                channel.url,
                json=body,
                headers={"Idempotency-Key": message_key(item)},
                timeout=timeout,
            )
            response.raise_for_status()
            return
        message = EmailMessage()
        subject = SUBJECT.get(str(body.get("status")), "referral changed")
        message["Subject"] = f"[medgate] {subject} ({body.get('urgency')})"
        message["From"] = channel.mail_from
        message["To"] = ", ".join(channel.mail_to)
        message["Message-ID"] = f"<{message_key(item)}@medgate>"
        message.set_content(
            "\n".join(
                [
                    f"Referral {body['referral']} from site {body.get('site') or '-'} is now "
                    f"{body.get('status')} (urgency {body.get('urgency')}).",
                    f"Open: {body['link']}",
                ]
            )
        )
        with smtplib.SMTP(channel.smtp_host, channel.smtp_port, timeout=timeout) as smtp:
            smtp.send_message(message)
