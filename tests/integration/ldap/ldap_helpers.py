"""Data and configuration shared by the LDAP integration tests and the benchmark."""

from __future__ import annotations

from typing import Any

from connector.adapters.ldap.config import DirectoryConfig
from connector.adapters.ldap.reader import DirectoryReader
from tests.support.slapd import (
    CONTRACTORS,
    GROUPS,
    PEOPLE,
    STAFF,
    Slapd,
    group_ldif,
    user_ldif,
)

GROUP_MAP = {
    f"cn=catalog,{GROUPS}": "Catalog editors",
    f"cn=orders,{GROUPS}": "Order handlers",
    f"cn=finance,{GROUPS}": "Finance viewers",
}


def dn(uid: str, ou: str = STAFF) -> str:
    """The DN of a seeded person."""
    return f"uid={uid},{ou}"


def gdn(cn: str) -> str:
    """The DN of a seeded group."""
    return f"cn={cn},{GROUPS}"


def seed_corp(server: Slapd) -> None:
    """Seven people in two OUs, three mapped groups (one with a nested group), one
    unmapped group, and an entry without mail."""
    server.add(
        user_ldif("alice")
        + user_ldif("bob")
        + user_ldif("carol")
        + user_ldif("dave")
        + user_ldif("erin")
        + user_ldif("frank")
        + user_ldif("gina", ou=CONTRACTORS)
        + user_ldif("nomail", mail=None)
    )
    server.add(
        group_ldif("catalog-seniors", [dn("carol")])
        + group_ldif("catalog", [dn("alice"), dn("bob"), gdn("catalog-seniors"), dn("nomail")])
        + group_ldif("orders", [dn("dave"), dn("erin"), dn("gina", CONTRACTORS)])
        + group_ldif("finance", [dn("frank")])
        + group_ldif("social", [dn("alice"), dn("frank")])
    )


def make_config(server: Slapd, **overrides: Any) -> DirectoryConfig:
    """A directory source for ``server`` binding as its sync account."""
    data: dict[str, Any] = {
        "id": "corp-openldap",
        "preset": "openldap",
        "url": server.url,
        "bind_dn": server.sync_dn,
        "bind_password_env": "SELLER_CONNECTOR_TEST_LDAP_PASSWORD",
        "base_dn": PEOPLE,
        "attributes": {"disabled": {"attribute": "employeeType", "values": ["disabled"]}},
        "groups": {"base_dn": GROUPS, "map": GROUP_MAP},
        "seller": {"id": "seller-1"},
        "page_size": 3,  # several pages even for a handful of people
        "deactivation_threshold": 0.5,
        "connect_timeout": 2,
        "receive_timeout": 10,
    }
    data.update(overrides)
    return DirectoryConfig.model_validate(data)


def reader_for(
    server: Slapd, config: DirectoryConfig, password: str | None = None
) -> DirectoryReader:
    """A reader binding with the sync account's password (or ``password``)."""
    return DirectoryReader(
        config, password=password if password is not None else server.sync_password
    )
