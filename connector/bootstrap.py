"""The composition root: the one place that builds adapters from settings and wires them.

Entry points (the CLI, the web application, the worker process) and ``scim/`` ask a
:class:`Connector` for what they need; they never import an adapter. Adding an identity
provider means a new adapter package and a few lines here.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from connector.adapters.sql.bulk import SqlDirectoryStore
from connector.adapters.sql.database import (
    SqlUnitOfWork,
    database_reachable,
    make_engine,
    upgrade,
)
from connector.adapters.sql.directory_links import SqlDirectoryLinks
from connector.adapters.sql.monitoring import SqlMonitoring
from connector.adapters.sql.outbox_queue import SqlOutboxQueue
from connector.domain.catalogue import Catalogue
from connector.mappings import load_catalogue
from connector.ports.directory import DirectoryLinks, DirectoryStore, SyncSettings
from connector.ports.identity import ChangeFeed, ChangePush, IdentityProvider, ProviderInspector
from connector.ports.mail import Mailer
from connector.ports.monitoring import MonitoringReader
from connector.ports.outbox import OutboxQueue
from connector.ports.store import UnitOfWork
from connector.services.console import PollReport, poll_console
from connector.services.directory.target import StoreDirectoryTarget
from connector.services.outbox import OutboxPolicy, OutboxWorker
from connector.settings import ConfigurationError, Settings

KEYCLOAK_URL_ENV = "SELLER_CONNECTOR_KEYCLOAK_URL"


def keycloak_configured(environ: Mapping[str, str] | None = None) -> bool:
    """Whether the environment names a Keycloak (``SELLER_CONNECTOR_KEYCLOAK_URL``)."""
    env = os.environ if environ is None else environ
    return bool(env.get(KEYCLOAK_URL_ENV, "").strip())


@dataclass
class Connector:
    """The wired connector: what the web application, the CLI and the worker share."""

    settings: Settings
    catalogue: Catalogue
    engine: Engine
    keycloak: Any = field(default=None)
    """Keycloak settings given explicitly (tests); None reads them from the environment."""

    # -- The store -------------------------------------------------------------------

    def uow(self, *, immediate: bool = False) -> SqlUnitOfWork:
        """A new unit of work (use it as a context manager).

        Reads never wait for writers; writes are kept for one short write transaction at
        ``commit``. ``immediate=True`` starts the write transaction at once instead, for
        batch writers that read their own writes (directory batches, the console poll).
        """
        return SqlUnitOfWork(self.engine, immediate=immediate)

    def database_reachable(self) -> bool:
        """Whether the store answers a trivial query (the health check)."""
        return database_reachable(self.engine)

    def outbox_queue(self) -> OutboxQueue:
        """The outbox as a work queue, on this store."""
        return SqlOutboxQueue(self.engine)

    def monitoring(self) -> MonitoringReader:
        """What ``/metrics`` reads from the store at scrape time."""
        return SqlMonitoring(self.engine)

    def directory_links(self, uow: UnitOfWork) -> DirectoryLinks:
        """The directory link table, inside ``uow``'s transaction."""
        return SqlDirectoryLinks(uow)  # type: ignore[arg-type]

    def directory_store(self, uow: UnitOfWork) -> DirectoryStore:
        """The store's set operations for directory runs, inside ``uow``."""
        return SqlDirectoryStore(uow)  # type: ignore[arg-type]

    # -- Keycloak --------------------------------------------------------------------

    @property
    def keycloak_configured(self) -> bool:
        """Whether a Keycloak is named (explicitly, or by the environment)."""
        return self.keycloak is not None or keycloak_configured()

    def keycloak_settings(self) -> Any:
        """The Keycloak settings in force.

        :raises ConfigurationError: when Keycloak is not named, or named incompletely.
        """
        if self.keycloak is not None:
            return self.keycloak
        from connector.adapters.keycloak.settings import KeycloakSettings

        if not keycloak_configured():
            raise ConfigurationError(
                f"Keycloak is not configured: set {KEYCLOAK_URL_ENV} (and _CLIENT_SECRET or "
                "_CLIENT_SECRET_FILE) to the realm the connector manages."
            )
        return KeycloakSettings.from_env()

    def identity_provider(self) -> IdentityProvider:
        """Keycloak, as the seller-connector service account."""
        from connector.adapters.keycloak import KeycloakIdentityProvider

        return KeycloakIdentityProvider(self.keycloak_settings(), catalogue=self.catalogue)

    def inspector(self) -> ProviderInspector:
        """Keycloak, read to compare with the store (reconcile)."""
        from connector.adapters.keycloak import KeycloakIdentityProvider

        return KeycloakIdentityProvider(self.keycloak_settings(), catalogue=self.catalogue)

    def change_feed(self) -> ChangeFeed:
        """The console changes of Keycloak (polled admin and user events)."""
        from connector.adapters.keycloak import KeycloakChangeFeed

        return KeycloakChangeFeed(self.keycloak_settings())

    def change_push(self) -> ChangePush:
        """The console changes the Keycloak plugin pushes (its signed webhook)."""
        from connector.adapters.keycloak.webhook import KeycloakWebhook

        return KeycloakWebhook()

    def console_poller(self, *, from_start: bool = False) -> Callable[[], PollReport]:
        """One poll of the console changes into the store, as a callable."""
        feed = self.change_feed()

        def poll() -> PollReport:
            return poll_console(self.uow, self.catalogue, feed, from_start=from_start)

        return poll

    def outbox_worker(
        self, *, policy: OutboxPolicy | None = None, console: bool = True
    ) -> OutboxWorker:
        """The outbox worker on this store and Keycloak (with the console poll).

        :raises ConfigurationError: when Keycloak is not configured.
        """
        return OutboxWorker(
            self.uow,
            self.outbox_queue(),
            self.identity_provider(),
            mailer=self.mailer(),
            policy=policy or OutboxPolicy.from_env(),
            console=self.console_poller() if console else None,
        )

    def sso(self) -> Any:
        """Enterprise SSO linking, with an operator's Keycloak credential (not the service
        account: whoever manages identity providers can redirect a seller's logins)."""
        from connector.adapters.keycloak.sso import KeycloakSso, OperatorApi, OperatorCredentials

        return KeycloakSso(OperatorApi(OperatorCredentials.from_env()))

    # -- Mail ------------------------------------------------------------------------

    def mailer(self) -> Mailer:
        """The connector's own SMTP (SELLER_CONNECTOR_SMTP_*)."""
        from connector.adapters.mail import SmtpMailer

        return SmtpMailer.from_env()

    # -- Directories -----------------------------------------------------------------

    def directory_config(self, path: Path) -> Any:
        """A directory source file, validated.

        :raises connector.mappings.MappingError: naming the file, line and problem.
        """
        from connector.adapters.ldap.config import load_directory_config

        return load_directory_config(path)

    def directory_reader(self, config: Any) -> Any:
        """A reader of the directory a source file describes (a context manager)."""
        from connector.adapters.ldap.reader import DirectoryReader

        return DirectoryReader(config)

    def directory_target(self, source: SyncSettings) -> StoreDirectoryTarget:
        """The store-backed target of one directory source."""
        return StoreDirectoryTarget(
            uow_factory=self.uow,
            catalogue=self.catalogue,
            source_id=source.id,
            managed_permission_sets=source.managed_permission_sets,
            links=self.directory_links,
            store=self.directory_store,
            invitation_lifespan=self.settings.invitation_lifespan,
        )


def upgrade_database(settings: Settings) -> None:
    """Bring the store named by ``settings`` to the latest migration."""
    upgrade(settings.database_url)


def bootstrap(
    settings: Settings | None = None, *, migrate: bool = True, keycloak: Any = None
) -> Connector:
    """Load the catalogue (failing loudly on a bad mappings/ file) and open the store.

    The database is brought to the latest migration first, unless ``migrate`` is False.
    """
    settings = settings or Settings.from_env()
    catalogue = load_catalogue()
    if migrate:
        upgrade(settings.database_url)
    engine = make_engine(settings.database_url, busy_timeout_ms=settings.busy_timeout_ms)
    return Connector(settings=settings, catalogue=catalogue, engine=engine, keycloak=keycloak)
