"""Use cases on seller accounts: creation, tokens, partners, the operator's change of primary."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets

from connector.domain.catalogue import Catalogue
from connector.domain.drafts import Actor
from connector.domain.errors import Forbidden, InvalidValue, NotFound, Uniqueness
from connector.domain.model import (
    MAX_EMAIL_LENGTH,
    Email,
    PermissionSet,
    Plan,
    Role,
    SellerAccount,
    SellerUser,
    check_length,
    email_key,
    is_email,
    text_key,
    utcnow,
)
from connector.ports.store import ApiToken, AuditEvent, OutboxEntry, UnitOfWork
from connector.services.users import enqueue_user_sync, new_id

TOKEN_PREFIX = "scn_"  # noqa: S105 - a prefix, not a secret


def hash_secret(secret: str) -> str:
    """Tokens are kept only as a SHA-256 hash: they are long random strings, so no salt is needed."""
    return hashlib.sha256(secret.encode()).hexdigest()


def find_seller(uow: UnitOfWork, ref: str) -> SellerAccount:
    """A seller by its id or its unique name.

    :raises NotFound: when neither matches.
    """
    seller = uow.sellers.get(ref) or uow.sellers.get_by_name(ref)
    if seller is None:
        raise NotFound(f"No seller account with id or name {ref!r}.")
    return seller


def create_seller(
    uow: UnitOfWork,
    catalogue: Catalogue,
    name: str,
    plan: Plan,
    primary_email: str,
    primary_name: str,
    actor: Actor,
) -> tuple[SellerAccount, SellerUser]:
    """Create a seller account with its primary user and the default permission sets."""
    name = name.strip()
    if not name:
        raise InvalidValue("A seller account needs a name.")
    check_length("The seller's name", name, 200)
    check_length("The primary user's email", primary_email, MAX_EMAIL_LENGTH)
    check_length("The primary user's name", primary_name)
    if uow.sellers.get_by_name(name) is not None:
        raise Uniqueness(f"A seller account named {name!r} already exists.")
    if not is_email(primary_email):
        raise InvalidValue(f"{primary_email!r} is not an email address.")
    if uow.users.email_owners([email_key(primary_email)]):
        raise Uniqueness(
            f"The email address {primary_email} has already been used. The primary user "
            "needs an address never used on any seller account."
        )
    given, _, family = primary_name.strip().partition(" ")
    now = utcnow()
    seller = SellerAccount(id=new_id(), name=name, plan=plan, created_at=now)
    primary = SellerUser(
        id=new_id(),
        seller_id=seller.id,
        user_name=primary_email,
        role=Role.primary,
        emails=[Email(primary_email, type="work", primary=True)],
        given_name=given or None,
        family_name=family or None,
        display_name=primary_name.strip() or None,
        notifications=list(catalogue.notification_ids),
        created_at=now,
        updated_at=now,
    )
    seller.primary_user_id = primary.id
    uow.sellers.add(seller)
    uow.users.add(primary)
    uow.audit.append(
        AuditEvent(
            seller.id,
            actor.name,
            "seller.created",
            f"seller:{seller.id}",
            {"name": name, "plan": plan.value, "primary": primary_email},
        )
    )
    uow.outbox.add(OutboxEntry(seller_id=seller.id, topic="seller.sync", aggregate_id=seller.id))
    for default in catalogue.default_permission_sets:
        permission_set = PermissionSet(
            id=new_id(),
            seller_id=seller.id,
            display_name=default.name,
            permissions=dict(default.permissions),
            profile={},
            created_at=now,
            updated_at=now,
        )
        uow.permission_sets.add(permission_set)
        uow.outbox.add(
            OutboxEntry(
                seller_id=seller.id, topic="permission_set.sync", aggregate_id=permission_set.id
            )
        )
    enqueue_user_sync(uow, primary)
    return seller, primary


def issue_token(
    uow: UnitOfWork, seller: SellerAccount, label: str, actor: Actor
) -> tuple[ApiToken, str]:
    """Issue a bearer token for the seller's SCIM endpoint.

    :returns: the stored token and its plain text, which is shown once and never kept.
    """
    token_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    token = ApiToken(
        id=token_id,
        seller_id=seller.id,
        token_hash=hash_secret(secret),
        label=label,
        created_at=utcnow(),
    )
    uow.tokens.add(token)
    uow.audit.append(
        AuditEvent(seller.id, actor.name, "token.issued", f"token:{token_id}", {"label": label})
    )
    return token, f"{TOKEN_PREFIX}{token_id}.{secret}"


def revoke_token(uow: UnitOfWork, seller: SellerAccount, token_id: str, actor: Actor) -> ApiToken:
    """Revoke a token at once: the next request that carries it is refused."""
    token = uow.tokens.get(token_id)
    if token is None or token.seller_id != seller.id:
        raise NotFound(f"Seller {seller.name!r} has no token {token_id!r}.")
    if token.revoked_at is None:
        token.revoked_at = utcnow()
        uow.tokens.save(token)
        uow.audit.append(
            AuditEvent(seller.id, actor.name, "token.revoked", f"token:{token_id}", {})
        )
    return token


def authenticate(uow: UnitOfWork, presented: str) -> tuple[SellerAccount, ApiToken] | None:
    """The seller and token a bearer token stands for, or None (unknown, malformed or revoked).

    The secret is compared in constant time against the stored hash.
    """
    if not presented.startswith(TOKEN_PREFIX):
        return None
    token_id, dot, secret = presented[len(TOKEN_PREFIX) :].partition(".")
    if not dot or not token_id or not secret or len(presented) > 200:
        return None
    token = uow.tokens.get(token_id)
    expected = token.token_hash if token else hash_secret("x" * 43)
    matches = hmac.compare_digest(hash_secret(secret), expected)
    if token is None or not matches or token.revoked_at is not None:
        return None
    seller = uow.sellers.get(token.seller_id)
    if seller is None:
        return None
    return seller, token


def set_partner_domains(
    uow: UnitOfWork, seller: SellerAccount, domains: list[str], actor: Actor
) -> None:
    """Record the email domains of the seller's authorized partners (service providers)."""
    cleaned = sorted({text_key(d.strip().lstrip("@")) for d in domains if d.strip()})
    before = seller.partner_domains
    seller.partner_domains = cleaned
    uow.sellers.save(seller)
    uow.audit.append(
        AuditEvent(
            seller.id,
            actor.name,
            "seller.partners",
            f"seller:{seller.id}",
            {"from": before, "to": cleaned},
        )
    )


def set_plan(uow: UnitOfWork, seller: SellerAccount, plan: Plan, actor: Actor) -> None:
    """Change the selling plan. Downgrading keeps existing users: it only stops new ones."""
    before = seller.plan
    seller.plan = plan
    uow.sellers.save(seller)
    uow.audit.append(
        AuditEvent(
            seller.id,
            actor.name,
            "seller.plan",
            f"seller:{seller.id}",
            {"from": before.value, "to": plan.value},
        )
    )


PRIMARY_CHANGE_LIFESPAN = dt.timedelta(days=2)


def request_primary_change(
    uow: UnitOfWork, seller: SellerAccount, new_email: str, actor: Actor
) -> tuple[str, str]:
    """Start the operator flow that makes another address the primary user.

    The change completes only when the new address confirms the link it is sent.
    A secondary user can become primary only once it is deactivated.

    :returns: the change id and the one-time confirmation token (to be emailed, never logged).
    """
    if not is_email(new_email):
        raise InvalidValue(f"{new_email!r} is not an email address.")
    key = email_key(new_email)
    current = uow.users.get(seller.id, seller.primary_user_id or "")
    if current is not None and key in current.email_keys:
        raise InvalidValue(f"{new_email} is already the primary user's address.")
    for owner in uow.users.email_owners([key]):
        if owner.seller_id != seller.id:
            raise Uniqueness(
                f"The email address {new_email} has already been used by a user of this "
                "service: the primary user needs an address of this seller or a brand-new one."
            )
        user = uow.users.get(seller.id, owner.user_id, include_deleted=True)
        if user is not None and user.active and not user.deleted:
            raise Forbidden(
                f"{new_email} belongs to an active secondary user. Deactivate it first: a "
                "secondary user becomes primary only after being deactivated as a secondary."
            )
    token = secrets.token_urlsafe(32)
    change_id = new_id()
    now = utcnow()
    uow.primary_changes.add(
        change_id, seller.id, new_email, hash_secret(token), now, now + PRIMARY_CHANGE_LIFESPAN
    )
    uow.audit.append(
        AuditEvent(
            seller.id,
            actor.name,
            "primary.change-requested",
            f"seller:{seller.id}",
            {"to": new_email, "expiresAt": (now + PRIMARY_CHANGE_LIFESPAN).isoformat()},
        )
    )
    return change_id, token


def confirm_primary_change(
    uow: UnitOfWork, catalogue: Catalogue, token: str, actor: Actor
) -> SellerUser:
    """Complete a primary change from its confirmation token.

    The former primary stays as a deactivated secondary user, with its history.
    """
    change = uow.primary_changes.by_token_hash(hash_secret(token))
    now = utcnow()
    if change is None or change["completed_at"] is not None:
        raise NotFound("This confirmation link is unknown or was already used.")
    if change["expires_at"] <= now:
        raise Forbidden("This confirmation link has expired: ask the operator for a new one.")
    seller = find_seller(uow, change["seller_id"])
    key = email_key(change["new_email"])
    owners = [o for o in uow.users.email_owners([key]) if o.seller_id == seller.id]
    old = uow.users.get(seller.id, seller.primary_user_id or "")
    if owners:
        new = uow.users.get(seller.id, owners[0].user_id, include_deleted=True)
        assert new is not None
        if new.active and not new.deleted:
            raise Forbidden(
                f"{change['new_email']} belongs to an active secondary user: deactivate it first."
            )
        new.role = Role.primary
        new.active = True
        new.deleted = False
        new.permissions = {}
        new.updated_at = now
        uow.users.save(new)
    else:
        if uow.users.email_owners([key]):
            raise Uniqueness(f"The email address {change['new_email']} has been used meanwhile.")
        new = SellerUser(
            id=new_id(),
            seller_id=seller.id,
            user_name=change["new_email"],
            role=Role.primary,
            emails=[Email(change["new_email"], type="work", primary=True)],
            notifications=list(catalogue.notification_ids),
            created_at=now,
            updated_at=now,
        )
        uow.users.add(new)
    if old is not None:
        old.role = Role.secondary
        old.active = False
        old.updated_at = now
        uow.users.save(old)
        enqueue_user_sync(uow, old)
    seller.primary_user_id = new.id
    uow.sellers.save(seller)
    uow.primary_changes.complete(change["id"], now)
    uow.audit.append(
        AuditEvent(
            seller.id,
            actor.name,
            "primary.changed",
            f"user:{new.id}",
            {"from": old.user_name if old else None, "to": new.user_name},
        )
    )
    enqueue_user_sync(uow, new)
    return new
