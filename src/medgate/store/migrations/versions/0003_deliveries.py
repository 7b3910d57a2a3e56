"""Deliveries to the sites' own systems, and each result's report status.

``deliveries``: one row per (destination, message) with a deterministic message id, so a
restart resends the same bytes and never makes a second message. ``result_reports``: whether
a study's AI result is still preliminary or final after review.

Revision ID: 0003_deliveries
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_deliveries"
down_revision = "0002"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


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


def downgrade() -> None:
    op.drop_table("result_reports")
    op.drop_table("deliveries")
