"""Configuration from the environment: nothing secret is read from the repository."""

from __future__ import annotations

import datetime as dt
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path


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
    invitation_lifespan: dt.timedelta = dt.timedelta(days=7)
    max_body_bytes: int = 2 * 1024 * 1024
    auth_failures_per_minute: int = 20
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
        days = int(os.environ.get("SELLER_CONNECTOR_INVITATION_DAYS", "7"))
        return cls(
            database_url=database_url,
            public_url=os.environ.get(
                "SELLER_CONNECTOR_PUBLIC_URL", "http://127.0.0.1:8080"
            ).rstrip("/"),
            secret_key=secret,
            invitation_lifespan=dt.timedelta(days=days),
            auth_failures_per_minute=int(
                os.environ.get("SELLER_CONNECTOR_AUTH_FAILURES_PER_MINUTE", "20")
            ),
            home=home,
            busy_timeout_ms=int(os.environ.get("SELLER_CONNECTOR_DB_BUSY_TIMEOUT_MS", "5000")),
        )


def _local_secret(home: Path) -> str:
    """A secret kept beside the SQLite file, made once, so that every worker shares it.

    Deployments with several machines set SELLER_CONNECTOR_SECRET_KEY instead.
    """
    home.mkdir(parents=True, exist_ok=True)
    path = home / "secret_key"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(48))
    return path.read_text(encoding="utf-8").strip()
