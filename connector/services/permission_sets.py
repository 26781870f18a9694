"""Use cases on permission sets (SCIM Groups).

As in :mod:`connector.services.users`: the use cases are one unit of work each; the steps
(``add_permission_set``, ``change_permission_set``) run inside one the caller holds open.
"""

from __future__ import annotations

from collections.abc import Iterable

from connector.domain.catalogue import Catalogue
from connector.domain.drafts import Actor, PermissionSetDraft
from connector.domain.errors import InvalidValue, NotFound, Uniqueness, VersionMismatch
from connector.domain.model import (
    PermissionSet,
    SellerAccount,
    check_permission_set_draft,
    identity_key,
    utcnow,
    validate_permissions,
)
from connector.ports.outbox import PERMISSION_SET_DELETE, PERMISSION_SET_SYNC
from connector.ports.store import AuditEvent, OutboxEntry, UnitOfWork
from connector.services.users import enqueue_sync_of, new_id


def check_members(uow: UnitOfWork, seller: SellerAccount, member_ids: list[str]) -> list[str]:
    """Members must be visible users of this seller; anything else is an invalid value."""
    wanted = list(dict.fromkeys(member_ids))
    found = uow.users.ids_of(seller.id, wanted)
    missing = [m for m in wanted if m not in found]
    if missing:
        raise InvalidValue(
            f"Group members must be users of this seller; not found: {', '.join(missing[:5])}"
            + (" ..." if len(missing) > 5 else "")
        )
    return wanted


def _check_name_free(uow: UnitOfWork, seller: SellerAccount, set_id: str | None, name: str) -> None:
    holder = uow.permission_sets.by_display_name(seller.id, name)
    if holder is not None and holder.id != set_id:
        raise Uniqueness(f"A group named {name!r} already exists for this seller.")


def _enqueue(
    uow: UnitOfWork,
    permission_set: PermissionSet,
    touched_users: set[str],
    checked: list[str],
) -> None:
    """The set's sync, and a user sync for each touched user; ``checked`` are the members
    :func:`check_members` just found to be this seller's users (not read again)."""
    uow.outbox.add(
        OutboxEntry(
            seller_id=permission_set.seller_id,
            topic=PERMISSION_SET_SYNC,
            aggregate_id=permission_set.id,
        )
    )
    _enqueue_user_syncs(uow, permission_set.seller_id, touched_users, known=set(checked))


def _enqueue_user_syncs(
    uow: UnitOfWork, seller_id: str, user_ids: Iterable[str], known: set[str] | None = None
) -> None:
    """A user sync for each of these users of the seller (deleted ones too: the identity
    provider must learn what they lost). Ids in ``known`` are taken as users of the seller
    without reading them."""
    wanted = set(user_ids)
    sure = wanted & known if known else set()
    found = sure | uow.users.ids_of(seller_id, wanted - sure, visible_only=False)
    for user_id in sorted(found):
        enqueue_sync_of(uow, seller_id, user_id)


def get_permission_set(uow: UnitOfWork, seller: SellerAccount, set_id: str) -> PermissionSet:
    """A permission set of this seller; another seller's is not found."""
    found = uow.permission_sets.get(seller.id, set_id)
    if found is None:
        raise NotFound(f"Group {set_id} not found.")
    return found


def add_permission_set(
    uow: UnitOfWork,
    catalogue: Catalogue,
    seller: SellerAccount,
    draft: PermissionSetDraft,
    actor: Actor,
) -> PermissionSet:
    """Create a permission set, with its permissions and members."""
    check_permission_set_draft(draft)
    _check_name_free(uow, seller, None, draft.display_name)
    now = utcnow()
    permission_set = PermissionSet(
        id=new_id(),
        seller_id=seller.id,
        display_name=draft.display_name,
        external_id=draft.external_id,
        permissions=validate_permissions(catalogue, draft.permissions),
        member_ids=check_members(uow, seller, draft.member_ids),
        profile=dict(draft.profile),
        created_at=now,
        updated_at=now,
    )
    uow.permission_sets.add(permission_set)
    uow.audit.append(
        AuditEvent(
            seller.id,
            actor.name,
            "group.created",
            f"group:{permission_set.id}",
            {
                "displayName": permission_set.display_name,
                "permissions": {k: v.value for k, v in permission_set.permissions.items()},
                "members": permission_set.member_ids,
            },
        )
    )
    _enqueue(uow, permission_set, set(permission_set.member_ids), permission_set.member_ids)
    return permission_set


def change_permission_set(
    uow: UnitOfWork,
    catalogue: Catalogue,
    seller: SellerAccount,
    permission_set: PermissionSet,
    draft: PermissionSetDraft,
    actor: Actor,
    *,
    expected_version: int | None = None,
) -> PermissionSet:
    """Replace a permission set's name, permissions and members."""
    check_permission_set_draft(draft)
    if identity_key(draft.display_name) != identity_key(permission_set.display_name):
        _check_name_free(uow, seller, permission_set.id, draft.display_name)
    members = check_members(uow, seller, draft.member_ids)
    before = list(permission_set.member_ids)
    changes = permission_set.apply(draft, catalogue, members)
    if not changes:
        return permission_set
    permission_set.updated_at = utcnow()
    uow.permission_sets.save(permission_set, expected_version=expected_version)
    uow.audit.append(
        AuditEvent(seller.id, actor.name, "group.updated", f"group:{permission_set.id}", changes)
    )
    # Every member's effective permissions change when the set's permissions do.
    touched = set(members) ^ set(before)
    if "permissions" in changes:
        touched |= set(members)
    _enqueue(uow, permission_set, touched, members)
    return permission_set


def create_permission_set(
    uow: UnitOfWork,
    catalogue: Catalogue,
    seller: SellerAccount,
    draft: PermissionSetDraft,
    actor: Actor,
) -> PermissionSet:
    """Create a permission set (one unit of work)."""
    with uow:
        created = add_permission_set(uow, catalogue, seller, draft, actor)
        uow.commit()
    return created


def replace_permission_set(
    uow: UnitOfWork,
    catalogue: Catalogue,
    seller: SellerAccount,
    set_id: str,
    draft: PermissionSetDraft,
    actor: Actor,
    *,
    expected_version: int | None = None,
    current: PermissionSet | None = None,
) -> PermissionSet:
    """Replace a permission set (one unit of work); ``current`` as in ``replace_user``."""
    with uow:
        if current is None or current.id != set_id or current.seller_id != seller.id:
            current = get_permission_set(uow, seller, set_id)
        updated = change_permission_set(
            uow, catalogue, seller, current, draft, actor, expected_version=expected_version
        )
        uow.commit()
    return updated


def delete_permission_set(
    uow: UnitOfWork,
    seller: SellerAccount,
    set_id: str,
    actor: Actor,
    *,
    expected_version: int | None = None,
) -> None:
    """Delete a permission set; its members lose what it granted."""
    with uow:
        permission_set = get_permission_set(uow, seller, set_id)
        if expected_version is not None and permission_set.version != expected_version:
            raise VersionMismatch(f"Group {set_id} changed since version {expected_version}.")
        uow.permission_sets.delete(permission_set)
        uow.audit.append(
            AuditEvent(
                seller.id,
                actor.name,
                "group.deleted",
                f"group:{permission_set.id}",
                {"displayName": permission_set.display_name, "members": permission_set.member_ids},
            )
        )
        uow.outbox.add(
            OutboxEntry(
                seller_id=seller.id, topic=PERMISSION_SET_DELETE, aggregate_id=permission_set.id
            )
        )
        _enqueue_user_syncs(uow, seller.id, permission_set.member_ids)
        uow.commit()
