"""The feedback package's tables (SQLAlchemy Core), created on first use."""

from __future__ import annotations

import sqlalchemy as sa

METADATA = sa.MetaData()

events = sa.Table(
    "segue_events",
    METADATA,
    # The log offset: assigned at append, strictly increasing in commit order.
    sa.Column(
        "log_offset",
        sa.BigInteger().with_variant(sa.Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column("event_id", sa.String(128), nullable=False, unique=True),
    sa.Column("type", sa.String(32), nullable=False),
    sa.Column("user_id", sa.String(128), nullable=False),
    sa.Column("item_id", sa.String(128), nullable=False),
    sa.Column("event_time", sa.Float(precision=53), nullable=False),
    sa.Column("request_id", sa.String(128), nullable=True),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("received_at", sa.Float(precision=53), nullable=False),
    sqlite_autoincrement=True,
)

batches = sa.Table(
    "segue_feedback_batches",
    METADATA,
    # sha256 of the request body: a retried batch gets the answer the first try got.
    sa.Column("batch_key", sa.String(64), primary_key=True),
    sa.Column("response", sa.Text, nullable=False),
    sa.Column("created_at", sa.Float(precision=53), nullable=False, index=True),
)

dead_letters = sa.Table(
    "segue_dead_letters",
    METADATA,
    sa.Column(
        "id",
        sa.BigInteger().with_variant(sa.Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column("received_at", sa.Float(precision=53), nullable=False, index=True),
    sa.Column("source", sa.String(200), nullable=False),
    # "event" (one event of a batch) or "body" (a request that could not be read at all)
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("event_id", sa.String(128), nullable=True),
    sa.Column("code", sa.String(64), nullable=False, index=True),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("payload", sa.Text, nullable=False),
)

decision_outcomes = sa.Table(
    "segue_decision_outcomes",
    METADATA,
    # Written by the learner when a list's attribution window closes; a learner that restarts
    # from a snapshot closes the same windows again, so the request id makes it idempotent.
    sa.Column("request_id", sa.String(128), primary_key=True),
    sa.Column("decision_time", sa.Float(precision=53), nullable=False, index=True),
    sa.Column("closed_at", sa.Float(precision=53), nullable=False),
    sa.Column("model_version", sa.String(128), nullable=False),
    sa.Column("payload", sa.Text, nullable=False),
)
