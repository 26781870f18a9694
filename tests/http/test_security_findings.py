"""The attack review's findings, each at HTTP level: the primary's identity, address
squatting, look-alike addresses, partner subdomains, odd input, private files. Each test
failed on the main branch before the fix (see issue 11)."""

from __future__ import annotations

import datetime as dt
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from connector.bootstrap import Connector, bootstrap
from connector.domain.drafts import Actor
from connector.domain.model import Plan, utcnow
from connector.entrypoints.web import create_app
from connector.services import sellers as seller_cases
from connector.services import users as user_cases
from tests.conftest import SCIM, bulk_creates, make_settings, user_body
from tests.http.conftest import assert_scim_error, patch_body

USERS = "/scim/v2/Users"


def _post(client: Any, headers: dict[str, str], name: str, **extra: Any) -> Any:
    return client.post(USERS, headers=headers, json=user_body(name, **extra))


# -- 1. The primary's identity ------------------------------------------------------------------


def test_the_primarys_user_name_and_emails_are_refused_over_scim(
    client: Any, make_seller: Any
) -> None:
    handle = make_seller()
    primary = f"{USERS}/{handle.primary.id}"
    attempts = [
        patch_body({"op": "replace", "path": "userName", "value": "thief@evil.example.com"}),
        patch_body(
            {"op": "replace", "path": "emails", "value": [{"value": "thief@evil.example.com"}]}
        ),
        patch_body({"op": "remove", "path": "emails"}),
        patch_body(
            {"op": "add", "path": "emails", "value": [{"value": "second@evil.example.com"}]}
        ),
    ]
    for body in attempts:
        refused = client.patch(primary, headers=handle.headers, json=body)
        assert_scim_error(refused, 403, detail_has=("change-primary",))
    put = client.put(
        primary,
        headers=handle.headers,
        json=user_body("thief@evil.example.com", id=handle.primary.id),
    )
    assert_scim_error(put, 403, detail_has=("change-primary",))
    after = client.get(primary, headers=handle.headers).json
    assert after["userName"] == handle.primary.user_name
    assert [e["value"] for e in after["emails"]] == [handle.primary.user_name]
    # The primary's other attributes are its own to change.
    ok = client.patch(
        primary,
        headers=handle.headers,
        json=patch_body({"op": "replace", "path": "title", "value": "CEO"}),
    )
    assert ok.status_code == 200


# -- 3. No squatting --------------------------------------------------------------------------


def test_an_address_deleted_before_anyone_signed_in_with_it_is_free_again(
    client: Any, make_seller: Any, connector: Connector
) -> None:
    squatter = make_seller()
    made = _post(client, squatter.headers, "founder@future-seller.example")
    assert made.status_code == 201
    assert client.delete(f"{USERS}/{made.json['id']}", headers=squatter.headers).status_code == 204
    # The real owner of the address can now register a seller with it.
    _, primary = seller_cases.create_seller(
        connector.uow(),
        connector.catalogue,
        "Future Seller",
        Plan.professional,
        "founder@future-seller.example",
        "Fran Founder",
        Actor("test"),
    )
    assert primary.user_name == "founder@future-seller.example"
    # The squatter's POST of the same address, restoring its deleted user, is now a 409.
    again = _post(client, squatter.headers, "founder@future-seller.example")
    assert_scim_error(again, 409, "uniqueness")


def test_the_same_seller_restores_a_deleted_user_while_its_address_is_free(
    client: Any, make_seller: Any
) -> None:
    handle = make_seller()
    made = _post(client, handle.headers, "back@restore.example.com")
    assert client.delete(f"{USERS}/{made.json['id']}", headers=handle.headers).status_code == 204
    restored = _post(client, handle.headers, "back@restore.example.com")
    assert restored.status_code == 201 and restored.json["id"] == made.json["id"]
    # The address is held again: another seller gets a 409.
    other = make_seller()
    assert_scim_error(_post(client, other.headers, "back@restore.example.com"), 409, "uniqueness")


def test_an_invitation_that_lapses_frees_the_address_and_reactivation_takes_it_back(
    client: Any, make_seller: Any, connector: Connector
) -> None:
    handle = make_seller()
    waiting = _post(client, handle.headers, "never@lapse.example.com").json
    later = utcnow() + dt.timedelta(days=8)
    assert user_cases.expire_invitations(connector.uow(), later) == 1
    lapsed = client.get(f"{USERS}/{waiting['id']}", headers=handle.headers).json
    assert lapsed["active"] is False
    with connector.uow() as uow:
        owners = uow.users.email_owners(["never@lapse.example.com"])
    assert [o.released for o in owners] == [True]
    # Reactivated by its seller while the address is free: taken back, invited again.
    back = client.patch(
        f"{USERS}/{waiting['id']}",
        headers=handle.headers,
        json=patch_body({"op": "replace", "path": "active", "value": True}),
    )
    assert back.status_code == 200
    assert (
        back.json["urn:seller-connector:scim:schemas:extension:seller:2.0:User"]["invitationState"]
        == "pending"
    )
    with connector.uow() as uow:
        assert [o.released for o in uow.users.email_owners(["never@lapse.example.com"])] == [False]
    other = make_seller()
    assert_scim_error(_post(client, other.headers, "never@lapse.example.com"), 409, "uniqueness")


def test_a_lapsed_address_taken_meanwhile_cannot_be_taken_back(
    client: Any, make_seller: Any, connector: Connector
) -> None:
    first, second = make_seller(), make_seller()
    waiting = _post(client, first.headers, "taken@lapse.example.com").json
    user_cases.expire_invitations(connector.uow(), utcnow() + dt.timedelta(days=8))
    assert _post(client, second.headers, "taken@lapse.example.com").status_code == 201
    refused = client.patch(
        f"{USERS}/{waiting['id']}",
        headers=first.headers,
        json=patch_body({"op": "replace", "path": "active", "value": True}),
    )
    assert_scim_error(refused, 409, "uniqueness")


def _capped_seller(
    sqlite_url: str, tmp_path: Path, limit: int
) -> tuple[Connector, Any, Any, dict[str, str]]:
    """A service whose sellers may have ``limit`` pending invitations, and one seller of it:
    (connector, test client, seller, headers)."""
    connector = bootstrap(
        make_settings(sqlite_url, tmp_path, max_pending_invitations=limit), migrate=False
    )
    client = create_app(connector).test_client()
    seller, _ = seller_cases.create_seller(
        connector.uow(),
        connector.catalogue,
        "Capped",
        Plan.professional,
        "o@capped.example.com",
        "O O",
        Actor("t"),
    )
    _, token = seller_cases.issue_token(connector.uow(), seller, "t", Actor("t"))
    return connector, client, seller, {"Authorization": f"Bearer {token}", "Content-Type": SCIM}


def test_a_bulk_counts_the_invitations_it_sends(sqlite_url: str, tmp_path: Path) -> None:
    _, client, _, headers = _capped_seller(sqlite_url, tmp_path, 3)
    body = bulk_creates(user_body(f"bulk{n}@capped.example.com") for n in range(5))
    response = client.post("/scim/v2/Bulk", headers=headers, json=body)
    assert response.status_code == 200, response.get_data(as_text=True)
    statuses = [int(op["status"]) for op in response.json["Operations"]]
    # The cap is counted once for the Bulk and kept by the three invitations it sent.
    assert statuses == [201, 201, 201, 403, 403]


def test_pending_invitations_per_seller_are_capped(sqlite_url: str, tmp_path: Path) -> None:
    connector, client, seller, headers = _capped_seller(sqlite_url, tmp_path, 3)
    for n in range(3):
        assert _post(client, headers, f"u{n}@capped.example.com").status_code == 201
    refused = _post(client, headers, "u3@capped.example.com")
    assert_scim_error(refused, 403, detail_has=("pending invitations",))
    # An accepted invitation makes room.
    first = client.get(
        USERS, headers=headers, query_string={"filter": 'userName eq "u0@capped.example.com"'}
    ).json
    with connector.uow() as uow:
        user = uow.users.get(seller.id, first["Resources"][0]["id"])
        assert user is not None
        user_cases.accept_invitation(uow, seller, user, Actor("t"))
        uow.commit()
    assert _post(client, headers, "u3@capped.example.com").status_code == 201


# -- 4. One canonical form ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "look_alike",
    [
        " staff@b.example",
        "staff@b.example ",
        "staff@b.example.",
        "STAFF@B.Example",
        "\uff53taff@b.example",
    ],
)
def test_look_alikes_of_a_taken_address_are_409(
    client: Any, make_seller: Any, look_alike: str
) -> None:
    holder, other = make_seller(), make_seller()
    assert _post(client, holder.headers, "staff@b.example").status_code == 201
    # As a userName (emails are validated as addresses by the model before our rules).
    body = {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": look_alike}
    assert_scim_error(client.post(USERS, headers=other.headers, json=body), 409, "uniqueness")
    # As an email: refused too, whichever check sees it first.
    refused = _post(client, other.headers, look_alike)
    assert refused.status_code in (400, 409), refused.get_data(as_text=True)


@pytest.mark.parametrize("invisible", ["\u200b", "\t", "\x00", "\u202e", "\ufeff"])
def test_invisible_characters_in_identifiers_are_400(
    client: Any, make_seller: Any, invisible: str
) -> None:
    handle = make_seller()
    body = {
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": f"sta{invisible}ff@c.example",
    }
    refused = client.post(USERS, headers=handle.headers, json=body)
    assert_scim_error(refused, 400, "invalidValue", detail_has=("invisible or control",))
    assert_scim_error(
        _post(client, handle.headers, f"sta{invisible}ff@c.example"), 400, "invalidValue"
    )


def test_the_partner_rule_covers_subdomains(
    client: Any, make_seller: Any, connector: Connector
) -> None:
    handle = make_seller()
    seller_cases.set_partner_domains(
        connector.uow(), handle.seller, ["partner.example"], Actor("t")
    )
    for address in ("bob@partner.example", "bob@sub.partner.example", "bob@a.b.partner.example"):
        refused = _post(client, handle.headers, address)
        assert_scim_error(refused, 400, "invalidValue", detail_has=("partner",))
    assert _post(client, handle.headers, "bob@notpartner.example").status_code == 201


# -- 5. Odd input -----------------------------------------------------------------------------


def test_odd_input_gets_a_400_never_a_500(client: Any, make_seller: Any) -> None:
    handle = make_seller()
    for text in ("meta.created gt 5", "meta.created gt true", 'meta.lastModified ge "yesterday"'):
        response = client.get(USERS, headers=handle.headers, query_string={"filter": text})
        assert response.status_code in (200, 400), response.get_data(as_text=True)
        if response.status_code == 400:
            assert response.json["scimType"] in ("invalidFilter", "invalidValue")
    huge = _post(client, handle.headers, "long@odd.example.com", title="x" * 1_000_000)
    assert_scim_error(huge, 400, "invalidValue", detail_has=("title",))
    bare = client.post(
        USERS,
        headers={"Authorization": handle.headers["Authorization"]},
        data=b'{"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "x@y.z"}',
    )
    assert_scim_error(bare, 415)


def test_a_webhook_timestamp_in_other_digits_is_refused_cleanly(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SELLER_CONNECTOR_WEBHOOK_SECRET", "s" * 32)
    client = create_app(bootstrap(make_settings(sqlite_url, tmp_path), migrate=False)).test_client()
    response = client.post(
        "/keycloak/events",
        data=b"{}",
        headers={
            "X-Seller-Connector-Timestamp": "\u0661\u0667\u0660\u0660\u0660\u0660\u0660\u0660\u0660\u0660",
            "X-Seller-Connector-Signature": "v1=00",
        },
    )
    assert response.status_code == 401
    assert response.json["detail"] == "Missing or malformed signature headers."


# -- 6. Private files -----------------------------------------------------------------------------


def test_the_sqlite_file_and_the_home_folder_are_private(tmp_path: Path) -> None:
    home = tmp_path / "fresh-home"
    settings = make_settings(f"sqlite:///{home / 'store.sqlite3'}", home)
    connector = bootstrap(settings)
    connector.engine.dispose()
    assert stat.S_IMODE(os.stat(home).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(home / "store.sqlite3").st_mode) == 0o600
