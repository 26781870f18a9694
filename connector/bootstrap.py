"""Wire the connector once: settings, database, catalogue. Entry points call only this."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from connector.adapters.sql.database import SqlUnitOfWork, make_engine, upgrade
from connector.domain.catalogue import Catalogue
from connector.mappings import load_catalogue
from connector.settings import Settings


@dataclass
class Connector:
    """The wired connector: what the SCIM app, the CLI and the workers share."""

    settings: Settings
    catalogue: Catalogue
    engine: Engine

    @cached_property
    def session_factory(self) -> sessionmaker[Session]:
        return sessionmaker(self.engine, expire_on_commit=False)

    def uow(self, *, write: bool = True) -> SqlUnitOfWork:
        """A new unit of work (use it as a context manager). ``write=False`` for reads only:
        on SQLite they then never wait for writers."""
        return SqlUnitOfWork(self.session_factory, write=write)


def bootstrap(settings: Settings | None = None, *, migrate: bool = True) -> Connector:
    """Load the catalogue (failing loudly on a bad mappings/ file) and open the store.

    The database is brought to the latest migration first, unless ``migrate`` is False.
    """
    settings = settings or Settings.from_env()
    catalogue = load_catalogue()
    if migrate:
        upgrade(settings.database_url)
    engine = make_engine(settings.database_url, busy_timeout_ms=settings.busy_timeout_ms)
    return Connector(settings=settings, catalogue=catalogue, engine=engine)
