"""The connector's own emails, queued in the outbox with the change that causes them: nothing
is lost while the mail server is down, and nothing is sent for a change that was not kept."""

from __future__ import annotations

import uuid

from connector.ports.mail import Email
from connector.ports.outbox import MAIL_SEND
from connector.ports.store import OutboxEntry, UnitOfWork


def queue_email(uow: UnitOfWork, seller_id: str, email: Email) -> None:
    """Send ``email`` once the unit of work commits (each email its own outbox aggregate)."""
    payload = {"to": email.to, "subject": email.subject, "text": email.text}
    if email.html is not None:
        payload["html"] = email.html
    uow.outbox.add(
        OutboxEntry(
            seller_id=seller_id,
            topic=MAIL_SEND,
            aggregate_id=f"mail-{uuid.uuid4().hex}",
            payload=payload,
        )
    )
