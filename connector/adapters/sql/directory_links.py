"""The directory link table in the SQL store.

``SqlDirectoryLinks`` implements ``connector.ports.directory.DirectoryLinks`` on the
``directory_links`` table (migration 0002), inside the unit of work it is given, so that
links are written in the same transaction as the users they point at.
"""

from __future__ import annotations

from sqlalchemy import delete, insert, select, update

from connector.adapters.sql.repositories import Statements
from connector.adapters.sql.tables import DirectoryLinkRow
from connector.domain.model import utcnow

links = DirectoryLinkRow.__table__


class SqlDirectoryLinks:
    """Directory links in the SQL store."""

    def __init__(self, uow: Statements) -> None:
        self.uow = uow

    def for_source(self, source_id: str, seller_id: str) -> dict[str, str]:
        rows = self.uow.read(
            select(links.c.user_id, links.c.stable_id).where(
                links.c.source_id == source_id, links.c.seller_id == seller_id
            )
        )
        return {user_id: stable_id for user_id, stable_id in rows}

    def _row(self, source_id: str, stable_id: str) -> tuple[str, str] | None:
        row = self.uow.read(
            select(links.c.user_id, links.c.seller_id).where(
                links.c.source_id == source_id, links.c.stable_id == stable_id
            )
        ).first()
        return (row[0], row[1]) if row else None

    def user_of(self, source_id: str, stable_id: str) -> str | None:
        row = self._row(source_id, stable_id)
        return row[0] if row else None

    def stable_id_of(self, source_id: str, user_id: str) -> str | None:
        return self.uow.read(
            select(links.c.stable_id).where(
                links.c.source_id == source_id, links.c.user_id == user_id
            )
        ).scalar()

    def add(self, source_id: str, stable_id: str, user_id: str, seller_id: str) -> None:
        self.uow.write(
            insert(links).values(
                source_id=source_id,
                stable_id=stable_id,
                user_id=user_id,
                seller_id=seller_id,
                linked_at=utcnow(),
            )
        )

    def link(self, source_id: str, stable_id: str, user_id: str, seller_id: str) -> bool:
        row = self._row(source_id, stable_id)
        if row == (user_id, seller_id):
            return False
        # One entry per user and source: a user linked to another entry is re-linked.
        self.uow.write(
            delete(links).where(
                links.c.source_id == source_id,
                links.c.user_id == user_id,
                links.c.stable_id != stable_id,
            )
        )
        if row is None:
            self.add(source_id, stable_id, user_id, seller_id)
        else:
            self.uow.write(
                update(links)
                .where(links.c.source_id == source_id, links.c.stable_id == stable_id)
                .values(user_id=user_id, seller_id=seller_id, linked_at=utcnow())
            )
        return True
