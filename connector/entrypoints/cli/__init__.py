"""The seller-connector command line."""

from __future__ import annotations

import importlib

import click

from connector.entrypoints.cli.operators import events, operators
from connector.entrypoints.cli.reports import access_review, audit, notifications
from connector.entrypoints.cli.sellers import sellers
from connector.entrypoints.cli.server import db, demo, serve
from connector.entrypoints.cli.users import users

# Command groups contributed by the identity-provider and directory adapters.
_OPTIONAL = (
    "connector.entrypoints.cli.keycloak",
    "connector.entrypoints.cli.directory",
    "connector.entrypoints.cli.sso",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="seller-connector")
def main() -> None:
    """seller-connector: SCIM 2.0 for marketplace seller accounts, Keycloak and LDAP.

    Configuration comes from SELLER_CONNECTOR_* environment variables (see the README).
    Every command migrates the database on first use.
    """


for command in (
    sellers,
    users,
    notifications,
    access_review,
    audit,
    operators,
    events,
    db,
    serve,
    demo,
):
    main.add_command(command)

for module_name in _OPTIONAL:
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name != module_name:
            raise
        continue
    for command in getattr(module, "COMMANDS", ()):
        main.add_command(command)
