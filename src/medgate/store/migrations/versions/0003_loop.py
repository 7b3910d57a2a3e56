"""The loop back to the sites: deliveries, radiologist review, two-way referral, traced CDS.

Delivery to the sites' own systems: ``deliveries``, one row per (destination, message) with a
deterministic message id, so a restart resends the same bytes and never makes a second message;
``result_reports``, whether a study's AI result is still preliminary or final after review.

Radiologist review: ``reviews``, who reviewed which study when, the verdicts, and the verified SR
that carries them (deterministic UID, so a retried review sends nothing twice);
``notifications``, one row per study and channel, so a restart never announces a study twice on
one channel; the escalation creates the next channel's row.

Two-way referral and traced decision support: ``referrals``, one row per referral
(ServiceRequest + Task), its status and the specialist's follow-up plan; ``referral_events``, its
history, one row per change, with the notification that change sends to the other side;
``referral_notifications``, that message per channel, queued in the same transaction and sent
(with retries) by ``delivery.referral_notify``; ``cds_answers`` / ``cds_cards`` /
``cds_feedback``, every decision support answer (pseudonymous patient key, inputs' provenance,
calculator versions), the cards it gave, and what the doctor did with them.

Development builds made these tables as three sibling revisions of 0002 (``0003_deliveries``,
``0003_review``, ``0003_referrals``); ``medgate.store.migrations.upgrade`` re-stamps a database
that holds all three as this one.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)

# In the order ``upgrade`` makes them; ``downgrade`` drops them in reverse.
TABLES = (
    "deliveries",
    "result_reports",
    "reviews",
    "notifications",
    "referrals",
    "referral_events",
    "referral_notifications",
    "cds_answers",
    "cds_cards",
    "cds_feedback",
)


def upgrade() -> None:
    op.create_table(
        "deliveries",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("message_id", sa.String(64), nullable=False, unique=True),
        sa.Column("study_instance_uid", sa.String(64), nullable=False, index=True),
        sa.Column("site", sa.String(64), nullable=False),
        sa.Column("destination", sa.String(128), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("result_status", sa.String(1), nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False, index=True),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("refusals", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_attempt_at", TS, nullable=False),
        sa.Column("lease_until", TS),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("delivered_at", TS),
        sa.Column("ack_code", sa.String(2)),
        sa.Column("last_error", sa.Text),
    )
    op.create_table(
        "result_reports",
        sa.Column("study_instance_uid", sa.String(64), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("issued_at", TS, nullable=False),
        sa.Column("final_at", TS),
        sa.Column("verified_by", sa.String(128)),
        sa.Column("final_result_json", sa.Text),
    )
    op.create_table(
        "reviews",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("study_instance_uid", sa.String(64), nullable=False, index=True),
        sa.Column("revision", sa.Integer, nullable=False),
        sa.Column("reviewer_id", sa.String(128), nullable=False),
        sa.Column("reviewer_name", sa.String(128), nullable=False),
        sa.Column("verdicts_json", sa.Text, nullable=False),
        sa.Column("report_text", sa.Text),
        sa.Column("request_sha256", sa.String(64), nullable=False),
        sa.Column("sr_sop_instance_uid", sa.String(64), nullable=False, unique=True),
        sa.Column("predecessor_sop_instance_uid", sa.String(64), nullable=False),
        sa.Column("bundle_versions", sa.Text, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.UniqueConstraint("study_instance_uid", "revision", name="uq_reviews_study_revision"),
    )
    op.create_table(
        "notifications",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("study_instance_uid", sa.String(64), nullable=False, index=True),
        sa.Column("channel", sa.String(64), nullable=False),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("token", sa.String(64), nullable=False, unique=True),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False, index=True),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_attempt_at", TS, nullable=False),
        sa.Column("escalate_at", TS),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("sent_at", TS),
        sa.Column("acknowledged_at", TS),
        sa.Column("acknowledged_by", sa.String(128)),
        sa.Column("last_error", sa.Text),
        sa.UniqueConstraint("study_instance_uid", "channel", name="uq_notifications_study_channel"),
    )
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
    for table in reversed(TABLES):
        op.drop_table(table)
