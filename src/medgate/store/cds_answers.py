"""Every decision-support answer, kept so that one can later ask what the doctor was told.

One ``cds_answers`` row per answer: the patient only as a keyed hash (``core.logs.phi_hash``),
the CDS Hooks ``hookInstance``, the inputs' provenance (which Observation gave which value, and
when it was measured), the calculator and rule versions, and the scores; one ``cds_cards`` row
per card given, exactly as sent (suggestions included); one ``cds_feedback`` row per outcome the
EHR reported for a card (accepted suggestions, override reason). The answer and its cards are
written in one transaction: a card is never stored without the answer it belongs to.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from medgate.store.engine import utcnow
from medgate.store.rows import from_row
from medgate.store.schema import cds_answers, cds_cards, cds_feedback


@dataclass(frozen=True)
class AnswerContent:
    """What an answer was about and how it was reached: the columns of ``cds_answers``."""

    patient_key: str
    site: str | None
    service: str
    hook: str
    hook_instance: str
    inputs: list[dict[str, Any]]
    versions: list[dict[str, Any]]
    scores: dict[str, Any]


@dataclass(frozen=True)
class NewAnswer(AnswerContent):
    """An answer to store, with the cards it gave."""

    cards: Sequence[dict[str, Any]]


@dataclass(frozen=True)
class Feedback:
    card_uuid: str
    outcome: str
    accepted_suggestions: list[str]
    override_reason: dict[str, Any] | None
    outcome_at: dt.datetime | None
    referral_id: str | None
    created_at: dt.datetime


@dataclass(frozen=True)
class Answer(AnswerContent):
    """A stored answer, with its cards and the feedback the EHR gave on them."""

    id: str
    created_at: dt.datetime
    cards: list[dict[str, Any]] = field(default_factory=list)
    feedback: list[Feedback] = field(default_factory=list)


class CdsAnswerStore:
    """Reads and writes traced CDS answers through one SQLAlchemy engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def record(self, new: NewAnswer) -> str:
        """Store one answer and its cards; returns the answer's id."""
        answer_id = uuid.uuid4().hex
        with self.engine.begin() as conn:
            conn.execute(
                cds_answers.insert().values(
                    id=answer_id,
                    patient_key=new.patient_key,
                    site=new.site,
                    service=new.service,
                    hook=new.hook,
                    hook_instance=new.hook_instance[:64],
                    inputs_json=json.dumps(new.inputs, ensure_ascii=False, sort_keys=True),
                    versions_json=json.dumps(new.versions, ensure_ascii=False, sort_keys=True),
                    scores_json=json.dumps(new.scores, ensure_ascii=False, sort_keys=True),
                    created_at=utcnow(),
                )
            )
            for position, card in enumerate(new.cards):
                conn.execute(
                    cds_cards.insert().values(
                        card_uuid=str(card["uuid"]),
                        answer_id=answer_id,
                        position=position,
                        card_json=json.dumps(card, ensure_ascii=False, sort_keys=True),
                    )
                )
        return answer_id

    def card(self, card_uuid: str) -> tuple[Answer, dict[str, Any]] | None:
        """The answer that gave a card, and the card as sent; None for an unknown card."""
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(cds_cards.c.answer_id, cds_cards.c.card_json).where(
                    cds_cards.c.card_uuid == card_uuid
                )
            ).first()
        if row is None:
            return None
        answer = self.get(row.answer_id)
        assert answer is not None
        return answer, json.loads(row.card_json)

    def add_feedback(
        self,
        answer_id: str,
        card_uuid: str,
        outcome: str,
        accepted_suggestions: list[str],
        override_reason: dict[str, Any] | None,
        outcome_at: dt.datetime | None,
        referral_id: str | None,
    ) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                cds_feedback.insert().values(
                    card_uuid=card_uuid,
                    answer_id=answer_id,
                    outcome=outcome,
                    accepted_suggestions=json.dumps(accepted_suggestions),
                    override_reason=(
                        json.dumps(override_reason, ensure_ascii=False)
                        if override_reason is not None
                        else None
                    ),
                    outcome_at=outcome_at,
                    referral_id=referral_id,
                    created_at=utcnow(),
                )
            )

    def get(self, answer_id: str) -> Answer | None:
        found = self._load(sa.select(cds_answers).where(cds_answers.c.id == answer_id))
        return found[0] if found else None

    def for_patient(self, patient_key: str) -> list[Answer]:
        """Every answer about one patient, oldest first, with its cards and feedback."""
        return self._load(
            sa.select(cds_answers)
            .where(cds_answers.c.patient_key == patient_key)
            .order_by(cds_answers.c.created_at, cds_answers.c.id)
        )

    def _load(self, query: sa.Select[Any]) -> list[Answer]:
        with self.engine.connect() as conn:
            rows = list(conn.execute(query).mappings())
            ids = [r["id"] for r in rows]
            cards: dict[str, list[dict[str, Any]]] = {i: [] for i in ids}
            feedback: dict[str, list[Feedback]] = {i: [] for i in ids}
            if ids:
                for c in conn.execute(
                    sa.select(cds_cards)
                    .where(cds_cards.c.answer_id.in_(ids))
                    .order_by(cds_cards.c.position)
                ):
                    cards[c.answer_id].append(json.loads(c.card_json))
                for f in conn.execute(
                    sa.select(cds_feedback)
                    .where(cds_feedback.c.answer_id.in_(ids))
                    .order_by(cds_feedback.c.id)
                ).mappings():
                    reason = f["override_reason"]
                    feedback[f["answer_id"]].append(
                        from_row(
                            Feedback,
                            f,
                            accepted_suggestions=json.loads(f["accepted_suggestions"]),
                            override_reason=json.loads(reason) if reason else None,
                        )
                    )
        return [
            from_row(
                Answer,
                r,
                inputs=json.loads(r["inputs_json"]),
                versions=json.loads(r["versions_json"]),
                scores=json.loads(r["scores_json"]),
                cards=cards[r["id"]],
                feedback=feedback[r["id"]],
            )
            for r in rows
        ]
