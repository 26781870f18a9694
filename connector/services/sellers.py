"""Use cases on seller accounts: creation, tokens, partners, the operator's change of primary."""

from __future__ import annotations

import datetime as dt
import secrets
from html import escape

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
    check_visible,
    email_key,
    identity_key,
    is_email,
    utcnow,
)
from connector.ports.mail import Email as MailMessage
from connector.ports.mail import Mailer
from connector.ports.outbox import PERMISSION_SET_SYNC, SELLER_SYNC
from connector.ports.store import ApiToken, AuditEvent, OutboxEntry, PrimaryChange, UnitOfWork
from connector.services.authentication import TOKEN_PREFIX, hash_secret
from connector.services.mail import queue_email
from connector.services.users import enqueue_user_sync, new_id


def find_seller(uow: UnitOfWork, ref: str) -> SellerAccount:
    """A seller by its id or its unique name.

    :raises NotFound: when neither matches.
    """
    with uow:
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
    with uow:
        created = _create_seller(uow, catalogue, name, plan, primary_email, primary_name, actor)
        uow.commit()
    return created


def _create_seller(
    uow: UnitOfWork,
    catalogue: Catalogue,
    name: str,
    plan: Plan,
    primary_email: str,
    primary_name: str,
    actor: Actor,
) -> tuple[SellerAccount, SellerUser]:
    name = name.strip()
    if not name:
        raise InvalidValue("A seller account needs a name.")
    check_length("The seller's name", name, 200)
    check_length("The primary user's email", primary_email, MAX_EMAIL_LENGTH)
    check_length("The primary user's name", primary_name)
    check_visible("The seller's name", name)
    check_visible("The primary user's email", primary_email)
    if uow.sellers.get_by_name(name) is not None:
        raise Uniqueness(f"A seller account named {name!r} already exists.")
    if not is_email(primary_email):
        raise InvalidValue(f"{primary_email!r} is not an email address.")
    if any(not o.released for o in uow.users.email_owners([email_key(primary_email)])):
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
    uow.outbox.add(OutboxEntry(seller_id=seller.id, topic=SELLER_SYNC, aggregate_id=seller.id))
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
                seller_id=seller.id, topic=PERMISSION_SET_SYNC, aggregate_id=permission_set.id
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
    with uow:
        uow.tokens.add(token)
        uow.audit.append(
            AuditEvent(seller.id, actor.name, "token.issued", f"token:{token_id}", {"label": label})
        )
        uow.commit()
    return token, f"{TOKEN_PREFIX}{token_id}.{secret}"


def revoke_token(uow: UnitOfWork, seller: SellerAccount, token_id: str, actor: Actor) -> ApiToken:
    """Revoke a token: requests that carry it are refused from then on (within the
    verification cache's lifetime in running workers, see the README)."""
    with uow:
        token = uow.tokens.get(token_id)
        if token is None or token.seller_id != seller.id:
            raise NotFound(f"Seller {seller.name!r} has no token {token_id!r}.")
        if token.revoked_at is None:
            token.revoked_at = utcnow()
            uow.tokens.save(token)
            uow.audit.append(
                AuditEvent(seller.id, actor.name, "token.revoked", f"token:{token_id}", {})
            )
            uow.commit()
    return token


def list_tokens(uow: UnitOfWork, seller: SellerAccount) -> list[ApiToken]:
    """A seller's tokens (their hashes only: the secrets were shown once)."""
    with uow:
        return uow.tokens.list(seller.id)


def set_partner_domains(
    uow: UnitOfWork, seller: SellerAccount, domains: list[str], actor: Actor
) -> None:
    """Record the email domains of the seller's authorized partners (service providers)."""
    cleaned = sorted(
        {identity_key(d.strip().lstrip("@")).rstrip(".") for d in domains if d.strip()}
    )
    for domain in cleaned:
        check_visible("A partner domain", domain)
    before = seller.partner_domains
    seller.partner_domains = cleaned
    with uow:
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
        uow.commit()


def set_plan(uow: UnitOfWork, seller: SellerAccount, plan: Plan, actor: Actor) -> None:
    """Change the selling plan. Downgrading keeps existing users: it only stops new ones."""
    before = seller.plan
    seller.plan = plan
    with uow:
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
        uow.commit()


PRIMARY_CHANGE_LIFESPAN = dt.timedelta(days=2)


def request_primary_change(
    uow: UnitOfWork,
    mailer: Mailer,
    seller: SellerAccount,
    new_email: str,
    actor: Actor,
    *,
    confirmation_url: str,
) -> str:
    """Start the operator flow that makes another address the primary user: a one-time
    link (``confirmation_url`` + its secret) is emailed to the new address, and the change
    completes only when that address confirms it. A secondary user can become primary only
    once it is deactivated. The secret is never stored (only its hash) nor returned.

    :returns: the change id.
    :raises MailUnavailable: when the email cannot be sent (nothing is kept).
    """
    if not is_email(new_email):
        raise InvalidValue(f"{new_email!r} is not an email address.")
    check_visible("The new primary user's email", new_email)
    key = email_key(new_email)
    with uow:
        current = uow.users.get(seller.id, seller.primary_user_id or "")
        if current is not None and key in current.email_keys:
            raise InvalidValue(f"{new_email} is already the primary user's address.")
        for owner in uow.users.email_owners([key]):
            if owner.released and owner.seller_id != seller.id:
                continue  # given up by a user who never signed in: free again
            if owner.seller_id != seller.id:
                raise Uniqueness(
                    f"The email address {new_email} has already been used by a user of this "
                    "service: the primary user needs an address of this seller or a brand-new "
                    "one."
                )
            user = uow.users.get(seller.id, owner.user_id, include_deleted=True)
            if user is not None:
                user.check_may_become_primary()
        secret = secrets.token_urlsafe(32)
        now = utcnow()
        change = PrimaryChange(
            id=new_id(),
            seller_id=seller.id,
            new_email=new_email,
            token_hash=hash_secret(secret),
            requested_at=now,
            expires_at=now + PRIMARY_CHANGE_LIFESPAN,
        )
        uow.primary_changes.add(change)
        uow.audit.append(
            AuditEvent(
                seller.id,
                actor.name,
                "primary.change-requested",
                f"seller:{seller.id}",
                {"to": new_email, "expiresAt": change.expires_at.isoformat()},
            )
        )
        link = f"{confirmation_url.rstrip('/')}/{secret}"
        hours = int(PRIMARY_CHANGE_LIFESPAN.total_seconds() // 3600)
        mailer.send(
            new_email,
            f"Confirm you are the new primary user of {seller.name}",
            f"The marketplace operator asked to make {new_email} the primary user of the "
            f"seller account {seller.name}.\n\nOpen this link within {hours} hours to "
            f"review and confirm the change:\n{link}\n\n"
            "If you did not expect this, ignore this email: nothing changes without you.",
        )
        uow.commit()
    return change.id


def pending_primary_change(uow: UnitOfWork, secret: str) -> tuple[PrimaryChange, SellerAccount]:
    """The change a confirmation link stands for, while it can still be confirmed.

    :raises NotFound: an unknown link, or one already used.
    :raises Forbidden: an expired link.
    """
    with uow:
        change = uow.primary_changes.by_token_hash(hash_secret(secret))
        if change is None or change.completed_at is not None:
            raise NotFound("This confirmation link is unknown or was already used.")
        if change.expires_at <= utcnow():
            raise Forbidden("This confirmation link has expired: ask the operator for a new one.")
        seller = uow.sellers.get(change.seller_id)
    if seller is None:
        raise NotFound("This confirmation link is unknown or was already used.")
    return change, seller


def confirm_primary_change(
    uow: UnitOfWork, catalogue: Catalogue, secret: str, actor: Actor
) -> tuple[SellerUser, SellerUser | None]:
    """Complete a primary change from its confirmation link's secret (single use).

    The new address becomes the primary user (a deactivated secondary user of this seller
    with that address is promoted, else a new user is made); the former primary stays as a
    deactivated secondary user, with its history. Keycloak follows through the outbox.

    :returns: the new primary, and the former one.
    """
    change, seller = pending_primary_change(uow, secret)
    now = utcnow()
    with uow:
        key = email_key(change.new_email)
        owners = [
            o for o in uow.users.email_owners([key]) if not o.released or o.seller_id == seller.id
        ]
        mine = [o for o in owners if o.seller_id == seller.id]
        if owners and not mine:
            raise Uniqueness(f"The email address {change.new_email} has been used meanwhile.")
        old = uow.users.get(seller.id, seller.primary_user_id or "", include_deleted=True)
        if mine:
            new = uow.users.get(seller.id, mine[0].user_id, include_deleted=True)
            if new is None:
                raise NotFound("This confirmation link is unknown or was already used.")
            new.become_primary()
            new.updated_at = now
            uow.users.save(new)
        else:
            new = SellerUser(
                id=new_id(),
                seller_id=seller.id,
                user_name=change.new_email,
                role=Role.primary,
                emails=[Email(change.new_email, type="work", primary=True)],
                notifications=list(catalogue.notification_ids),
                created_at=now,
                updated_at=now,
            )
            uow.users.add(new)
        if old is not None and old.id != new.id:
            old.step_down()
            old.updated_at = now
            uow.users.save(old)
            enqueue_user_sync(uow, old)
        seller.primary_user_id = new.id
        uow.sellers.save(seller)
        uow.primary_changes.complete(change.id, now)
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
        _tell_both(uow, seller, new, old)
        uow.commit()
    return new, old


def _tell_both(
    uow: UnitOfWork, seller: SellerAccount, new: SellerUser, old: SellerUser | None
) -> None:
    """Both addresses learn of the change (queued: sent even if the mail server is down now)."""
    new_address = new.primary_email or new.user_name
    queue_email(
        uow,
        seller.id,
        MailMessage(
            to=new_address,
            subject=f"You are now the primary user of {seller.name}",
            text=f"{new_address} is now the primary user of the seller account {seller.name}: "
            "it owns the account and holds every permission.",
            html=f"<p><b>{escape(new_address)}</b> is now the primary user of the seller account "
            f"<b>{escape(seller.name)}</b>: it owns the account and holds every permission.</p>",
        ),
    )
    if old is None or not (old.primary_email or old.user_name):
        return
    old_address = old.primary_email or old.user_name
    queue_email(
        uow,
        seller.id,
        MailMessage(
            to=old_address,
            subject=f"You are no longer the primary user of {seller.name}",
            text=f"The marketplace made {new_address} the primary user of the seller account "
            f"{seller.name}, as confirmed from that address. Your access ({old_address}) is "
            "deactivated; contact the marketplace if you did not expect this.",
            html=f"<p>The marketplace made <b>{escape(new_address)}</b> the primary user of the "
            f"seller account <b>{escape(seller.name)}</b>, as confirmed from that address. "
            f"Your access ({escape(old_address)}) is deactivated; contact the marketplace if "
            "you did not expect this.</p>",
        ),
    )
