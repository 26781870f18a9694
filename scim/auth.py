"""Bearer token authentication of SCIM requests, with a brake on repeated failures."""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass

from scim2_models import SCIMException, UnauthorizedException

from connector.adapters.sql.database import SqlUnitOfWork
from connector.domain.model import SellerAccount
from connector.ports.store import ApiToken
from connector.services.sellers import authenticate

UNAUTHORIZED_DETAIL = (
    "Missing or invalid bearer token. Send 'Authorization: Bearer <token>' with a token "
    "issued by 'seller-connector sellers token SELLER'."
)


class TooManyFailures(SCIMException):
    """429: too many failed authentications from this client."""

    status = 429
    scim_type = None

    def __init__(self, retry_after: int) -> None:
        super().__init__(
            detail=f"Too many failed authentications from this address. Retry in {retry_after} s."
        )
        self.retry_after = retry_after


@dataclass
class Authenticated:
    """Who a SCIM request acts for."""

    seller: SellerAccount
    token: ApiToken

    @property
    def actor(self) -> str:
        return f"token:{self.token.id}"


class FailureBrake:
    """Counts failed authentications per client address over a sliding minute.

    Kept in the worker's memory: each gunicorn worker brakes on its own, which still
    bounds guessing to workers x limit attempts a minute.
    """

    def __init__(self, limit_per_minute: int, window: float = 60.0) -> None:
        self.limit = limit_per_minute
        self.window = window
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def check(self, client: str) -> None:
        """:raises TooManyFailures: while the client is over its limit."""
        with self._lock:
            recent = self._recent(client, time.monotonic())
            if len(recent) >= self.limit:
                raise TooManyFailures(int(self.window - (time.monotonic() - recent[0])) + 1)

    def failed(self, client: str) -> None:
        with self._lock:
            self._recent(client, time.monotonic()).append(time.monotonic())
            if len(self._failures) > 10_000:
                self._failures.clear()  # bound memory under a spray of addresses

    def _recent(self, client: str, now: float) -> deque[float]:
        recent = self._failures.setdefault(client, deque())
        while recent and now - recent[0] > self.window:
            recent.popleft()
        return recent


def authenticate_request(
    uow: SqlUnitOfWork, header: str | None, client: str, brake: FailureBrake
) -> Authenticated:
    """The seller a request's bearer token belongs to.

    The same 401 answers an unknown, malformed or revoked token, so that nobody learns
    whether a seller or a token exists.
    """
    brake.check(client)
    scheme, _, presented = (header or "").partition(" ")
    found = authenticate(uow, presented.strip()) if scheme.lower() == "bearer" else None
    if found is None:
        brake.failed(client)
        raise UnauthorizedException(detail=UNAUTHORIZED_DETAIL)
    seller, token = found
    return Authenticated(seller, token)
