"""The connector's own emails: primary-change links and notices, "Secondary users" notices."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Email:
    """One email: a plain-text part, and an HTML part when there is one."""

    to: str
    subject: str
    text: str
    html: str | None = None


class Mailer(Protocol):
    """Sends the connector's own emails."""

    def send(self, to: str, subject: str, body: str, html: str | None = None) -> None:
        """Send an email: ``body`` is its plain-text part, ``html`` an alternative.

        :raises MailUnavailable: when no mail server is configured or reachable.
        """


class MailUnavailable(Exception):
    """No mail server is configured, or it refused the message."""
