"""The connector's own emails."""

from __future__ import annotations

from typing import Protocol


class Mailer(Protocol):
    """Sends the connector's own emails (the primary-change verification)."""

    def send(self, to: str, subject: str, body: str) -> None:
        """Send a plain-text email.

        :raises MailUnavailable: when no mail server is configured or reachable.
        """


class MailUnavailable(Exception):
    """No mail server is configured, or it refused the message."""
