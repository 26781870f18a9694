"""An SMTP sink for tests: a real aiosmtpd server on a free loopback port that keeps every
message it receives, so a test can wait for the email Keycloak sends."""

from __future__ import annotations

import email
import email.policy
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller


@dataclass(frozen=True)
class ReceivedMail:
    """One message the sink accepted."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    message: EmailMessage

    @property
    def subject(self) -> str:
        return str(self.message.get("Subject", ""))

    @property
    def text(self) -> str:
        """The plain-text body (or the HTML one when there is no plain text), decoded."""
        part = self.message.get_body(preferencelist=("plain", "html"))
        return part.get_content() if part is not None else ""

    @property
    def html(self) -> str:
        part = self.message.get_body(preferencelist=("html",))
        return part.get_content() if part is not None else ""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class _Handler:
    def __init__(self, sink: SmtpSink) -> None:
        self._sink = sink

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(
            envelope.original_content or envelope.content, policy=email.policy.default
        )
        self._sink._received(
            ReceivedMail(
                mail_from=str(envelope.mail_from),
                rcpt_tos=tuple(str(r) for r in envelope.rcpt_tos),
                message=message,  # type: ignore[arg-type]
            )
        )
        return "250 Message accepted for delivery"


class SmtpSink:
    """Collects mail sent to ``host:port``. Use as a context manager, or start()/stop()."""

    def __init__(self, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.messages: list[ReceivedMail] = []
        self._cond = threading.Condition()
        self._controller = Controller(_Handler(self), hostname=host, port=self.port)

    def _received(self, mail: ReceivedMail) -> None:
        with self._cond:
            self.messages.append(mail)
            self._cond.notify_all()

    def start(self) -> SmtpSink:
        """Listen (returns once the server answers)."""
        self._controller.start()
        return self

    def stop(self) -> None:
        """Stop listening."""
        self._controller.stop()

    def __enter__(self) -> SmtpSink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def clear(self) -> None:
        """Forget the messages received so far."""
        with self._cond:
            self.messages.clear()

    def wait_for(
        self, predicate: Callable[[ReceivedMail], bool], timeout: float = 15.0
    ) -> ReceivedMail:
        """The first message (received before or during the wait) that ``predicate`` accepts.

        :raises TimeoutError: listing what did arrive, when none matches in time.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for mail in self.messages:
                    if predicate(mail):
                        return mail
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    seen = [(m.rcpt_tos, m.subject) for m in self.messages]
                    raise TimeoutError(f"no matching mail within {timeout} s; received: {seen}")
                self._cond.wait(remaining)

    def wait_for_recipient(self, address: str, timeout: float = 15.0) -> ReceivedMail:
        """The first message to ``address`` (case-insensitive)."""
        wanted = address.casefold()
        return self.wait_for(lambda m: any(r.casefold() == wanted for r in m.rcpt_tos), timeout)


@contextmanager
def smtp_sink(host: str = "127.0.0.1") -> Iterator[SmtpSink]:
    """A started sink for a ``with`` block or a pytest fixture."""
    with SmtpSink(host) as sink:
        yield sink
