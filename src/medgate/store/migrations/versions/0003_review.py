"""Radiologist review: verdicts (one row per review revision) and critical-result notifications.

``reviews``: who reviewed which study when, the verdicts, and the verified SR that carries them
(deterministic UID, so a retried review sends nothing twice). ``notifications``: one row per
study and channel, so a restart never announces a study twice on one channel; the escalation
creates the next channel's row.

Revision ID: 0003_review
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_review"
down_revision = "0002"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
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


def downgrade() -> None:
    op.drop_table("notifications")
    op.drop_table("reviews")
