"""Configuration from the environment: nothing secret is read from the repository."""

from __future__ import annotations

import datetime as dt
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from connector.domain.model import DEFAULT_INVITATION_LIFESPAN


def _read_secret(name: str) -> str | None:
    """A secret from VAR, or from the file named by VAR_FILE."""
    value = os.environ.get(name)
    if value:
        return value
    path = os.environ.get(f"{name}_FILE")
    if path:
        return Path(path).read_text(encoding="utf-8").strip()
    return None


class ConfigurationError(Exception):
    """The environment does not say enough to reach an outside system (Keycloak, SMTP...)."""


@dataclass
class Settings:
    """Everything the connector reads from its environment."""

    database_url: str
    public_url: str = "http://127.0.0.1:8080"
    secret_key: str = field(default="", repr=False)
    invitation_lifespan: dt.timedelta = DEFAULT_INVITATION_LIFESPAN
    max_body_bytes: int = 2 * 1024 * 1024
    auth_failures_per_minute: int = 20
    """Failed authentications per (client address, token id) a minute before 429."""
    auth_failures_per_address: int = 100
    """Failed authentications per client address a minute, whatever the tokens, before 429."""
    token_cache_seconds: float = 5.0
    """How long a worker trusts a token it verified: a revoked token stops within this."""
    trusted_proxies: int = 0
    """Reverse proxies in front that append to X-Forwarded-For (0: use the peer address)."""
    max_pending_invitations: int = 5000
    """Pending (unaccepted, unexpired) invitations a seller may have through SCIM at once."""
    home: Path = Path("var")
    busy_timeout_ms: int = 5000
    """How long a write waits for a busy SQLite database before the request gets a 503."""

    @classmethod
    def from_env(cls) -> Settings:
        """Read SELLER_CONNECTOR_* variables. Defaults suit one machine with a SQLite file."""
        home = Path(os.environ.get("SELLER_CONNECTOR_HOME", "var")).resolve()
        database_url = os.environ.get(
            "SELLER_CONNECTOR_DATABASE_URL", f"sqlite:///{home / 'seller-connector.sqlite3'}"
        )
        secret = _read_secret("SELLER_CONNECTOR_SECRET_KEY") or _local_secret(home)
        days = _int("SELLER_CONNECTOR_INVITATION_DAYS", DEFAULT_INVITATION_LIFESPAN.days)
        return cls(
            database_url=database_url,
            public_url=os.environ.get(
                "SELLER_CONNECTOR_PUBLIC_URL", "http://127.0.0.1:8080"
            ).rstrip("/"),
            secret_key=secret,
            invitation_lifespan=dt.timedelta(days=days),
            auth_failures_per_minute=_int("SELLER_CONNECTOR_AUTH_FAILURES_PER_MINUTE", 20),
            auth_failures_per_address=_int("SELLER_CONNECTOR_AUTH_FAILURES_PER_ADDRESS", 100),
            token_cache_seconds=float(
                os.environ.get("SELLER_CONNECTOR_TOKEN_CACHE_SECONDS", "5") or "5"
            ),
            trusted_proxies=_int("SELLER_CONNECTOR_TRUSTED_PROXIES", 0),
            max_pending_invitations=_int("SELLER_CONNECTOR_MAX_PENDING_INVITATIONS", 5000),
            home=home,
            busy_timeout_ms=_int("SELLER_CONNECTOR_DB_BUSY_TIMEOUT_MS", 5000),
        )


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigurationError(f"{name}={raw!r} is not a whole number.") from None
    if value < 0:
        raise ConfigurationError(f"{name} may not be negative.")
    return value


def _local_secret(home: Path) -> str:
    """A secret kept beside the SQLite file, made once, so that every worker shares it.

    Deployments with several machines set SELLER_CONNECTOR_SECRET_KEY instead.
    """
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = home / "secret_key"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(48))
    return path.read_text(encoding="utf-8").strip()
