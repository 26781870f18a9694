"""The directory link table in the SQL store.

``SqlDirectoryLinks`` implements ``connector.ports.directory.DirectoryLinks``
on the ``directory_links`` table (migration 0002). It works on the session of the
unit of work it is given, so links are written in the same transaction as the users
they point at.
"""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from connector.adapters.sql.tables import DirectoryLinkRow
from connector.domain.model import utcnow


class SqlDirectoryLinks:
    """Directory links in the SQL store."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def for_source(self, source_id: str, seller_id: str) -> dict[str, str]:
        rows = self.session.execute(
            select(DirectoryLinkRow.user_id, DirectoryLinkRow.stable_id).where(
                DirectoryLinkRow.source_id == source_id,
                DirectoryLinkRow.seller_id == seller_id,
            )
        )
        return {user_id: stable_id for user_id, stable_id in rows}

    def user_of(self, source_id: str, stable_id: str) -> str | None:
        row = self.session.get(DirectoryLinkRow, (source_id, stable_id))
        return row.user_id if row else None

    def stable_id_of(self, source_id: str, user_id: str) -> str | None:
        return self.session.scalar(
            select(DirectoryLinkRow.stable_id).where(
                DirectoryLinkRow.source_id == source_id, DirectoryLinkRow.user_id == user_id
            )
        )

    def add(self, source_id: str, stable_id: str, user_id: str, seller_id: str) -> None:
        self.session.add(
            DirectoryLinkRow(
                source_id=source_id,
                stable_id=stable_id,
                user_id=user_id,
                seller_id=seller_id,
                linked_at=utcnow(),
            )
        )

    def link(self, source_id: str, stable_id: str, user_id: str, seller_id: str) -> bool:
        row = self.session.get(DirectoryLinkRow, (source_id, stable_id))
        if row is not None and row.user_id == user_id and row.seller_id == seller_id:
            return False
        # One entry per user and source: a user linked to another entry is re-linked.
        self.session.execute(
            delete(DirectoryLinkRow).where(
                DirectoryLinkRow.source_id == source_id,
                DirectoryLinkRow.user_id == user_id,
                DirectoryLinkRow.stable_id != stable_id,
            )
        )
        if row is None:
            self.session.add(
                DirectoryLinkRow(
                    source_id=source_id,
                    stable_id=stable_id,
                    user_id=user_id,
                    seller_id=seller_id,
                    linked_at=utcnow(),
                )
            )
        else:
            row.user_id, row.seller_id, row.linked_at = user_id, seller_id, utcnow()
        self.session.flush()
        return True
