"""Migration rcp1 writes the notification recipient index again from the users, mending an
index that directory runs left behind (they did not keep it before), on both stores."""

from __future__ import annotations

from typing import Any

from alembic import command
from sqlalchemy import delete, insert, select

from connector.adapters.sql.database import alembic_config, upgrade
from connector.adapters.sql.repositories import recipient_rows, recipients, user_to_domain, users
from tests.conftest import SELLER_USER, user_body


def _index(connector: Any) -> set[tuple[str, str, str]]:
    with connector.engine.connect() as connection:
        rows = connection.execute(
            select(recipients.c.user_id, recipients.c.category, recipients.c.email)
        )
        return {tuple(r) for r in rows}


def _expected(connector: Any) -> set[tuple[str, str, str]]:
    with connector.engine.connect() as connection:
        stored = [user_to_domain(r) for r in connection.execute(select(users))]
    return {
        (r["user_id"], r["category"], r["email"])
        for user in stored
        if not user.deleted
        for r in recipient_rows(user)
    }


def test_rcp1_mends_a_stale_index(
    connector: Any, make_seller: Any, client: Any, database_url: str
) -> None:
    seller = make_seller()
    body = user_body("sam@acme.example.com", **{SELLER_USER: {"notifications": ["orders"]}})
    body["schemas"].append(SELLER_USER)
    created = client.post("/scim/v2/Users", json=body, headers=seller.headers)
    assert created.status_code == 201, created.get_data(as_text=True)
    sam = created.get_json()["id"]
    right = _index(connector)
    assert right == _expected(connector)
    assert (sam, "orders", "sam@acme.example.com") in right
    with connector.engine.begin() as connection:  # as a directory run left it
        connection.execute(delete(recipients).where(recipients.c.user_id == sam))
        connection.execute(
            insert(recipients),
            {
                "seller_id": seller.seller.id,
                "category": "deals",
                "sort_key": "1:stale",
                "user_id": sam,
                "email": "sam@acme.example.com",
                "role": "secondary",
            },
        )
    assert _index(connector) != right
    connector.engine.dispose()
    command.downgrade(alembic_config(database_url), "feed1")
    upgrade(database_url)
    assert _index(connector) == right
