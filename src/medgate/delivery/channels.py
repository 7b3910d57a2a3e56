"""Sending one message on a notification channel (``[[notify.channels]]``): a webhook or a mail.

Critical-result alerts (``review.notify``) and referral changes (``delivery.referral_notify``)
go out the same way: ``webhook`` POSTs the JSON body with an ``Idempotency-Key`` header, ``smtp``
mails a short text whose Message-ID carries the same key, so a receiver can drop a repeat after
a crash. A failed send is retried with back-off (2^attempts seconds, at most a minute) until
``notify.max_attempts``.
"""

from __future__ import annotations

import datetime as dt
import logging
import smtplib
from collections.abc import Callable, Iterable, Sequence
from email.message import EmailMessage
from typing import Any, Protocol, TypeVar

import httpx

from medgate.core.config import NotifyChannelConfig, Settings
from medgate.store.engine import utcnow

log = logging.getLogger(__name__)


class QueuedMessage(Protocol):
    """A claimed row of a notification queue (``notifications``, ``referral_notifications``)."""

    @property
    def id(self) -> int: ...

    @property
    def channel(self) -> str: ...

    @property
    def attempts(self) -> int: ...


Message = TypeVar("Message", bound=QueuedMessage)


def links_base(settings: Settings) -> str:
    """Where links in messages point: ``review.base_url``, else the API's own address."""
    if settings.review.base_url:
        return settings.review.base_url.rstrip("/")
    return f"http://{settings.api.host}:{settings.api.port}"


def retry_time(settings: Settings, attempts: int) -> dt.datetime | None:
    """When a message that failed ``attempts`` times is due again; None: it is dead."""
    if attempts >= settings.notify.max_attempts:
        return None
    return utcnow() + dt.timedelta(seconds=min(60.0, 2.0**attempts))


def send_on_channel(
    settings: Settings,
    channel: NotifyChannelConfig,
    key: str,
    body: dict[str, Any],
    subject: str,
    text: Sequence[str],
) -> None:
    """Send ``body`` to a webhook, or ``subject`` and the ``text`` lines by mail; raises on a
    failure (connection, timeout, an HTTP error status, an SMTP refusal)."""
    timeout = settings.notify.send_timeout_s
    if channel.kind == "webhook":
        response = httpx.post(
            channel.url, json=body, headers={"Idempotency-Key": key}, timeout=timeout
        )
        response.raise_for_status()
        return
    message = EmailMessage()
    message["Subject"] = f"[medgate] {subject}"
    message["From"] = channel.mail_from
    message["To"] = ", ".join(channel.mail_to)
    message["Message-ID"] = f"<{key}@medgate>"
    message.set_content("\n".join(text))
    with smtplib.SMTP(channel.smtp_host, channel.smtp_port, timeout=timeout) as smtp:
        smtp.send_message(message)


def send_claimed(
    settings: Settings,
    claimed: Iterable[Message],
    deliver: Callable[[NotifyChannelConfig, Message], None],
    failed: Callable[[Message, str, dt.datetime | None], None],
    sent: Callable[[Message, NotifyChannelConfig], None],
) -> int:
    """Send each claimed message on its channel; returns how many went out.

    ``sent(message, channel)`` records one that went out; ``failed(message, error, retry_at)``
    one that did not: its channel is no longer configured (``retry_at`` None: dead), or the
    send raised (retried at ``retry_time``, dead after ``notify.max_attempts``)."""
    by_name = {c.name: c for c in settings.notify.channels}
    count = 0
    for message in claimed:
        channel = by_name.get(message.channel)
        if channel is None:
            failed(message, f"channel {message.channel!r} is no longer configured", None)
            continue
        try:
            deliver(channel, message)
        except Exception as exc:  # any failure of the peer: retried, then dead
            error = f"{type(exc).__name__}: {exc}"
            failed(message, error, retry_time(settings, message.attempts + 1))
            log.warning("message %d on %s failed: %s", message.id, channel.name, exc)
            continue
        sent(message, channel)
        count += 1
    return count
