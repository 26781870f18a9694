"""seller-connector sellers link-sso: a seller's staff log in with their corporate identity provider.

The command is added to the ``sellers`` group (``seller-connector sellers link-sso``). It runs
with an operator's Keycloak credential (``SELLER_CONNECTOR_KEYCLOAK_ADMIN_*``), not the SCIM
service account: see :mod:`connector.adapters.keycloak.sso` for why.
"""

from __future__ import annotations

import os

import click

from connector.entrypoints.cli.context import CliContext, pass_context
from connector.entrypoints.cli.output import emit_json
from connector.entrypoints.cli.sellers import sellers
from connector.ports.identity import IdentityProviderRejected, IdentityProviderUnavailable
from connector.ports.store import AuditEvent
from connector.settings import ConfigurationError


@click.command("link-sso")
@click.argument("seller")
@click.option("--issuer", required=True, help="The corporate OIDC issuer URL (its discovery).")
@click.option("--client-id", required=True, help="The client registered at the corporate IdP.")
@click.option(
    "--client-secret-env",
    required=True,
    metavar="VAR",
    help="Name of the environment variable holding that client's secret (never on the "
    "command line).",
)
@click.option(
    "--domain",
    "domains",
    multiple=True,
    required=True,
    help="An email domain of the seller's staff (repeat for several).",
)
@click.option("--alias", default=None, help="Identity provider alias (default seller-<id>-sso).")
@pass_context
def link_sso(
    ctx: CliContext,
    seller: str,
    issuer: str,
    client_id: str,
    client_secret_env: str,
    domains: tuple[str, ...],
    alias: str | None,
) -> None:
    """Link SELLER (id or name) to its corporate OpenID Connect identity provider.

    Users whose email is in a DOMAIN are sent to the corporate login and land back with the
    permissions that SCIM or directory sync gave them. Nobody gets an account this way: the
    corporate login is linked only to a user already provisioned for this seller. Running it
    again updates the link. Prints the redirect URI to register at the corporate IdP.
    """
    secret = os.environ.get(client_secret_env, "").strip()
    if not secret:
        raise click.ClickException(f"The environment variable {client_secret_env} is empty.")
    with ctx.uow() as uow:
        account = ctx.seller(uow, seller)
    try:
        sso = ctx.connector.sso()
        result = sso.link(
            account.id,
            issuer=issuer,
            client_id=client_id,
            client_secret=secret,
            domains=list(domains),
            alias=alias,
            display_name=f"{account.name} corporate login",
        )
    except ConfigurationError as error:
        raise click.ClickException(str(error)) from error
    except (IdentityProviderRejected, IdentityProviderUnavailable) as error:
        raise click.ClickException(str(error)) from error
    with ctx.uow() as uow:
        uow.audit.append(
            AuditEvent(
                account.id,
                ctx.actor.name,
                "seller.sso-linked",
                f"seller:{account.id}",
                {"alias": result.alias, "issuer": issuer, "domains": result.domains},
            )
        )
        uow.commit()
    emit_json(result.as_dict())


sellers.add_command(link_sso)

COMMANDS: list[click.Command] = []
"""Nothing at the top level: ``link-sso`` belongs to the ``sellers`` group (added above)."""
