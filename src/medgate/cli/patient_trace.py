"""``medgate audit trace --patient ID``: what decision support told the doctors about a patient.

The patient ID given on the command line is turned into the same keyed hash the answers were
stored under (``audit.hash_key``); the ID itself is never written anywhere. For each answer:
when, which service and ``hookInstance``, every input with the Observation that gave it and when
that was measured, the calculator and rule versions, the cards and suggestions given, and what
the doctor did with them (feedback); then the patient's referrals with their history and the
number of audit-trail entries that name the patient.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from medgate.core.config import Settings
from medgate.core.logs import phi_hash
from medgate.store.cds_answers import Answer, CdsAnswerStore
from medgate.store.db import Index
from medgate.store.referrals import ReferralStore
from medgate.trust.audit import AuditLog


def _inputs(answer: Answer) -> str:
    lines = []
    for item in answer.inputs:
        used = "" if item.get("used", True) else " (ignored)"
        when = f" @ {item['effective']}" if item.get("effective") else ""
        lines.append(f"{item['input']}={item.get('value')} ← {item.get('source')}{when}{used}")
    return "\n".join(lines) or "-"


def _versions(answer: Answer) -> str:
    lines = []
    for v in answer.versions:
        digest = str(v.get("coefficients_sha256") or "")[:12]
        lines.append(f"{v.get('name')} {v.get('version')}" + (f" #{digest}" if digest else ""))
    return "\n".join(lines) or "-"


def _cards(answer: Answer) -> str:
    lines = []
    for card in answer.cards:
        lines.append(f"[{card.get('indicator')}] {card.get('summary')}")
        for suggestion in card.get("suggestions") or []:
            lines.append(f"  ↳ suggestion: {suggestion.get('label')}")
        for fb in answer.feedback:
            if fb.card_uuid == card.get("uuid"):
                reason = (fb.override_reason or {}).get("reason", {}).get("code")
                extra = f" ({reason})" if reason else ""
                made = f" → referral {fb.referral_id}" if fb.referral_id else ""
                lines.append(f"  ↳ feedback: {fb.outcome}{extra}{made}")
    return "\n".join(lines) or "-"


def patient_trace(settings: Settings, patient_id: str) -> dict[str, Any]:
    """The answers, referrals and audit-entry count for one patient (by keyed hash)."""
    key = phi_hash(patient_id, settings.audit.hash_key)
    index = Index(settings.storage.resolved_database_url())
    try:
        answers = CdsAnswerStore(index.engine).for_patient(key)
        referrals = ReferralStore(index.engine).find(patient_key=key)
    finally:
        index.close()
    log = AuditLog(settings.audit_path, settings.audit.hash_key)
    audit = [e for e in log.entries() if (e.get("details") or {}).get("patient") == key]
    return {"key": key, "answers": answers, "referrals": referrals, "audit": audit}


def print_patient_trace(trace: dict[str, Any], out: Console) -> None:
    answers: list[Answer] = trace["answers"]
    table = Table(title=f"decision support for patient {trace['key']}", show_lines=True)
    for column in ("time", "service / hookInstance", "inputs (provenance)", "versions", "cards"):
        table.add_column(column, overflow="fold")
    for a in answers:
        table.add_row(
            a.created_at.isoformat()[:19],
            f"{a.service}\n{a.hook}\n{a.hook_instance}",
            _inputs(a),
            _versions(a),
            _cards(a),
        )
    out.print(table)
    if trace["referrals"]:
        refs = Table(title="referrals", show_lines=True)
        for column in ("id", "site", "urgency", "status", "history"):
            refs.add_column(column, overflow="fold")
        for r in trace["referrals"]:
            history = "\n".join(
                f"{e.created_at.isoformat()[:19]} {e.status}" + (f": {e.note}" if e.note else "")
                for e in r.events
            )
            refs.add_row(r.id, r.site or "-", r.urgency, r.status, history)
        out.print(refs)
    events: dict[str, int] = {}
    for entry in trace["audit"]:
        events[entry["event"]] = events.get(entry["event"], 0) + 1
    summary = ", ".join(f"{n} {e}" for e, n in sorted(events.items())) or "none"
    out.print(f"audit trail entries naming this patient: {summary}")
