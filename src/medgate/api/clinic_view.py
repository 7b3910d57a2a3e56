"""What the primary-care doctor's pages show, gathered from the store for one viewer's site.

Patients come from the studies with results (the patient ID read from the study's own DICOM
header) and from referrals; they are joined to their CDS answers and referrals by the keyed hash
of the patient ID (``routes_referrals.patient_key``), so the page URL names a patient by that
hash, never by the ID. Urgent items come first: a critical or urgent AI result, an emergency or
urgent referral advice from decision support, or an open urgent referral.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from pydicom.errors import InvalidDicomError

from medgate.core.config import Settings
from medgate.core.logs import phi_hash
from medgate.delivery.sites import site_for_aes
from medgate.delivery.study_header import StudyHeader, read_study_header
from medgate.store.cds_answers import Answer, CdsAnswerStore
from medgate.store.deliveries import DeliveryStore
from medgate.store.referrals import Referral, ReferralStore

#: lower is more urgent
RANK = {
    "critical": 0,
    "emergency": 0,
    "stat": 0,
    "urgent": 1,
    "asap": 1,
    "soon": 2,
    "routine": 3,
    "none": 4,
}
OPEN_REFERRAL = ("requested", "accepted")


@dataclass
class StudyView:
    uid: str
    site: str | None
    header: StudyHeader
    priority: str | None
    verified: bool
    findings: list[dict[str, Any]]
    guidance: list[dict[str, Any]]
    issued: dt.datetime | None

    @property
    def date(self) -> str:
        d = self.header.study_date
        return f"{d[:4]}-{d[4:6]}-{d[6:]}" if len(d) == 8 else "-"


@dataclass
class PatientView:
    key: str
    patient_id: str
    name: str
    sex: str
    birth: str
    site: str | None
    studies: list[StudyView] = field(default_factory=list)
    referrals: list[Referral] = field(default_factory=list)
    answers: list[Answer] = field(default_factory=list)

    @property
    def url_key(self) -> str:
        return self.key.removeprefix("h:")

    @property
    def rank(self) -> int:
        ranks = [RANK.get(s.priority or "none", 4) for s in self.studies]
        ranks += [RANK.get(r.urgency, 4) for r in self.referrals if r.status in OPEN_REFERRAL]
        if self.answers:
            level = (self.answers[-1].scores.get("referral") or {}).get("level", "none")
            ranks.append(RANK.get(level, 4))
        return min(ranks, default=4)

    @property
    def latest_study(self) -> StudyView | None:
        return max(self.studies, key=lambda s: s.header.study_date, default=None)

    @property
    def latest_referral(self) -> Referral | None:
        return self.referrals[0] if self.referrals else None

    @property
    def priority(self) -> str:
        for name in ("critical", "urgent", "soon", "routine"):
            if RANK[name] == self.rank:
                return name
        return "none"


def _display_name(header: StudyHeader) -> str:
    ideographic = [n for n in header.names if n.representation == "I"]
    chosen = ideographic[0] if ideographic else (header.names[0] if header.names else None)
    if chosen is None:
        return ""
    joiner = "" if chosen.representation == "I" else " "
    return joiner.join(p for p in (chosen.family, chosen.given) if p)


def _studies(settings: Settings, store: DeliveryStore) -> list[StudyView]:
    rows = store.built_results()
    uids = [r["study_instance_uid"] for r in rows]
    aes = store.calling_aes(uids) if settings.sites and uids else {}
    reports = store.reports()
    out: list[StudyView] = []
    for row in rows:
        uid = row["study_instance_uid"]
        path = store.first_instance_path(uid)
        if path is None:
            continue
        try:
            header = read_study_header(path)
        except (OSError, InvalidDicomError):
            continue
        site = site_for_aes(settings, aes.get(uid, set())) if settings.sites else None
        report = reports.get(uid) or {}
        result = report.get("final_result") or row["result"]
        out.append(
            StudyView(
                uid=uid,
                site=site.name if site else None,
                header=header,
                priority=result.get("priority"),
                verified=report.get("status") == "final",
                findings=[f for f in result.get("findings", []) if f.get("present")],
                guidance=list(result.get("guidance", [])),
                issued=report.get("final_at") or report.get("issued_at") or row["updated_at"],
            )
        )
    return out


def _visible(site: str | None, viewer_site: str | None) -> bool:
    return viewer_site is None or site == viewer_site


class PatientHidden(Exception):
    """The patient's records belong to another site than the viewer's."""


def patients(settings: Settings, engine: Any, viewer_site: str | None) -> list[PatientView]:
    """The viewer's site's patients, most urgent first, then the latest study first."""
    by_key: dict[str, PatientView] = {}
    key_of = settings.audit.hash_key
    for study in _studies(settings, DeliveryStore(engine)):
        if not _visible(study.site, viewer_site):
            continue
        key = phi_hash(study.header.patient_id, key_of)
        view = by_key.get(key)
        if view is None:
            view = by_key[key] = PatientView(
                key=key,
                patient_id=study.header.patient_id,
                name=_display_name(study.header),
                sex=study.header.sex,
                birth=study.header.birth_date,
                site=study.site,
            )
        view.studies.append(study)
    for referral in ReferralStore(engine).find(site=viewer_site):
        view = by_key.get(referral.patient_key)
        if view is None:
            view = by_key[referral.patient_key] = PatientView(
                key=referral.patient_key,
                patient_id=referral.patient_id,
                name="",
                sex="",
                birth="",
                site=referral.site,
            )
        view.referrals.append(referral)
    answers = CdsAnswerStore(engine)
    for view in by_key.values():
        view.answers = [a for a in answers.for_patient(view.key) if _visible(a.site, viewer_site)]
    return sorted(
        by_key.values(),
        key=lambda p: (
            p.rank,
            -int((p.latest_study.header.study_date if p.latest_study else "0") or 0),
        ),
    )


def patient(
    settings: Settings, engine: Any, viewer_site: str | None, url_key: str
) -> PatientView | None:
    """One patient as the viewer may see them; None if unknown, PatientHidden if another
    site's."""
    key = "h:" + url_key
    mine = next((p for p in patients(settings, engine, viewer_site) if p.key == key), None)
    if mine is not None:
        return mine
    if viewer_site is not None and any(p.key == key for p in patients(settings, engine, None)):
        raise PatientHidden(url_key)
    return None


def score_series(answers: list[Answer]) -> list[dict[str, Any]]:
    """One row per CDS answer: when, NEWS2, qSOFA, China-PAR, next visit, referral level."""
    rows = []
    for a in answers:
        s = a.scores
        used = {i["input"]: i for i in a.inputs if i.get("used", True)}
        sbp, dbp = used.get("sbp_mmhg"), used.get("dbp_mmhg")
        rows.append(
            {
                "at": a.created_at,
                "news2": (s.get("news2") or {}).get("score"),
                "news2_risk": (s.get("news2") or {}).get("risk"),
                "qsofa": (s.get("qsofa") or {}).get("score"),
                "china_par": (s.get("china_par") or {}).get("risk_10y_percent"),
                "china_par_category": (s.get("china_par") or {}).get("category"),
                "next_visit_days": (s.get("follow_up") or {}).get("next_visit_days"),
                "referral": (s.get("referral") or {}).get("level", "none"),
                "reasons": (s.get("referral") or {}).get("reasons", []),
                "inputs": a.inputs,
                "sbp": sbp["value"] if sbp else None,
                "dbp": dbp["value"] if dbp else None,
                "bp_at": (sbp or dbp or {}).get("effective"),
            }
        )
    return rows
