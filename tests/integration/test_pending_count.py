"""The count behind the cap on pending invitations, on both stores: exact, and bounded."""

from __future__ import annotations

import datetime as dt
from typing import Any

from connector.domain.drafts import Actor
from connector.domain.model import utcnow
from connector.services import users as user_cases
from tests.conftest import user_body


def test_the_count_stops_at_its_bound_and_forgets_accepted_and_expired(
    connector: Any, make_seller: Any, client: Any
) -> None:
    handle = make_seller()
    ids = []
    for n in range(5):
        response = client.post(
            "/scim/v2/Users", headers=handle.headers, json=user_body(f"p{n}@count.example.com")
        )
        assert response.status_code == 201, response.get_data(as_text=True)
        ids.append(response.json["id"])
    seller_id = handle.seller.id
    with connector.uow() as uow:
        users = uow.users
        assert users.pending_invitations(seller_id, utcnow()) == 5
        assert users.pending_invitations(seller_id, utcnow(), at_most=3) == 3
        assert users.pending_invitations(seller_id, utcnow(), at_most=50) == 5
        # Another seller's invitations are not counted.
        assert users.pending_invitations(make_seller().seller.id, utcnow()) == 0
    with connector.uow() as uow:
        user = uow.users.get(seller_id, ids[0])
        user_cases.accept_invitation(uow, handle.seller, user, Actor("t"))
        uow.commit()
    with connector.uow() as uow:
        assert uow.users.pending_invitations(seller_id, utcnow()) == 4
        # Past their expiry the others no longer count, bounded or not.
        later = utcnow() + dt.timedelta(days=400)
        assert uow.users.pending_invitations(seller_id, later) == 0
        assert uow.users.pending_invitations(seller_id, later, at_most=3) == 0
