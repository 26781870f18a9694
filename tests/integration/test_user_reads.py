"""A user and its permission sets read in one statement (SqlUsers.get_with_sets) answer
exactly what reading them apart does, on SQLite and on PostgreSQL."""

from __future__ import annotations

import uuid
from typing import Any

from connector.domain.catalogue import Level
from connector.domain.model import PermissionSet, Role, SellerUser


def _add_set(connector: Any, seller_id: str, name: str, members: list[str]) -> PermissionSet:
    permission_set = PermissionSet(
        id=uuid.uuid4().hex,
        seller_id=seller_id,
        display_name=name,
        permissions={"user-permissions": Level.admin},
        member_ids=members,
    )
    with connector.uow() as uow:
        uow.permission_sets.add(permission_set)
        uow.commit()
    return permission_set


def _apart(connector: Any, seller_id: str, user_id: str) -> tuple[Any, list[PermissionSet]]:
    with connector.uow() as uow:
        user = uow.users.get(seller_id, user_id)
        assert user is not None
        return user, uow.permission_sets.of_user(user_id)


def test_a_user_with_sets_reads_as_it_does_apart(connector: Any, make_seller: Any) -> None:
    handle = make_seller()
    seller_id, user_id = handle.seller.id, handle.primary.id
    _add_set(connector, seller_id, "Zeta buyers", [user_id])
    _add_set(connector, seller_id, "alpha admins", [user_id])
    _add_set(connector, seller_id, "Not hers", [])
    with connector.uow() as uow:
        found = uow.users.get_with_sets(seller_id, user_id)
    assert found is not None
    user, sets = found
    expected_user, expected_sets = _apart(connector, seller_id, user_id)
    assert user == expected_user
    assert sets == expected_sets
    assert [s.display_name for s in sets] == ["alpha admins", "Zeta buyers"]
    assert all(s.permissions == {"user-permissions": Level.admin} for s in sets)


def test_a_user_in_no_set_reads_with_none(connector: Any, make_seller: Any) -> None:
    handle = make_seller()
    with connector.uow() as uow:
        found = uow.users.get_with_sets(handle.seller.id, handle.primary.id)
    assert found is not None
    assert found[0] == _apart(connector, handle.seller.id, handle.primary.id)[0]
    assert found[1] == []


def test_another_sellers_user_and_an_unknown_one_are_not_found(
    connector: Any, make_seller: Any
) -> None:
    mine, theirs = make_seller(), make_seller()
    with connector.uow() as uow:
        assert uow.users.get_with_sets(mine.seller.id, theirs.primary.id) is None
        assert uow.users.get_with_sets(mine.seller.id, uuid.uuid4().hex) is None


def test_ids_of_names_this_sellers_users_and_leaves_deleted_ones_to_the_asker(
    connector: Any, make_seller: Any
) -> None:
    mine, theirs = make_seller(), make_seller()
    seller_id = mine.seller.id
    staff = SellerUser(uuid.uuid4().hex, seller_id, "staff@mine.example.com", Role.secondary)
    gone = SellerUser(
        uuid.uuid4().hex, seller_id, "gone@mine.example.com", Role.secondary, deleted=True
    )
    with connector.uow() as uow:
        uow.users.add(staff)
        uow.users.add(gone)
        uow.commit()
    asked = [staff.id, gone.id, mine.primary.id, theirs.primary.id, uuid.uuid4().hex, staff.id]
    with connector.uow() as uow:
        assert uow.users.ids_of(seller_id, asked) == {staff.id, mine.primary.id}
        assert uow.users.ids_of(seller_id, asked, visible_only=False) == {
            staff.id,
            gone.id,
            mine.primary.id,
        }
        assert uow.users.ids_of(seller_id, []) == set()
