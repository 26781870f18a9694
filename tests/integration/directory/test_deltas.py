"""Delta runs into the store see deletions and moves out of the base DN (syncprov), as
a seller's SCIM client and the audit trail see them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select

from connector.adapters.sql.tables import AuditRow
from connector.bootstrap import Connector
from tests.conftest import SellerHandle
from tests.integration.directory.directory_helpers import (
    config_for,
    outbox,
    scim_get,
    scim_user,
    sync,
)
from tests.integration.ldap.ldap_helpers import dn
from tests.support.slapd import Slapd

pytestmark = pytest.mark.ldap


def test_a_leaver_loses_access_at_the_next_delta(
    corp: Slapd, connector: Connector, make_seller: Callable[..., SellerHandle], client: Any
) -> None:
    seller = make_seller("Acme Outdoor")
    config = config_for(corp, seller.seller.id)
    assert sync(connector, corp, config).full
    erin = scim_user(client, seller, "erin@example.com")
    bob = scim_user(client, seller, "bob@example.com")
    assert erin and bob
    corp.add("dn: ou=former,dc=example,dc=com\nobjectClass: organizationalUnit\nou: former\n")
    corp.delete(dn("erin"))
    corp.modrdn(dn("bob"), "uid=bob", new_superior="ou=former,dc=example,dc=com")
    seen = len(outbox(connector))

    delta = sync(connector, corp, config)
    assert not delta.full and delta.ok and len(delta.applied) == 2
    for user in (erin, bob):
        after = scim_get(client, seller, user["id"])  # deactivated, still there
        assert after["active"] is False
    assert {("user.sync", erin["id"]), ("user.sync", bob["id"])} <= set(outbox(connector)[seen:])
    with connector.engine.connect() as connection:
        reasons = connection.execute(
            select(AuditRow.target, AuditRow.changes).where(
                AuditRow.action == "directory.deactivation-reason"
            )
        ).all()
    assert sorted(t for t, _ in reasons) == sorted([f"user:{erin['id']}", f"user:{bob['id']}"])
    assert {c["reason"] for _, c in reasons} == {"left-directory"}
    assert sync(connector, corp, config, full=True).plan.is_empty
