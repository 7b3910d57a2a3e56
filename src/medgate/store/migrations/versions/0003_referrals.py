"""Two-way referral and traced decision support.

``referrals``: one row per referral (ServiceRequest + Task), its status and the specialist's
follow-up plan; ``referral_events``: its history, one row per change, with the notification that
change sends to the other side; ``referral_notifications``: that message per channel, queued in
the same transaction and sent (with retries) by ``delivery.referral_notify``. ``cds_answers`` /
``cds_cards`` / ``cds_feedback``: every decision support answer (pseudonymous patient key,
inputs' provenance, calculator versions), the cards it gave, and what the doctor did with them.

Revision ID: 0003_referrals
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_referrals"
down_revision = "0002"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "referrals",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("site", sa.String(64), index=True),
        sa.Column("patient_id", sa.String(128), nullable=False),
        sa.Column("patient_key", sa.String(32), nullable=False, index=True),
        sa.Column("status", sa.String(16), nullable=False, index=True),
        sa.Column("urgency", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("evidence_json", sa.Text, nullable=False),
        sa.Column("study_instance_uid", sa.String(64)),
        sa.Column("origin", sa.String(16), nullable=False),
        sa.Column("origin_ref", sa.String(128), unique=True),
        sa.Column("requester", sa.String(128), nullable=False),
        sa.Column("performer", sa.String(128)),
        sa.Column("status_reason", sa.Text),
        sa.Column("follow_up_plan", sa.Text),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
    )
    op.create_table(
        "referral_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("referral_id", sa.String(32), nullable=False, index=True),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("note", sa.Text),
        sa.Column("notify_side", sa.String(16), nullable=False),
        sa.Column("notify_channels", sa.Text, nullable=False),
        sa.Column("notify_payload", sa.Text, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.UniqueConstraint("referral_id", "seq", name="uq_referral_events_referral_seq"),
    )
    op.create_table(
        "referral_notifications",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("referral_id", sa.String(32), nullable=False, index=True),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("channel", sa.String(64), nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False, index=True),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_attempt_at", TS, nullable=False),
        sa.Column("sent_at", TS),
        sa.Column("last_error", sa.Text),
        sa.UniqueConstraint("referral_id", "seq", "channel", name="uq_referral_notifications"),
    )
    op.create_table(
        "cds_answers",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("patient_key", sa.String(32), nullable=False, index=True),
        sa.Column("site", sa.String(64)),
        sa.Column("service", sa.String(64), nullable=False),
        sa.Column("hook", sa.String(64), nullable=False),
        sa.Column("hook_instance", sa.String(64), nullable=False, index=True),
        sa.Column("inputs_json", sa.Text, nullable=False),
        sa.Column("versions_json", sa.Text, nullable=False),
        sa.Column("scores_json", sa.Text, nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_table(
        "cds_cards",
        sa.Column("card_uuid", sa.String(64), primary_key=True),
        sa.Column("answer_id", sa.String(32), nullable=False, index=True),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("card_json", sa.Text, nullable=False),
    )
    op.create_table(
        "cds_feedback",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("card_uuid", sa.String(64), nullable=False, index=True),
        sa.Column("answer_id", sa.String(32), nullable=False, index=True),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("accepted_suggestions", sa.Text, nullable=False),
        sa.Column("override_reason", sa.Text),
        sa.Column("outcome_at", TS),
        sa.Column("referral_id", sa.String(32)),
        sa.Column("created_at", TS, nullable=False),
    )


def downgrade() -> None:
    for table in (
        "cds_feedback",
        "cds_cards",
        "cds_answers",
        "referral_notifications",
        "referral_events",
        "referrals",
    ):
        op.drop_table(table)
