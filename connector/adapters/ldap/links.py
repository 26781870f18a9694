"""The SQL side of a directory sync: the link table, and the wired store target.

``SqlDirectoryLinks`` implements ``connector.services.directory_target.DirectoryLinks``
on the ``directory_links`` table (migration 0002). It works on the session of the
unit of work it is given, so links are written in the same transaction as the users
they point at.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from connector.adapters.sql.tables import DirectoryLinkRow
from connector.domain.model import utcnow
from connector.services.directory_target import StoreDirectoryTarget

if TYPE_CHECKING:
    from connector.bootstrap import Connector
    from connector.directory.apply import SyncSettings


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


def sql_links(uow: Any) -> SqlDirectoryLinks:
    """The links of a ``SqlUnitOfWork`` (its session)."""
    return SqlDirectoryLinks(uow.session)


def store_target(connector: Connector, source: SyncSettings) -> StoreDirectoryTarget:
    """The store-backed target for one directory source, on a wired connector."""
    return StoreDirectoryTarget(
        uow_factory=connector.uow,
        catalogue=connector.catalogue,
        source_id=source.id,
        managed_permission_sets=source.managed_permission_sets,
        links=sql_links,
        invitation_lifespan=connector.settings.invitation_lifespan,
    )
