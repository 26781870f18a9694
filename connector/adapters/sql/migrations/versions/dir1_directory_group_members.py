"""directory group members: what a source's last run read of each group, for deltas

Revision ID: dir1
Revises: ops1
Create Date: 2026-12-06 10:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "dir1"
down_revision = "ops1"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "directory_group_members",
        sa.Column("source_id", sa.String(length=200), nullable=False),
        sa.Column("group_key", sa.String(length=1024), nullable=False),
        sa.Column("member_key", sa.String(length=1024), nullable=False),
        sa.PrimaryKeyConstraint(
            "source_id", "group_key", "member_key", name=op.f("pk_directory_group_members")
        ),
    )


def downgrade() -> None:
    op.drop_table("directory_group_members")
