"""Unit tests of the seller domain: no database, no server."""

from __future__ import annotations

import datetime as dt

import pytest

from connector.domain.catalogue import Catalogue, Level, NotificationCategory, PermissionCategory
from connector.domain.drafts import UserDraft
from connector.domain.errors import Forbidden, InvalidValue, Mutability
from connector.domain.model import (
    Email,
    Invitation,
    InvitationState,
    PermissionSet,
    Plan,
    Role,
    SellerAccount,
    SellerUser,
    check_length,
    check_role_change,
    check_visible,
    effective_permissions,
    email_domain,
    email_key,
    identity_key,
    is_administrator,
    is_email,
    validate_notifications,
    validate_permissions,
)
from connector.mappings import load_catalogue

CATALOGUE = Catalogue(
    permissions=(
        PermissionCategory("inventory", "Inventory"),
        PermissionCategory("orders", "Orders"),
        PermissionCategory("payments", "Payments", levels=(Level.none, Level.view)),
        PermissionCategory("user-permissions", "User permissions"),
    ),
    notifications=(
        NotificationCategory("orders", "Orders"),
        NotificationCategory("deals", "Deals"),
    ),
)


def user(role: Role = Role.secondary, **permissions: Level) -> SellerUser:
    return SellerUser(
        id="u1",
        seller_id="s1",
        user_name="u@example.com",
        role=role,
        permissions={k.replace("_", "-"): v for k, v in permissions.items()},
    )


def group(name: str, **permissions: Level) -> PermissionSet:
    return PermissionSet(
        id=name,
        seller_id="s1",
        display_name=name,
        permissions={k.replace("_", "-"): v for k, v in permissions.items()},
    )


def grants_of(u: SellerUser, *groups: PermissionSet) -> dict[str, tuple[Level, tuple[str, ...]]]:
    return {
        g.category: (g.level, g.granted_by)
        for g in effective_permissions(CATALOGUE, u, list(groups))
    }


# -- effective_permissions ------------------------------------------------------------


def test_the_highest_level_wins_whatever_its_source() -> None:
    found = grants_of(
        user(inventory=Level.view, orders=Level.admin),
        group("Stock", inventory=Level.edit, orders=Level.view),
        group("Boss", inventory=Level.admin),
    )
    assert found == {
        "inventory": (Level.admin, ("group:Boss",)),
        "orders": (Level.admin, ("direct",)),
    }


def test_every_source_at_the_highest_level_is_named() -> None:
    found = grants_of(
        user(orders=Level.edit), group("A", orders=Level.edit), group("B", orders=Level.view)
    )
    assert found == {"orders": (Level.edit, ("direct", "group:A"))}


def test_none_everywhere_grants_nothing_and_order_follows_the_catalogue() -> None:
    u = user(user_permissions=Level.view, inventory=Level.none)
    found = effective_permissions(
        CATALOGUE, u, [group("G", orders=Level.view, inventory=Level.none)]
    )
    assert [g.category for g in found] == ["orders", "user-permissions"]


def test_the_primary_has_every_category_at_admin_directly() -> None:
    found = grants_of(user(Role.primary), group("Viewers", orders=Level.view))
    assert found == {c.id: (Level.admin, ("direct",)) for c in CATALOGUE.permissions}


def test_no_permission_without_a_grant() -> None:
    assert effective_permissions(CATALOGUE, user(), []) == []


# -- validate_permissions / validate_notifications --------------------------------------


def test_validate_permissions_types_the_levels() -> None:
    assert validate_permissions(CATALOGUE, {"inventory": "edit", "payments": "view"}) == {
        "inventory": Level.edit,
        "payments": Level.view,
    }


@pytest.mark.parametrize(
    ("permissions", "named"),
    [
        ({"teleport": "view"}, "teleport"),
        ({"inventory": "superuser"}, "superuser"),
        ({"inventory": "Edit"}, "Edit"),  # ids are case-exact
        ({"payments": "admin"}, "payments"),  # a level the category does not offer
    ],
)
def test_validate_permissions_names_what_it_refuses(
    permissions: dict[str, str], named: str
) -> None:
    with pytest.raises(InvalidValue) as refused:
        validate_permissions(CATALOGUE, permissions)
    assert named in refused.value.detail


def test_validate_notifications_keeps_order_drops_duplicates_and_names_unknowns() -> None:
    assert validate_notifications(CATALOGUE, ["deals", "orders", "deals"]) == ["deals", "orders"]
    with pytest.raises(InvalidValue, match="weather"):
        validate_notifications(CATALOGUE, ["orders", "weather"])


def test_the_shipped_catalogue_offers_every_level_and_the_issue_categories() -> None:
    catalogue = load_catalogue()
    assert catalogue.administrator_category == "user-permissions"
    assert {
        "inventory",
        "pricing",
        "orders",
        "advertising",
        "reports",
        "payments",
        "settings",
        "user-permissions",
    } <= set(catalogue.category_ids)
    assert validate_permissions(catalogue, {"user-permissions": "admin"}) == {
        "user-permissions": Level.admin
    }


# -- Invitation.current_state ------------------------------------------------------------

NOW = dt.datetime(2026, 5, 1, 12, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("state", "expires", "expected"),
    [
        (InvitationState.pending, NOW + dt.timedelta(seconds=1), InvitationState.pending),
        (InvitationState.pending, NOW, InvitationState.expired),  # expiry instant is past
        (InvitationState.pending, NOW - dt.timedelta(days=1), InvitationState.expired),
        (InvitationState.pending, None, InvitationState.pending),
        (InvitationState.accepted, NOW - dt.timedelta(days=30), InvitationState.accepted),
        (InvitationState.expired, NOW + dt.timedelta(days=1), InvitationState.expired),
    ],
)
def test_invitation_current_state(
    state: InvitationState, expires: dt.datetime | None, expected: InvitationState
) -> None:
    assert (
        Invitation(state, sent_at=NOW - dt.timedelta(days=7), expires_at=expires).current_state(NOW)
        is expected
    )


def test_a_lapsed_invitation_is_renewed_as_long_as_it_was() -> None:
    u = user()
    sent = NOW - dt.timedelta(days=10)
    u.invitation = Invitation(
        InvitationState.expired, sent_at=sent, expires_at=sent + dt.timedelta(days=3)
    )
    assert u.renew_lapsed_invitation(NOW) == dt.timedelta(days=3)
    assert u.invitation == Invitation(
        InvitationState.pending, sent_at=NOW, expires_at=NOW + dt.timedelta(days=3)
    )
    # Pending now: nothing more to renew; an accepted invitation is never renewed.
    assert u.renew_lapsed_invitation(NOW) is None
    u.invitation = Invitation(InvitationState.accepted, sent_at=sent, expires_at=None)
    assert u.renew_lapsed_invitation(NOW) is None
    assert u.invitation.state is InvitationState.accepted


# -- SellerAccount rules ----------------------------------------------------------------------


def test_only_the_professional_plan_adds_secondary_users() -> None:
    SellerAccount("s", "Pro", Plan.professional).check_may_add_secondary_users()
    with pytest.raises(Forbidden) as refused:
        SellerAccount("s", "Solo", Plan.individual).check_may_add_secondary_users()
    assert "professional" in refused.value.detail and "Solo" in refused.value.detail


def test_partner_domains_and_their_subdomains_are_refused_case_insensitively() -> None:
    seller = SellerAccount("s", "Pro", Plan.professional, partner_domains=["agency.example.net"])
    seller.check_not_partner(["me@acme.example.com", "me@notagency.example.net"])
    for address in (
        "Boss@AGENCY.example.NET",
        "bob@sub.agency.example.net",
        "x@agency.example.net.",
    ):
        with pytest.raises(InvalidValue) as refused:
            seller.check_not_partner(["me@acme.example.com", address])
        assert "partner" in refused.value.detail and "agency.example.net" in refused.value.detail


def draft_of(u: SellerUser, **changes: object) -> UserDraft:
    values: dict[str, object] = {
        "user_name": u.user_name,
        "emails": list(u.emails),
        "active": u.active,
    }
    values.update(changes)
    return UserDraft(**values)  # type: ignore[arg-type]


def test_the_primary_stays_active_secondaries_do_not_have_to() -> None:
    secondary = user(Role.secondary)
    assert secondary.deactivate() and not secondary.active
    primary = user(Role.primary)
    with pytest.raises(Forbidden, match="change-primary"):
        primary.deactivate()
    with pytest.raises(Forbidden, match="change-primary"):
        primary.apply(draft_of(primary, active=False), CATALOGUE)
    with pytest.raises(Forbidden, match="change-primary"):
        primary.delete()
    assert primary.active and not primary.deleted


def test_the_primary_identity_changes_only_through_the_operator_flow() -> None:
    primary = SellerUser(
        "p", "s", "owner@acme.example.com", Role.primary, emails=[Email("owner@acme.example.com")]
    )
    for change in (
        {"user_name": "thief@evil.example.com"},
        {"emails": [Email("thief@evil.example.com")]},
        {"emails": []},
        {"emails": [Email("owner@acme.example.com"), Email("thief@evil.example.com")]},
    ):
        with pytest.raises(Forbidden, match="change-primary"):
            primary.apply(draft_of(primary, **change), CATALOGUE)
        assert primary.user_name == "owner@acme.example.com"
        assert [e.value for e in primary.emails] == ["owner@acme.example.com"]
    # Everything else may change, and a different case of the same address is the same.
    changes = primary.apply(
        draft_of(primary, user_name="Owner@ACME.example.com", display_name="Olive"), CATALOGUE
    )
    assert set(changes) == {"userName", "displayName"}


@pytest.mark.parametrize(
    ("current", "requested", "refusal"),
    [
        (Role.primary, None, None),
        (Role.primary, Role.primary, None),
        (Role.secondary, Role.secondary, None),
        (Role.primary, Role.secondary, Forbidden),
        (Role.secondary, Role.primary, Mutability),
    ],
)
def test_the_role_does_not_change_through_scim(
    current: Role, requested: Role | None, refusal: type[Exception] | None
) -> None:
    u = user(current)
    if refusal is None:
        check_role_change(current, requested)
        u.apply(draft_of(u, requested_role=requested), CATALOGUE)
        return
    with pytest.raises(refusal, match="change-primary"):
        check_role_change(current, requested)
    with pytest.raises(refusal):
        u.apply(draft_of(u, requested_role=requested), CATALOGUE)
    assert u.role is current


def test_a_secondary_becomes_primary_only_once_deactivated() -> None:
    candidate = user(Role.secondary, inventory=Level.edit)
    with pytest.raises(Forbidden, match="Deactivate it first"):
        candidate.become_primary()
    candidate.deactivate()
    candidate.become_primary()
    assert candidate.is_primary and candidate.active and candidate.permissions == {}
    former = user(Role.primary)
    former.step_down()
    assert former.role is Role.secondary and not former.active


def test_check_length() -> None:
    check_length("userName", "x" * 300)
    check_length("externalId", None)
    with pytest.raises(InvalidValue, match="userName is 301 characters long: at most 300"):
        check_length("userName", "x" * 301)


# -- Addresses ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("ann@acme.example.com", True),
        ("Ann.Lee+tag@Acme.Example.COM", True),
        ("ann", False),
        ("ann@localhost", False),
        ("@acme.example.com", False),
        ("ann@@acme.example.com", False),
        ("ann lee@acme.example.com", False),
        ("", False),
    ],
)
def test_is_email(value: str, expected: bool) -> None:
    assert is_email(value) is expected


def test_email_key_is_case_insensitive_and_trimmed() -> None:
    assert email_key("  Ann.Lee@ACME.Example.com ") == email_key("ann.lee@acme.example.com")
    assert email_key("ANN@ACME.EXAMPLE.COM") != email_key("anne@acme.example.com")
    # Unicode case folding and normalisation: one address, whatever its form.
    assert email_key("J\u00d6RG@example.com") == email_key("jo\u0308rg@example.com")
    assert email_domain("ann@Sub.Example.COM ") == "sub.example.com"


@pytest.mark.parametrize(
    "look_alike",
    [
        " staff@b.example",
        "staff@b.example ",
        "staff@b.example.",
        "STAFF@B.EXAMPLE",
        "\uff53taff@b.example",  # full-width s
    ],
)
def test_look_alike_addresses_have_one_canonical_key(look_alike: str) -> None:
    assert email_key(look_alike) == email_key("staff@b.example")


def test_case_folding_and_compatibility_forms_give_one_identity_key() -> None:
    assert identity_key("Stra\u00dfe") == identity_key("STRASSE")
    assert identity_key("\ufb01le") == identity_key("file")  # the fi ligature
    assert identity_key("  Order handlers ") == identity_key("order HANDLERS")


@pytest.mark.parametrize("character", ["\u200b", "\t", "\x00", "\u202e", "\u2028", "\ue000"])
def test_invisible_and_control_characters_are_refused(character: str) -> None:
    check_visible("userName", "staff@b.example")
    with pytest.raises(InvalidValue, match="userName contains the invisible or control character"):
        check_visible("userName", f"staff{character}@b.example")
    u = user()
    with pytest.raises(InvalidValue):
        u.apply(draft_of(u, user_name=f"staff{character}@b.example"), CATALOGUE)
    with pytest.raises(InvalidValue):
        u.apply(draft_of(u, emails=[Email(f"staff@b.example{character}")]), CATALOGUE)


def test_other_attributes_are_bounded() -> None:
    u = user()
    u.apply(draft_of(u, profile={"title": "x" * 2048}), CATALOGUE)
    with pytest.raises(InvalidValue, match="title is 2049 characters long"):
        u.apply(draft_of(u, profile={"title": "x" * 2049}), CATALOGUE)
    with pytest.raises(InvalidValue, match=r"addresses\.streetAddress"):
        u.apply(draft_of(u, profile={"addresses": [{"streetAddress": "x" * 5000}]}), CATALOGUE)
    with pytest.raises(InvalidValue, match="bytes"):
        u.apply(draft_of(u, profile={"phoneNumbers": [{"value": "1" * 2000}] * 40}), CATALOGUE)


def test_a_user_reserves_its_emails_and_its_address_user_name() -> None:
    u = SellerUser(
        id="u",
        seller_id="s",
        user_name="Login@Acme.example.com",
        role=Role.secondary,
        emails=[Email("Work@acme.example.com", primary=True), Email("home@example.org")],
    )
    assert u.email_keys == {"login@acme.example.com", "work@acme.example.com", "home@example.org"}
    assert u.primary_email == "Work@acme.example.com"
    plain = SellerUser(id="v", seller_id="s", user_name="jdoe", role=Role.secondary)
    assert plain.email_keys == set() and plain.primary_email is None


def test_administrator_is_the_primary_or_admin_on_user_permissions() -> None:
    def admin(u: SellerUser, *groups: PermissionSet) -> bool:
        return is_administrator(CATALOGUE, u, list(groups))

    assert admin(user(Role.primary))
    assert admin(user(user_permissions=Level.admin))
    assert not admin(user(user_permissions=Level.edit))
    assert not admin(user(inventory=Level.admin))
    # Through a permission set too: the one rule SCIM, the access review and the audit share.
    assert admin(user(), group("Admins", user_permissions=Level.admin))
    assert not admin(user(), group("Editors", user_permissions=Level.edit))


def test_who_receives_notifications() -> None:
    """README, rule 7: the primary every category; an active secondary user its subscriptions;
    a deactivated or deleted user, or one without an address, nothing."""
    from connector.domain.model import Email, Role, SellerUser

    primary = SellerUser("p", "s", "owner@x.example.com", Role.primary, notifications=[])
    staff = SellerUser(
        "a",
        "s",
        "sam",
        Role.secondary,
        emails=[Email("sam@x.example.com")],
        notifications=["orders"],
    )
    assert primary.receives("deals") and primary.receives("orders")
    assert staff.receives("orders") and not staff.receives("deals")
    staff.deactivate()
    assert not staff.receives_notifications and not staff.receives("orders")
    staff.reactivate()
    staff.delete()
    assert not staff.receives("orders")
    nameless = SellerUser("b", "s", "bob", Role.secondary, notifications=["orders"])
    assert not nameless.receives("orders")
