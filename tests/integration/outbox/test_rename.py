"""A user's userName or email changes to a brand-new address and Keycloak follows (a real
Keycloak).

What Okta and Entra do when someone's email changes (SCIM PATCH or PUT of userName and
emails, or of the emails alone), and what a directory sync does when an entry's ``mail``
changes (the userName follows it): the outbox's ``user.sync`` renames the same Keycloak user
or gives it the new address, on the plugin's bulk endpoint and on the admin API alike, and
nothing turns poison, although the plugin's guard refuses anyone else's change of a seller
user's username or email. Keycloak 26.7.3 refused a rename while the realm had
``editUsernameAllowed`` off (``error-user-attribute-read-only``): see deploy/keycloak/README.md,
"Usernames follow the store" (emails too).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest

from connector.adapters.sql.outbox_queue import SqlOutboxQueue
from connector.bootstrap import Connector
from connector.domain.model import utcnow
from connector.services.outbox import OutboxWorker
from tests.conftest import PATCH_SCHEMA, SellerHandle, user_body
from tests.integration.directory.directory_helpers import config_for, scim_get, sync

# The LDAP tests' servers: a fresh slapd per test, seeded with the corp directory.
from tests.integration.ldap.conftest import corp, slapd  # noqa: F401
from tests.integration.ldap.ldap_helpers import dn, gdn
from tests.integration.outbox.helpers import kc_group_paths, kc_user, scim_json
from tests.support.keycloak import KeycloakServer, password_grant, set_password
from tests.support.slapd import Slapd, member_change, replace_attr, user_ldif

pytestmark = pytest.mark.keycloak

PATHS = [pytest.param(True, id="plugin"), pytest.param(False, id="admin-api")]


def _address(handle: SellerHandle, tag: str) -> str:
    return f"{tag}-{uuid.uuid4().hex[:8]}@{handle.seller.id[:8]}.example.com"


def _new_user(client: Any, handle: SellerHandle, tag: str) -> dict[str, Any]:
    """A secondary user created over SCIM, as the service answered it."""
    body = user_body(_address(handle, tag))
    return scim_json(client.post("/scim/v2/Users", json=body, headers=handle.headers), 201)


def _no_poison(connector: Connector, report: Any) -> None:
    assert report.poisoned == report.retried == 0, report.errors
    stats = SqlOutboxQueue(connector.engine).stats(utcnow())
    assert stats.counts["pending"] == stats.counts["poison"] == 0, stats.counts


@pytest.mark.parametrize("bulk_endpoint", PATHS)
def test_a_scim_rename_to_a_new_address_reaches_keycloak(
    bulk_endpoint: bool,
    keycloak_server: KeycloakServer,
    connector: Connector,
    client: Any,
    make_seller: Callable[..., SellerHandle],
    make_worker: Callable[..., OutboxWorker],
) -> None:
    handle = make_seller()
    patched = _new_user(client, handle, "ann")
    put = _new_user(client, handle, "bob")
    worker = make_worker(bulk_endpoint=bulk_endpoint)
    _no_poison(connector, worker.drain())
    kc_patched = kc_user(keycloak_server, patched["id"])
    kc_put = kc_user(keycloak_server, put["id"])
    assert kc_patched is not None and kc_put is not None
    set_password(keycloak_server, kc_patched["id"])

    # Okta: PATCH replace userName and the primary email (mixed case, as people type them).
    ann = _address(handle, "Ann.Married")
    body = {
        "schemas": [PATCH_SCHEMA],
        "Operations": [
            {"op": "replace", "path": "userName", "value": ann},
            {
                "op": "replace",
                "path": "emails",
                "value": [{"value": ann, "type": "work", "primary": True}],
            },
        ],
    }
    scim_json(
        client.patch(f"/scim/v2/Users/{patched['id']}", json=body, headers=handle.headers), 200
    )
    # Entra / Okta with PUT: the whole user again, with its new address.
    bob = _address(handle, "bob.moved")
    scim_json(
        client.put(f"/scim/v2/Users/{put['id']}", json=user_body(bob), headers=handle.headers),
        200,
    )
    _no_poison(connector, worker.drain())

    for created, before, address in ((patched, kc_patched, ann), (put, kc_put, bob)):
        after = kc_user(keycloak_server, created["id"])
        assert after is not None
        assert after["id"] == before["id"]  # the same Keycloak user, renamed
        assert (after["username"], after["email"]) == (address.lower(), address.lower())
        assert after["enabled"] is True
    # The renamed user logs in with its new name (its password kept), no longer the old one.
    assert password_grant(keycloak_server, ann).status_code == 200
    assert password_grant(keycloak_server, patched["userName"]).status_code in (400, 401)
    with connector.uow() as uow:
        stored = uow.users.get(handle.seller.id, patched["id"])
    assert stored is not None and stored.idp_id == kc_patched["id"]


@pytest.mark.parametrize("bulk_endpoint", PATHS)
def test_a_scim_email_change_reaches_keycloak(
    bulk_endpoint: bool,
    keycloak_server: KeycloakServer,
    connector: Connector,
    client: Any,
    make_seller: Callable[..., SellerHandle],
    make_worker: Callable[..., OutboxWorker],
) -> None:
    """A secondary's emails change and its userName stays (a SCIM client whose userName is
    not the address): the same Keycloak user gets the new email, under the same username."""
    handle = make_seller()
    created = _new_user(client, handle, "cy")
    worker = make_worker(bulk_endpoint=bulk_endpoint)
    _no_poison(connector, worker.drain())
    before = kc_user(keycloak_server, created["id"])
    assert before is not None

    address = _address(handle, "Cy.Work")
    body = {
        "schemas": [PATCH_SCHEMA],
        "Operations": [
            {
                "op": "replace",
                "path": "emails",
                "value": [{"value": address, "type": "work", "primary": True}],
            }
        ],
    }
    patched = scim_json(
        client.patch(f"/scim/v2/Users/{created['id']}", json=body, headers=handle.headers), 200
    )
    assert patched["userName"] == created["userName"]
    _no_poison(connector, worker.drain())

    after = kc_user(keycloak_server, created["id"])
    assert after is not None and after["id"] == before["id"]
    assert (after["username"], after["email"]) == (before["username"], address.lower())


@pytest.mark.ldap
@pytest.mark.parametrize("bulk_endpoint", PATHS)
def test_a_directory_mail_change_renames_the_keycloak_user(
    bulk_endpoint: bool,
    corp: Slapd,  # noqa: F811
    keycloak_server: KeycloakServer,
    connector: Connector,
    client: Any,
    make_seller: Callable[..., SellerHandle],
    make_worker: Callable[..., OutboxWorker],
) -> None:
    """Only this test's own entry is synced (a user filter): the corp directory's fixed
    addresses would clash across tests in the session's one Keycloak."""
    handle = make_seller()
    uid = f"zoe{uuid.uuid4().hex[:8]}"
    first = _address(handle, uid)
    corp.add(user_ldif(uid, mail=first))
    corp.modify(member_change(gdn("catalog"), "add", dn(uid)))
    config = config_for(corp, handle.seller.id, user_filter=f"(uid={uid})")
    result = sync(connector, corp, config)
    assert result.ok and len(result.plan.creates) == 1, result.failures
    worker = make_worker(bulk_endpoint=bulk_endpoint)
    _no_poison(connector, worker.drain())
    with connector.uow() as uow:
        [user] = [u for u in uow.users.list(handle.seller.id) if u.user_name == first]
    before = kc_user(keycloak_server, user.id)
    assert before is not None and before["username"] == first.lower()

    moved = _address(handle, f"{uid}.new")
    corp.modify(replace_attr(dn(uid), "mail", moved))
    result = sync(connector, corp, config)
    assert result.ok and len(result.plan.updates) == 1, result.failures
    assert scim_get(client, handle, user.id)["userName"] == moved
    _no_poison(connector, worker.drain())

    after = kc_user(keycloak_server, user.id)
    assert after is not None and after["id"] == before["id"]
    assert (after["username"], after["email"]) == (moved.lower(), moved.lower())
    assert kc_group_paths(keycloak_server, after["id"]) == {
        f"/sellers/{handle.seller.name}/Catalog editors"
    }
