"""the feed of changes on PostgreSQL: each audit event remembers its transaction

Revision ID: feed1
Revises: dir1
Create Date: 2026-12-06 04:10:00.000000

PostgreSQL hands out audit ids before commit, so an event of a long transaction can commit
after many later ids were placed in the feed. With the writing transaction's id on each row,
the feed's sequencer looks again at every event of a transaction that was still running at
its last scan, however long it ran (SQLite commits in id order and needs none of this).

The default is stable, not volatile (pg_current_xact_id): PostgreSQL 11+ stores it once for
the existing rows instead of rewriting the table (checked on PostgreSQL 15: same filenode).
They all get the upgrade's id, so the first scan after it looks at every event once.
"""

import sqlalchemy as sa
from alembic import op

revision = "feed1"
down_revision = "dir1"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.add_column(
        "audit_events",
        sa.Column(
            "txid",
            sa.BigInteger(),
            nullable=False,
            server_default=sa.text("(pg_current_xact_id()::text::bigint)"),
        ),
    )
    op.create_index("ix_audit_txid", "audit_events", ["txid"])


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.drop_index("ix_audit_txid", table_name="audit_events")
    op.drop_column("audit_events", "txid")
