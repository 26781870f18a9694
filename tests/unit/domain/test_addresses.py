"""What saving a user writes to its reserved addresses (one rule for the single save and a
directory run's batches)."""

from __future__ import annotations

from connector.domain.addresses import AddressClaim, AddressFlag, HeldAddress, address_changes
from connector.domain.model import Role, SellerUser
from connector.domain.values import Email


def _user(*addresses: str, user_name: str = "ann", deleted: bool = False) -> SellerUser:
    return SellerUser(
        "u1", "s1", user_name, Role.secondary, emails=[Email(a) for a in addresses], deleted=deleted
    )


def _held(*rows: tuple[str, bool, bool]) -> dict[str, HeldAddress]:
    return {key: HeldAddress(key, current, released) for key, current, released in rows}


def test_a_new_user_claims_every_address_it_uses_in_order_including_an_email_user_name() -> None:
    user = _user("B@Example.com", "a@example.com", user_name="c@example.com")
    claims, flags = address_changes(user, {})
    assert claims == [
        AddressClaim("a@example.com", "u1", "s1", True),
        AddressClaim("b@example.com", "u1", "s1", True),
        AddressClaim("c@example.com", "u1", "s1", True),
    ]
    assert flags == []


def test_an_unchanged_user_writes_nothing() -> None:
    user = _user("a@example.com")
    assert address_changes(user, _held(("a@example.com", True, False))) == ([], [])


def test_an_address_no_longer_used_stays_reserved_but_is_no_longer_current() -> None:
    user = _user("new@example.com")
    claims, flags = address_changes(user, _held(("old@example.com", True, False)))
    assert claims == [AddressClaim("new@example.com", "u1", "s1", True)]
    assert flags == [AddressFlag("old@example.com", "u1", False)]


def test_a_released_address_the_user_uses_again_is_taken_back() -> None:
    user = _user("a@example.com")
    claims, flags = address_changes(user, _held(("a@example.com", False, True)))
    assert claims == []
    assert flags == [AddressFlag("a@example.com", "u1", True)]
    # Even when it was still marked current: taking it back clears its release.
    assert address_changes(user, _held(("a@example.com", True, True)))[1] == flags


def test_a_released_address_no_longer_used_is_left_released() -> None:
    user = _user("other@example.com")
    claims, flags = address_changes(user, _held(("a@example.com", False, True)))
    assert flags == []
    assert claims == [AddressClaim("other@example.com", "u1", "s1", True)]


def test_a_deleted_user_keeps_its_addresses_reserved_none_current() -> None:
    user = _user("a@example.com", "b@example.com", deleted=True)
    claims, flags = address_changes(
        user, _held(("a@example.com", True, False), ("c@example.com", False, True))
    )
    assert flags == [AddressFlag("a@example.com", "u1", False)]
    assert claims == [AddressClaim("b@example.com", "u1", "s1", False)]
