"""Bearer token authentication of SCIM requests: a read, never a write lock.

A verified token is remembered by the worker for ``token_cache_seconds`` (5 by default),
so that most requests cost no database read to authenticate. The price is stated in the
README: a revoked token keeps working in a worker that verified it for at most that long.
Failures go to the shared brake (``connector.services.authentication``).
"""

from __future__ import annotations

import hmac
import threading
import time
from dataclasses import dataclass

from scim2_models import SCIMException, UnauthorizedException

from connector.bootstrap import Connector
from connector.services.authentication import (
    BrakePolicy,
    brake_after_failure,
    read_token,
    verify_token,
)

UNAUTHORIZED_DETAIL = (
    "Missing or invalid bearer token. Send 'Authorization: Bearer <token>' with a token "
    "issued by 'seller-connector sellers token SELLER'."
)
_CACHE_LIMIT = 10_000


class TooManyFailures(SCIMException):
    """429: too many failed authentications from this client."""

    status = 429
    scim_type = None

    def __init__(self, retry_after: int) -> None:
        super().__init__(
            detail=f"Too many failed authentications from this address. Retry in {retry_after} s."
        )
        self.retry_after = retry_after


@dataclass(frozen=True)
class Authenticated:
    """Who a SCIM request acts for."""

    seller_id: str
    token_id: str

    @property
    def actor(self) -> str:
        return f"token:{self.token_id}"


class Authenticator:
    """Verifies bearer tokens, remembering verified ones for a few seconds."""

    def __init__(self, connector: Connector, *, cache_seconds: float, brake: BrakePolicy) -> None:
        self.connector = connector
        self.cache_seconds = cache_seconds
        self.brake = brake
        self._verified: dict[str, tuple[str, str, float]] = {}
        self._lock = threading.Lock()

    def authenticate(self, header: str | None, client: str) -> Authenticated:
        """The seller a request's ``Authorization`` header stands for.

        The same 401 answers an unknown, malformed or revoked token, so that nobody learns
        whether a seller or a token exists; past the brake's bounds, failures get 429.

        :raises UnauthorizedException: the token is missing or invalid.
        :raises TooManyFailures: the same, once this client failed too often.
        """
        scheme, _, presented = (header or "").partition(" ")
        token = read_token(presented) if scheme.lower() == "bearer" else None
        if token is not None:
            cached = self._cached(token.token_id, token.secret_hash)
            if cached is not None:
                return cached
            stored = verify_token(self.connector.uow(), token)
            if stored is not None:
                found = Authenticated(stored.seller_id, stored.id)
                self._remember(token.token_id, token.secret_hash, found)
                return found
        retry_after = brake_after_failure(
            self.connector.uow(), self.brake, client, token.token_id if token else None
        )
        if retry_after is not None:
            raise TooManyFailures(retry_after)
        raise UnauthorizedException(detail=UNAUTHORIZED_DETAIL)

    def _cached(self, token_id: str, secret_hash: str) -> Authenticated | None:
        if self.cache_seconds <= 0:
            return None
        entry = self._verified.get(token_id)
        if entry is None:
            return None
        stored_hash, seller_id, until = entry
        if time.monotonic() >= until or not hmac.compare_digest(stored_hash, secret_hash):
            return None
        return Authenticated(seller_id, token_id)

    def _remember(self, token_id: str, secret_hash: str, found: Authenticated) -> None:
        if self.cache_seconds <= 0:
            return
        with self._lock:
            if len(self._verified) >= _CACHE_LIMIT:
                self._verified.clear()
            self._verified[token_id] = (
                secret_hash,
                found.seller_id,
                time.monotonic() + self.cache_seconds,
            )
