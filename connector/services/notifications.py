""" "Secondary users" notices: the one notification category the connector itself causes.

**The rule, in one place.** When a secondary user signs in for the first time (its invitation
accepted, or its first login), or is deactivated or reactivated, whichever way it happened
(SCIM, a directory sync, the Keycloak console, the command line, the operator API, the lapse
of its invitation), the recipients of the ``secondary-users`` category are told: the primary
user, and the active secondary users subscribed to it (README, rule 7). The user the notice
is about is not told of itself. Nothing is said about the primary user, which is never
deactivated and never invited.

Each notice is queued with :func:`connector.services.mail.queue_email` in the unit of work of
the change: sent by the outbox worker after commit, retried while the mail server is down,
and never sent for a change that was not kept. One email per recipient per event.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from html import escape

from connector.domain.drafts import Actor
from connector.domain.model import SellerAccount, SellerUser
from connector.ports.mail import Email
from connector.ports.store import Recipient, UnitOfWork
from connector.services.mail import queue_email

SECONDARY_USERS = "secondary-users"
"""The notification category of these notices (``mappings/notifications.yaml``)."""


class SecondaryUserEvent(StrEnum):
    """What happened to a secondary user."""

    first_sign_in = "first-sign-in"
    deactivated = "deactivated"
    reactivated = "reactivated"


@dataclass(frozen=True)
class _Wording:
    subject: str
    sentence: str


_WORDING = {
    SecondaryUserEvent.first_sign_in: _Wording(
        "{user} signed in to {seller} for the first time",
        "{user} accepted the invitation and signed in to the seller account {seller} for the "
        "first time.",
    ),
    SecondaryUserEvent.deactivated: _Wording(
        "{user} was deactivated in {seller}",
        "{user} was deactivated in the seller account {seller} {how}: the user can no longer "
        "sign in, and receives no more notifications. The user and its history are kept.",
    ),
    SecondaryUserEvent.reactivated: _Wording(
        "{user} was reactivated in {seller}",
        "{user} was reactivated in the seller account {seller} {how}: the user can sign in "
        "again with the permissions it holds.",
    ),
}


def how(actor: Actor) -> str:
    """The way a change came, in words, from the actor the audit trail names."""
    name = actor.name
    if name.startswith("token:"):
        return "by your identity provider (SCIM)"
    if name.startswith("keycloak:"):
        return "in the Keycloak admin console"
    if name.startswith("directory:"):
        return "by the directory sync"
    if name == "invitation-expired":
        return "because the invitation expired before it was accepted"
    return "by the marketplace"


def recipients_of_notice(uow: UnitOfWork, user: SellerUser) -> list[Recipient]:
    """Who is told about ``user``: the category's recipients, but not the user itself, each
    address once. Read from the recipient index as it stood before this unit of work's own
    staged writes: the subject is the only user the change touches, and it is left out."""
    seen: set[str] = set()
    told = []
    for recipient in uow.recipients.of(user.seller_id, SECONDARY_USERS):
        key = recipient.email.casefold()
        if recipient.user_id == user.id or key in seen:
            continue
        seen.add(key)
        told.append(recipient)
    return told


def tell_secondary_users(
    uow: UnitOfWork,
    seller: SellerAccount,
    user: SellerUser,
    event: SecondaryUserEvent,
    actor: Actor,
) -> int:
    """Queue the notice of ``event`` about ``user`` to each recipient, in ``uow``.

    :returns: how many emails were queued (none for the primary user).
    """
    if user.is_primary:
        return 0
    wording = _WORDING[event]
    name = user.display_name or " ".join(
        part for part in (user.given_name, user.family_name) if part
    )
    address = user.primary_email or user.user_name
    who = f"{name} ({address})" if name else address
    values = {"user": who, "seller": seller.name, "how": how(actor)}
    subject = wording.subject.format(**values)
    sentence = wording.sentence.format(**values)
    html_values = {key: escape(value) for key, value in values.items()}
    html_values["user"] = f"<b>{html_values['user']}</b>"
    html_values["seller"] = f"<b>{html_values['seller']}</b>"
    footer = (
        "You receive this because you are the primary user of the account, or subscribed to "
        "its \u201cSecondary users\u201d notifications."
    )
    recipients = recipients_of_notice(uow, user)
    for recipient in recipients:
        queue_email(
            uow,
            seller.id,
            Email(
                to=recipient.email,
                subject=subject,
                text=f"{sentence}\n\n{footer}\n",
                html=f"<p>{wording.sentence.format(**html_values)}</p>"
                f'<p style="color:#555">{escape(footer)}</p>',
            ),
        )
    return len(recipients)
