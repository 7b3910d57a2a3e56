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
from typing import Any

from sqlalchemy.engine import Engine

from medgate.core.config import NotifyChannelConfig, Settings
from medgate.core.pass_loop import PassLoop
from medgate.delivery.channels import links_base, send_claimed, send_on_channel
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
        claimed = self.store.claim_notifications(LEASE_SECONDS, now)
        return send_claimed(self.settings, claimed, self._deliver, self._failed, self._sent)

    def _failed(self, item: QueuedNotification, error: str, retry_at: dt.datetime | None) -> None:
        self.store.notification_failed(item.id, error, retry_at)

    def _sent(self, item: QueuedNotification, channel: NotifyChannelConfig) -> None:
        self.store.notification_sent(item.id)
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

    def _message(self, item: QueuedNotification) -> dict[str, Any]:
        base = links_base(self.settings)
        link = (
            f"{base}/clinic"
            if item.payload.get("to") == "clinic"
            else f"{base}/api/v1/referrals/{item.referral_id}"
        )
        return {**item.payload, "link": link}

    def _deliver(self, channel: NotifyChannelConfig, item: QueuedNotification) -> None:
        body = self._message(item)
        subject = SUBJECT.get(str(body.get("status")), "referral changed")
        text = [
            f"Referral {body['referral']} from site {body.get('site') or '-'} is now "
            f"{body.get('status')} (urgency {body.get('urgency')}).",
            f"Open: {body['link']}",
        ]
        key = message_key(item)
        send_on_channel(
            self.settings, channel, key, body, f"{subject} ({body.get('urgency')})", text
        )
