"""operator API: operator credentials, the notification recipient index, the feed of changes

Revision ID: ops1
Revises: 0003
Create Date: 2026-12-06 10:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

import connector.adapters.sql.tables
from connector.adapters.sql.repositories import rebuild_recipient_index

revision = "ops1"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "operators",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("name_key", sa.String(length=100), nullable=False),
        sa.Column("scope", sa.String(length=10), nullable=False),
        sa.Column("secret_hash", sa.String(length=64), nullable=False),
        sa.Column(
            "created_at", connector.adapters.sql.tables.UtcDateTime(timezone=True), nullable=False
        ),
        sa.Column(
            "revoked_at", connector.adapters.sql.tables.UtcDateTime(timezone=True), nullable=True
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_operators")),
        sa.UniqueConstraint("name_key", name=op.f("uq_operators_name_key")),
        sa.UniqueConstraint("secret_hash", name=op.f("uq_operators_secret_hash")),
    )
    op.create_table(
        "notification_recipients",
        sa.Column("seller_id", sa.String(length=32), nullable=False),
        sa.Column("category", sa.String(length=100), nullable=False),
        sa.Column("sort_key", sa.String(length=320), nullable=False),
        sa.Column("user_id", sa.String(length=32), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("role", sa.String(length=20), nullable=False),
        sa.PrimaryKeyConstraint(
            "seller_id", "category", "sort_key", "user_id", name=op.f("pk_notification_recipients")
        ),
    )
    with op.batch_alter_table("notification_recipients", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_notification_recipients_user_id"), ["user_id"], unique=False
        )
    op.create_table(
        "change_feed",
        sa.Column("position", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("audit_id", sa.Integer(), nullable=False),
        sa.Column("seller_id", sa.String(length=32), nullable=True),
        sa.PrimaryKeyConstraint("position", name=op.f("pk_change_feed")),
        sa.UniqueConstraint("audit_id", name=op.f("uq_change_feed_audit_id")),
    )
    with op.batch_alter_table("change_feed", schema=None) as batch_op:
        batch_op.create_index("ix_change_feed_seller", ["seller_id", "position"], unique=False)
    _index_recipients()


def _index_recipients() -> None:
    """Fill the recipient index from the users already stored (their saves keep it after)."""
    rebuild_recipient_index(op.get_bind())


def downgrade() -> None:
    with op.batch_alter_table("change_feed", schema=None) as batch_op:
        batch_op.drop_index("ix_change_feed_seller")
    op.drop_table("change_feed")
    with op.batch_alter_table("notification_recipients", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_notification_recipients_user_id"))
    op.drop_table("notification_recipients")
    op.drop_table("operators")
