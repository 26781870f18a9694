"""directory links: directory entries (source, stable id) to the users they became

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27 10:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

import connector.adapters.sql.tables

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "directory_links",
        sa.Column("source_id", sa.String(length=200), nullable=False),
        sa.Column("stable_id", sa.String(length=300), nullable=False),
        sa.Column("user_id", sa.String(length=32), nullable=False),
        sa.Column("seller_id", sa.String(length=32), nullable=False),
        sa.Column(
            "linked_at", connector.adapters.sql.tables.UtcDateTime(timezone=True), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["seller_id"], ["sellers.id"], name=op.f("fk_directory_links_seller_id_sellers")
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_directory_links_user_id_users")
        ),
        sa.PrimaryKeyConstraint("source_id", "stable_id", name=op.f("pk_directory_links")),
        sa.UniqueConstraint(
            "source_id", "user_id", name=op.f("uq_directory_links_source_id_user_id")
        ),
    )
    with op.batch_alter_table("directory_links", schema=None) as batch_op:
        batch_op.create_index(
            "ix_directory_links_seller", ["seller_id", "source_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_directory_links_user_id"), ["user_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("directory_links", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_directory_links_user_id"))
        batch_op.drop_index("ix_directory_links_seller")

    op.drop_table("directory_links")
