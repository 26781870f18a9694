"""security: a shared authentication brake, releasable addresses, canonical identity keys,
an index for pending invitations

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-05 22:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

import connector.adapters.sql.tables
from connector.domain.model import email_key, identity_key

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "auth_failures",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("client", sa.String(length=64), nullable=False),
        sa.Column("token_id", sa.String(length=32), nullable=False),
        sa.Column("at", connector.adapters.sql.tables.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_auth_failures")),
    )
    with op.batch_alter_table("auth_failures", schema=None) as batch_op:
        batch_op.create_index("ix_auth_failures_client_at", ["client", "at"], unique=False)
        batch_op.create_index(
            "ix_auth_failures_client_token_at", ["client", "token_id", "at"], unique=False
        )
    # Partial: only pending invitations (counted per seller on each create, swept by expiry).
    pending = {
        "sqlite_where": sa.text("users.invitation_state = 'pending' AND users.deleted = 0"),
        "postgresql_where": sa.text(
            "users.invitation_state = 'pending' AND users.deleted = false"
        ),
    }
    op.create_index(
        "ix_users_pending", "users", ["seller_id", "invitation_expires_at", "invitation_state", "deleted"],
        **pending,
    )
    op.create_index("ix_users_pending_expiry", "users", ["invitation_expires_at"], **pending)
    with op.batch_alter_table("reserved_emails", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "released_at",
                connector.adapters.sql.tables.UtcDateTime(timezone=True),
                nullable=True,
            )
        )
    _canonical_keys()


def _canonical_keys() -> None:
    """Identity keys are now trimmed, NFKC-normalised and case-folded (email domains without
    a trailing dot): recompute the stored ones. Two rows that fall together are look-alikes
    the old keys let through; the migration stops and names them rather than merge them."""
    bind = op.get_bind()
    for table, key_column, source, function in (
        ("users", "user_name_key", "user_name", identity_key),
        ("permission_sets", "display_name_key", "display_name", identity_key),
        ("sellers", "name_key", "name", identity_key),
    ):
        rows = bind.execute(sa.text(f"SELECT id, {source}, {key_column} FROM {table}")).all()  # noqa: S608
        for row_id, value, old in rows:
            new = function(value)
            if new != old:
                bind.execute(
                    sa.text(f"UPDATE {table} SET {key_column} = :key WHERE id = :id"),  # noqa: S608
                    {"key": new, "id": row_id},
                )
    rows = bind.execute(sa.text("SELECT email_key FROM reserved_emails")).all()
    seen: dict[str, str] = {}
    for (old,) in rows:
        new = email_key(old)
        if new in seen and seen[new] != old:
            raise RuntimeError(
                f"Reserved addresses {seen[new]!r} and {old!r} are one address in canonical "
                "form: resolve the duplicate by hand, then migrate again."
            )
        seen[new] = old
    for new, old in seen.items():
        if new != old:
            bind.execute(
                sa.text("UPDATE reserved_emails SET email_key = :new WHERE email_key = :old"),
                {"new": new, "old": old},
            )


def downgrade() -> None:
    with op.batch_alter_table("reserved_emails", schema=None) as batch_op:
        batch_op.drop_column("released_at")
    op.drop_index("ix_users_pending_expiry", "users")
    op.drop_index("ix_users_pending", "users")
    with op.batch_alter_table("auth_failures", schema=None) as batch_op:
        batch_op.drop_index("ix_auth_failures_client_token_at")
        batch_op.drop_index("ix_auth_failures_client_at")
    op.drop_table("auth_failures")
