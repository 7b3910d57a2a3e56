"""The API's audit log, opened on first use and kept on the app for every router that records.

``AuditLog`` is safe across threads and processes, so decision support, CDS Hooks traces,
referrals and the clinic pages all append through this one instance per app.
"""

from __future__ import annotations

from fastapi import Request

from medgate.trust.audit import AuditLog, open_audit


def app_audit(request: Request) -> AuditLog:
    """The audit log configured in the app's settings (``audit.path``, ``audit.hash_key``)."""
    log: AuditLog | None = getattr(request.app.state, "audit_log", None)
    if log is None:
        log = open_audit(request.app.state.settings)
        request.app.state.audit_log = log
    return log
