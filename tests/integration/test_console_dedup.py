"""A console change that the plugin's webhook already applied is skipped by the poller (the
fallback), so nothing is applied twice; one the webhook missed is applied."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import update

from connector.adapters.sql.tables import UserRow
from connector.ports.identity import ProviderChange
from connector.services.console import SEEN_PREFIX, poll_console
from connector.services.users import get_user
from tests.conftest import user_body


class RecordedFeed:
    """The ChangeFeed port fed from a list: this test is about the poller, not Keycloak."""

    def __init__(self, changes: list[ProviderChange]) -> None:
        self.changes = changes

    def changes_since(self, marker: str | None) -> tuple[list[ProviderChange], str | None]:
        return (self.changes, "end") if marker != "end" else ([], "end")


class ByIdpId:
    def __init__(self, seller_id: str, user_ids: dict[str, str]) -> None:
        self.seller_id = seller_id
        self.user_ids = user_ids

    def find(self, provider_user_id: str) -> tuple[str, str] | None:
        user_id = self.user_ids.get(provider_user_id)
        return (self.seller_id, user_id) if user_id else None


def test_poller_skips_what_the_webhook_applied(
    client: Any, make_seller: Any, connector: Any
) -> None:
    handle = make_seller()
    ids = []
    for name in ("webhooked", "polled"):
        created = client.post(
            "/scim/v2/Users", headers=handle.headers, json=user_body(f"{name}@dedup.example.com")
        )
        assert created.status_code == 201
        ids.append(created.json["id"])
    now = dt.datetime.now(dt.UTC)
    changes = [
        ProviderChange(provider_user_id="kc-1", kind="disabled", at=now, event_id="ev-webhooked"),
        ProviderChange(provider_user_id="kc-2", kind="disabled", at=now, event_id="ev-polled"),
    ]
    with connector.uow() as uow:
        uow.write(update(UserRow).where(UserRow.id == ids[0]).values(idp_id="kc-1"))
        uow.write(update(UserRow).where(UserRow.id == ids[1]).values(idp_id="kc-2"))
        # The webhook applied the first event, then the user was reactivated through SCIM.
        uow.markers.set(SEEN_PREFIX + "ev-webhooked", now.isoformat())
        uow.markers.set("keycloak:console-changes", "start")
        uow.commit()

    report = poll_console(
        connector.uow,
        connector.catalogue,
        RecordedFeed(changes),
        ByIdpId(handle.seller.id, {"kc-1": ids[0], "kc-2": ids[1]}),
    )

    assert [o.provider_user_id for o in report.outcomes] == ["kc-2"]
    with connector.uow() as uow:
        assert get_user(uow, handle.seller, ids[0]).active is True
        assert get_user(uow, handle.seller, ids[1]).active is False
