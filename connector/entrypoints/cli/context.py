"""What every command shares: the wired connector, opened on first use."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import click

from connector.bootstrap import Connector, bootstrap
from connector.domain.drafts import Actor
from connector.domain.errors import DomainError
from connector.domain.model import SellerAccount
from connector.mappings import MappingError
from connector.ports.store import UnitOfWork
from connector.services.sellers import find_seller


@dataclass
class CliContext:
    """The connector, bootstrapped (and migrated) the first time a command needs it."""

    _connector: Connector | None = field(default=None)

    @property
    def connector(self) -> Connector:
        if self._connector is None:
            try:
                self._connector = bootstrap()
            except MappingError as error:
                raise click.ClickException(f"Invalid mappings:\n{error}") from error
        return self._connector

    @property
    def actor(self) -> Actor:
        import getpass

        return Actor(f"cli:{getpass.getuser()}")

    @contextmanager
    def uow(self) -> Iterator[UnitOfWork]:
        """A unit of work whose domain refusals become clean CLI errors."""
        with self.connector.uow() as uow:
            try:
                yield uow
            except DomainError as error:
                raise click.ClickException(error.detail) from error

    def seller(self, uow: UnitOfWork, ref: str) -> SellerAccount:
        return find_seller(uow, ref)


pass_context = click.make_pass_decorator(CliContext, ensure=True)


def public_scim_url(ctx: CliContext, seller: SellerAccount) -> str:
    return f"{ctx.connector.settings.public_url}/scim/v2"
