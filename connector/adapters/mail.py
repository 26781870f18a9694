"""Plain SMTP for the connector's own emails."""

from __future__ import annotations

import os
import smtplib
from dataclasses import dataclass, field
from email.message import EmailMessage

from connector.ports.mail import MailUnavailable


@dataclass
class SmtpMailer:
    """An SMTP client configured from SELLER_CONNECTOR_SMTP_* variables."""

    host: str | None
    port: int = 25
    sender: str = "seller-connector@localhost"
    starttls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls) -> SmtpMailer:
        return cls(
            host=os.environ.get("SELLER_CONNECTOR_SMTP_HOST") or None,
            port=int(os.environ.get("SELLER_CONNECTOR_SMTP_PORT", "25")),
            sender=os.environ.get("SELLER_CONNECTOR_SMTP_FROM", "seller-connector@localhost"),
            starttls=os.environ.get("SELLER_CONNECTOR_SMTP_STARTTLS", "") in ("1", "true", "yes"),
            username=os.environ.get("SELLER_CONNECTOR_SMTP_USERNAME") or None,
            password=os.environ.get("SELLER_CONNECTOR_SMTP_PASSWORD") or None,
        )

    def send(self, to: str, subject: str, body: str, html: str | None = None) -> None:
        """Send one email (plain text, with an HTML alternative when given); raise
        MailUnavailable with what to check."""
        if not self.host:
            raise MailUnavailable(
                "No mail server configured: set SELLER_CONNECTOR_SMTP_HOST (and _PORT, _FROM)."
            )
        message = EmailMessage()
        message["From"] = self.sender
        message["To"] = to
        message["Subject"] = subject
        message.set_content(body)
        if html is not None:
            message.add_alternative(html, subtype="html")
        try:
            with smtplib.SMTP(self.host, self.port, timeout=15) as smtp:
                if self.starttls:
                    smtp.starttls()
                if self.username and self.password:
                    smtp.login(self.username, self.password)
                smtp.send_message(message)
        except (OSError, smtplib.SMTPException) as error:
            raise MailUnavailable(
                f"Could not send through {self.host}:{self.port}: {error}"
            ) from error
