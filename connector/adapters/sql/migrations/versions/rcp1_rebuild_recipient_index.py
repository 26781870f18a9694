"""the recipient index written again from the users

Revision ID: rcp1
Revises: feed1
Create Date: 2026-12-06 08:15:00.000000

Directory runs saved their users without updating the notification recipient index: a user
the directory deactivated (or subscribed, or reactivated) kept the recipient rows it had.
The runs keep the index now; this rebuilds it once for the stores they left behind.
"""

from alembic import op

from connector.adapters.sql.repositories import rebuild_recipient_index

revision = "rcp1"
down_revision = "feed1"
branch_labels = None
depends_on = None


def upgrade() -> None:
    rebuild_recipient_index(op.get_bind())


def downgrade() -> None:
    # The rebuilt index is right for every earlier revision too: nothing to undo.
    pass
