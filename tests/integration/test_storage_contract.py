"""scim2-server's own storage contract, run against our SQL storage on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest
from scim2_server.testing import ScimStorageContract
from scim2_server.utils import load_default_provider
from sqlalchemy import update

from connector.adapters.sql.tables import UserRow
from connector.domain.drafts import Actor
from connector.ports.schemas import ENTERPRISE_SCHEMA
from scim.storage import Renderer, RequestContext, SellerStorage


class TestSellerStorageContract(ScimStorageContract):
    @pytest.fixture
    def storage(self, connector: Any, make_seller: Any) -> Any:
        handle = make_seller()
        # The contract expects an empty storage and counts every resource it finds. A
        # seller always has a primary user and default groups, so the test data hides them
        # (a row-level change, not a change to the storage under test).
        with connector.uow() as uow:
            for group in uow.permission_sets.list(handle.seller.id):
                uow.permission_sets.delete(group)
            uow.write(update(UserRow).where(UserRow.id == handle.primary.id).values(deleted=True))
            uow.commit()
        provider = load_default_provider()
        renderer = Renderer(
            "http://scim.test/scim/v2", connector.catalogue, {ENTERPRISE_SCHEMA}, set()
        )
        return SellerStorage(
            connector, RequestContext(handle.seller.id, Actor("contract")), renderer, provider
        )
