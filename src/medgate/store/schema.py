"""The schema the code queries: one SQLAlchemy Core ``MetaData`` for SQLite and PostgreSQL.

Every table of the store is declared here, so that ``medgate.store.migrations`` (Alembic) and the
test that compares the migrated database with this module see one complete picture. The modules
beside this one (``instances``, ``studies``, ``jobs``, ``outbox`` and the features' own stores)
read and write these tables; the statuses of the first four are the ``StrEnum`` values in
``medgate.store.status``.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

instances = sa.Table(
    "instances",
    metadata,
    sa.Column("sop_instance_uid", sa.String(64), primary_key=True),
    sa.Column("study_instance_uid", sa.String(64), nullable=False, index=True),
    sa.Column("series_instance_uid", sa.String(64), nullable=False),
    sa.Column("sop_class_uid", sa.String(64), nullable=False),
    sa.Column("transfer_syntax_uid", sa.String(64), nullable=False),
    sa.Column("modality", sa.String(16)),
    sa.Column("body_part", sa.String(64)),
    sa.Column("series_description", sa.String(128)),
    sa.Column("instance_number", sa.Integer),
    sa.Column("calling_ae", sa.String(16)),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("path", sa.String(512), nullable=False),
)

studies = sa.Table(
    "studies",
    metadata,
    sa.Column("study_instance_uid", sa.String(64), primary_key=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("last_instance_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("priority", sa.String(16)),
    sa.Column("reason", sa.Text),
    sa.Column("result_json", sa.Text),
)

jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("study_instance_uid", sa.String(64), nullable=False, index=True),
    sa.Column("status", sa.String(16), nullable=False, index=True),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("claimed_at", sa.DateTime(timezone=True)),
    sa.Column("lease_until", sa.DateTime(timezone=True)),
    sa.Column("claimed_by", sa.String(128)),
    sa.Column("finished_at", sa.DateTime(timezone=True)),
    sa.Column("error", sa.Text),
)

outbox = sa.Table(
    "outbox",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("sop_instance_uid", sa.String(64), nullable=False, unique=True),
    sa.Column("study_instance_uid", sa.String(64), nullable=False, index=True),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("path", sa.String(512), nullable=False),
    sa.Column("status", sa.String(16), nullable=False, index=True),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("refusals", sa.Integer, nullable=False, default=0, server_default="0"),
    sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("sent_at", sa.DateTime(timezone=True)),
    sa.Column("last_error", sa.Text),
)

# ---------------------------------------------------------------------------------------------
# Delivery to the sites' own systems (medgate.delivery, store.deliveries; revision 0003)

DELIVERY_STATUSES = ("pending", "delivered", "dead-letter")
REPORT_STATUSES = ("preliminary", "final", "amended")

deliveries = sa.Table(
    "deliveries",
    metadata,
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
    sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("lease_until", sa.DateTime(timezone=True)),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("delivered_at", sa.DateTime(timezone=True)),
    sa.Column("ack_code", sa.String(2)),
    sa.Column("last_error", sa.Text),
)

result_reports = sa.Table(
    "result_reports",
    metadata,
    sa.Column("study_instance_uid", sa.String(64), primary_key=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("final_at", sa.DateTime(timezone=True)),
    sa.Column("verified_by", sa.String(128)),
    sa.Column("final_result_json", sa.Text),
)

# ---------------------------------------------------------------------------------------------
# Radiologist review and critical-result notification (medgate.review, store.reviews,
# store.notifications; revision 0003)

NOTIFICATION_STATUSES = ("pending", "sent", "acknowledged", "dead")

reviews = sa.Table(
    "reviews",
    metadata,
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
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.UniqueConstraint("study_instance_uid", "revision", name="uq_reviews_study_revision"),
)

notifications = sa.Table(
    "notifications",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("study_instance_uid", sa.String(64), nullable=False, index=True),
    sa.Column("channel", sa.String(64), nullable=False),
    sa.Column("step", sa.Integer, nullable=False),
    sa.Column("token", sa.String(64), nullable=False, unique=True),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("status", sa.String(16), nullable=False, index=True),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("escalate_at", sa.DateTime(timezone=True)),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("sent_at", sa.DateTime(timezone=True)),
    sa.Column("acknowledged_at", sa.DateTime(timezone=True)),
    sa.Column("acknowledged_by", sa.String(128)),
    sa.Column("last_error", sa.Text),
    sa.UniqueConstraint("study_instance_uid", "channel", name="uq_notifications_study_channel"),
)

# ---------------------------------------------------------------------------------------------
# Two-way referral and traced decision support (store.referrals, store.cds_answers; revision
# 0003)

REFERRAL_STATUSES = ("requested", "accepted", "completed", "rejected", "cancelled")

referrals = sa.Table(
    "referrals",
    metadata,
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
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

referral_events = sa.Table(
    "referral_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("referral_id", sa.String(32), nullable=False, index=True),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("actor", sa.String(128), nullable=False),
    sa.Column("note", sa.Text),
    sa.Column("notify_side", sa.String(16), nullable=False),
    sa.Column("notify_channels", sa.Text, nullable=False),
    sa.Column("notify_payload", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.UniqueConstraint("referral_id", "seq", name="uq_referral_events_referral_seq"),
)

referral_notifications = sa.Table(
    "referral_notifications",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("referral_id", sa.String(32), nullable=False, index=True),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("channel", sa.String(64), nullable=False),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("status", sa.String(16), nullable=False, index=True),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("sent_at", sa.DateTime(timezone=True)),
    sa.Column("last_error", sa.Text),
    sa.UniqueConstraint("referral_id", "seq", "channel", name="uq_referral_notifications"),
)

cds_answers = sa.Table(
    "cds_answers",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("patient_key", sa.String(32), nullable=False, index=True),
    sa.Column("site", sa.String(64)),
    sa.Column("service", sa.String(64), nullable=False),
    sa.Column("hook", sa.String(64), nullable=False),
    sa.Column("hook_instance", sa.String(64), nullable=False, index=True),
    sa.Column("inputs_json", sa.Text, nullable=False),
    sa.Column("versions_json", sa.Text, nullable=False),
    sa.Column("scores_json", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

cds_cards = sa.Table(
    "cds_cards",
    metadata,
    sa.Column("card_uuid", sa.String(64), primary_key=True),
    sa.Column("answer_id", sa.String(32), nullable=False, index=True),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("card_json", sa.Text, nullable=False),
)

cds_feedback = sa.Table(
    "cds_feedback",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("card_uuid", sa.String(64), nullable=False, index=True),
    sa.Column("answer_id", sa.String(32), nullable=False, index=True),
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("accepted_suggestions", sa.Text, nullable=False),
    sa.Column("override_reason", sa.Text),
    sa.Column("outcome_at", sa.DateTime(timezone=True)),
    sa.Column("referral_id", sa.String(32)),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)
