"""Who a request acts for: bearer tokens, and the brake on repeated failures.

Tokens are ``scn_<id>.<secret>``; only a SHA-256 of the secret is stored (secrets are long
random strings: no salt needed) and compared in constant time.

The brake counts failed authentications in the store, so that every worker and machine
shares one count, per (client address, presented token id) and, with a higher bound, per
client address. It only ever refuses *failed* authentications: a valid token is never
refused for anybody else's failures (behind a shared egress address, as Okta's and Entra's
are, one client's mistakes must not lock out every seller).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from dataclasses import dataclass

from connector.domain.model import SellerAccount, utcnow
from connector.ports.store import ApiToken, UnitOfWork

TOKEN_PREFIX = "scn_"  # noqa: S105 - a prefix, not a secret
MAX_TOKEN_LENGTH = 200
NO_TOKEN = "-"  # noqa: S105 - a placeholder, not a secret
"""The token id counted for a request that presented none (or an unreadable one)."""


def hash_secret(secret: str) -> str:
    """Tokens are kept only as a SHA-256 hash: they are long random strings, so no salt is needed."""
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class PresentedToken:
    """A bearer token as presented: its id (public) and the hash of its secret."""

    token_id: str
    secret_hash: str


def read_token(presented: str | None) -> PresentedToken | None:
    """The id and secret hash of a ``scn_<id>.<secret>`` token; None when malformed."""
    presented = (presented or "").strip()
    if not presented.startswith(TOKEN_PREFIX) or len(presented) > MAX_TOKEN_LENGTH:
        return None
    token_id, dot, secret = presented[len(TOKEN_PREFIX) :].partition(".")
    if not dot or not token_id or not secret or not token_id.isalnum():
        return None
    return PresentedToken(token_id, hash_secret(secret))


def verify_token(uow: UnitOfWork, token: PresentedToken) -> ApiToken | None:
    """The stored token a presented one stands for, or None (unknown, wrong secret, revoked).

    The hashes are compared in constant time, and the same work is done for an unknown id.
    """
    with uow:
        stored = uow.tokens.get(token.token_id)
    expected = stored.token_hash if stored else hash_secret("x" * 43)
    matches = hmac.compare_digest(token.secret_hash, expected)
    if stored is None or not matches or stored.revoked_at is not None:
        return None
    return stored


def authenticate(uow: UnitOfWork, presented: str) -> tuple[SellerAccount, ApiToken] | None:
    """The seller and token a bearer token stands for, or None (unknown, malformed, revoked)."""
    token = read_token(presented)
    stored = verify_token(uow, token) if token else None
    if stored is None:
        return None
    with uow:
        seller = uow.sellers.get(stored.seller_id)
    return (seller, stored) if seller else None


@dataclass(frozen=True)
class BrakePolicy:
    """How many failed authentications a client may make in a window before 429."""

    per_token: int = 20
    """Failures per (client address, presented token id)."""
    per_address: int = 100
    """Failures per client address, whatever the tokens."""
    window: dt.timedelta = dt.timedelta(minutes=1)


def brake_after_failure(
    uow: UnitOfWork,
    policy: BrakePolicy,
    client: str,
    token_id: str | None,
    now: dt.datetime | None = None,
) -> int | None:
    """Count one failed authentication, or, once the client is over a bound, the seconds
    it must wait (its failures are then answered without being written: an attacker
    cannot grow the table).
    """
    now = now or utcnow()
    since = now - policy.window
    token_id = (token_id or NO_TOKEN)[:32]
    client = client[:64]
    with uow:
        over_token = uow.auth_failures.count(client, since, token_id) >= policy.per_token
        over_address = uow.auth_failures.count(client, since) >= policy.per_address
        if not (over_token or over_address):
            uow.auth_failures.record(client, token_id, now)
            uow.auth_failures.prune(now - policy.window * 2)
            uow.commit()
            return None
        oldest = uow.auth_failures.oldest(client, since, token_id if over_token else None)
    if oldest is None:
        return int(policy.window.total_seconds())
    return max(1, int((oldest + policy.window - now).total_seconds()) + 1)
