"""Critical-result notification: tell the site's radiologist within seconds, escalate if nobody
acknowledges.

``Notifier.run_once`` does three things, each from the database so that it survives restarts:

1. notice: a study triaged ``critical`` whose results are built and that has no message yet gets
   one for the first channel serving its site (``[[notify.channels]]``, in the order of the
   site's ``notify_channels`` when it names them, else in the configured order);
2. send: due messages are claimed (lease) and sent: ``webhook`` POSTs the JSON (header
   ``Idempotency-Key`` = the message token, so a receiver can drop a repeat), ``smtp`` mails it
   (Message-ID from the token); failures are retried with back-off, and after
   ``notify.max_attempts`` the message is dead and escalates at once;
3. escalate: a message sent ``escalate_after_minutes`` ago whose study nobody acknowledged
   creates the message of the next channel.

A message carries no patient name or ID: the study's priority and (as the channel allows in
``fields``) its AI findings, modality, site and arrival time, the link to ``/review/{study_uid}``
and the acknowledgement link. Sending is at-least-once: a kill -9 after the channel accepted a
message but before it was marked sent repeats that one message on restart, with the same
Idempotency-Key / Message-ID.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from typing import Any

from medgate.core.config import NotifyChannelConfig, Settings
from medgate.core.logs import phi_hash
from medgate.core.pass_loop import PassLoop
from medgate.delivery.channels import links_base, send_claimed, send_on_channel
from medgate.delivery.sites import site_for_aes
from medgate.review.board import present_findings
from medgate.store.db import Index
from medgate.store.engine import utcnow
from medgate.store.notifications import Notification, NotificationStore
from medgate.trust.audit import AuditLog

log = logging.getLogger("medgate.notify")

LEASE_SECONDS = 30.0


def message_token(study_uid: str, channel: str, key: str | None) -> str:
    """The message's deterministic token (acknowledgement link, idempotency key)."""
    return hashlib.sha256(f"{key or ''}\x1f{study_uid}\x1f{channel}".encode()).hexdigest()[:40]


def channels_for(settings: Settings, site_name: str) -> list[NotifyChannelConfig]:
    """The channels serving a site, in escalation order."""
    by_name = {c.name: c for c in settings.notify.channels}
    site = next((s for s in settings.sites if s.name == site_name), None)
    if site is not None and site.notify_channels:
        return [by_name[n] for n in site.notify_channels if n in by_name]
    return [c for c in settings.notify.channels if c.site in ("", site_name)]


class Notifier(PassLoop):
    """The notification loop (``start``/``stop``), or one pass (``run_once``)."""

    thread_name = "medgate-notify"

    def __init__(self, settings: Settings, index: Index, audit: AuditLog) -> None:
        self.settings = settings
        self.index = index
        self.audit = audit
        self.store = NotificationStore(index.engine)
        self.interval = settings.notify.poll_seconds
        super().__init__()

    # ------------------------------------------------------------------ one pass
    def run_once(self, now: dt.datetime | None = None) -> int:
        """Notice, send and escalate once; how many messages were sent."""
        now = now or utcnow()
        self._notice(now)
        sent = self._send_due(now)
        self._escalate(now)
        return sent

    def _site(self, study_uid: str) -> str:
        records = self.index.instances.of_study(study_uid)
        site = site_for_aes(self.settings, [r.calling_ae or "" for r in records])
        return site.name if site is not None else ""

    def _payload(
        self, study_uid: str, site: str, channel: NotifyChannelConfig, token: str
    ) -> dict[str, Any]:
        row = self.index.studies.get(study_uid)
        url = links_base(self.settings)
        payload: dict[str, Any] = {
            "event": "critical-result",
            "study_instance_uid": study_uid,
            "review_url": f"{url}/review/{study_uid}",
            "ack_url": f"{url}/review/ack/{token}",
            "role": channel.role,
            "channel": channel.name,
        }
        allowed = set(channel.fields)
        if "priority" in allowed:
            payload["priority"] = row.priority if row is not None else "critical"
        if "findings" in allowed and row is not None:
            payload["findings"] = [
                {"label": f["label"], "probability": round(float(f["probability"]), 3)}
                for f in present_findings(row.result)
            ]
        if "modality" in allowed:
            payload["modality"] = "/".join(
                sorted({r.modality for r in self.index.instances.of_study(study_uid) if r.modality})
            )
        if "site" in allowed:
            payload["site"] = site
        if "received_at" in allowed and row is not None:
            payload["received_at"] = row.received_at.isoformat()
        return payload

    def _notice(self, now: dt.datetime) -> None:
        # a study older than a day when the loop first sees it (channels just configured, a
        # long outage) is no longer a "within seconds" alert: it waits on the worklist instead
        since = now - dt.timedelta(days=1)
        for study_uid in self.store.critical_without_notification(since):
            site = self._site(study_uid)
            channels = channels_for(self.settings, site)
            if not channels:
                continue
            first = channels[0]
            token = message_token(study_uid, first.name, self.settings.audit.hash_key)
            payload = self._payload(study_uid, site, first, token)
            if self.store.create(study_uid, first.name, 0, token, payload, now):
                log.info("critical study %s: notifying %s", phi_hash(study_uid), first.name)

    def _send_due(self, now: dt.datetime) -> int:
        claimed = self.store.claim_due(LEASE_SECONDS, now)
        return send_claimed(self.settings, claimed, self._deliver, self._failed, self._sent)

    def _failed(self, item: Notification, error: str, retry_at: dt.datetime | None) -> None:
        self.store.failed(item.id, error, retry_at, utcnow())

    def _sent(self, item: Notification, channel: NotifyChannelConfig) -> None:
        done = utcnow()
        self.store.sent(item.id, done + dt.timedelta(minutes=channel.escalate_after_minutes), done)
        self.audit.record(
            "critical-notified",
            actor="medgate notify",
            study_uid=item.study_instance_uid,
            details={"channel": channel.name, "kind": channel.kind, "step": item.step},
        )

    def _deliver(self, channel: NotifyChannelConfig, item: Notification) -> None:
        lines = [f"A study was triaged CRITICAL by medgate's AI ({channel.role})."]
        for finding in item.payload.get("findings", []):
            lines.append(f"- {finding['label']}: p={finding['probability']}")
        lines += [
            f"Review: {item.payload['review_url']}",
            f"Acknowledge: {item.payload['ack_url']}",
        ]
        subject = f"critical result: {item.payload.get('priority', 'critical')}"
        send_on_channel(self.settings, channel, item.token, item.payload, subject, lines)

    def _escalate(self, now: dt.datetime) -> None:
        for item in self.store.escalations_due(now):
            site = str(item.payload.get("site") or self._site(item.study_instance_uid))
            channels = channels_for(self.settings, site)
            names = [c.name for c in channels]
            position = names.index(item.channel) if item.channel in names else len(names)
            following = channels[position + 1] if position + 1 < len(channels) else None
            if following is None:
                self.store.escalate(item, None, "", {}, now)
                continue
            token = message_token(
                item.study_instance_uid, following.name, self.settings.audit.hash_key
            )
            payload = self._payload(item.study_instance_uid, site, following, token)
            payload["escalated_from"] = item.channel
            if self.store.escalate(item, following.name, token, payload, now):
                self.audit.record(
                    "critical-escalated",
                    actor="medgate notify",
                    study_uid=item.study_instance_uid,
                    details={"from": item.channel, "to": following.name},
                )


def run_forever(config_path: str | None = None) -> None:
    """Run the loop in this process until it is killed (tests start it as a subprocess)."""
    from medgate.core.config import load_settings
    from medgate.trust.audit import open_audit

    settings = load_settings(config_path)
    index = Index(settings.storage.resolved_database_url())
    notifier = Notifier(settings, index, open_audit(settings))
    notifier.loop()
