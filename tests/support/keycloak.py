"""A real Keycloak for tests, run through deploy/keycloak/keycloak.sh.

:class:`KeycloakServer` starts one on free loopback ports with a throwaway database
(``--db dev-mem``, or ``dev-file`` kept in its own state folder so that it can be halted and
resumed with its data) and its own state folder, waits for ``/health/ready`` and stops it; or,
with :meth:`KeycloakServer.from_env`, points at one that already runs
(``SELLER_CONNECTOR_TEST_KEYCLOAK_URL`` and the master admin's credentials in
``SELLER_CONNECTOR_TEST_KEYCLOAK_ADMIN_USER`` / ``_ADMIN_PASSWORD``). Either way it offers the
master admin's API (for what an administrator does in the console) and the settings of the
least-privilege ``seller-connector`` client (what the adapter runs as).

A started server has the seller-connector plugin installed (built with Maven first when its jar
is missing or older than its sources) and posts its webhook to ``webhook_url`` (a loopback
port chosen at start, on which a test may serve the connector) signed with ``webhook_secret``.
A reused server names them in ``SELLER_CONNECTOR_TEST_WEBHOOK_URL`` / ``_SECRET``.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from connector.adapters.keycloak.settings import KeycloakSettings
from tests.support.smtp import free_port

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "deploy" / "keycloak" / "keycloak.sh"
REALM = "sellers"
ENV_URL = "SELLER_CONNECTOR_TEST_KEYCLOAK_URL"
ENV_ADMIN_USER = "SELLER_CONNECTOR_TEST_KEYCLOAK_ADMIN_USER"
ENV_ADMIN_PASSWORD = "SELLER_CONNECTOR_TEST_KEYCLOAK_ADMIN_PASSWORD"
ENV_WEBHOOK_URL = "SELLER_CONNECTOR_TEST_WEBHOOK_URL"
ENV_WEBHOOK_SECRET = "SELLER_CONNECTOR_TEST_WEBHOOK_SECRET"
PLUGIN_DIR = REPO / "deploy" / "keycloak" / "plugin"
PLUGIN_JAR = REPO / "deploy" / "keycloak" / "providers" / "seller-connector-keycloak-plugin.jar"
WEBHOOK_PATH = "/keycloak/events"


def ensure_plugin_jar(timeout: float = 600.0) -> Path:
    """The plugin jar in deploy/keycloak/providers/, built when missing or older than its sources.

    :raises KeycloakUnavailable: when Maven is missing or the build fails.
    """
    sources = [p for p in (PLUGIN_DIR / "src").rglob("*") if p.is_file()]
    sources.append(PLUGIN_DIR / "pom.xml")
    newest = max(p.stat().st_mtime for p in sources)
    if PLUGIN_JAR.exists() and PLUGIN_JAR.stat().st_mtime >= newest:
        return PLUGIN_JAR
    if shutil.which("mvn") is None:
        raise KeycloakUnavailable("mvn (Maven) is needed to build the seller-connector plugin")
    done = subprocess.run(
        [str(SCRIPT), "build-plugin"],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0 or not PLUGIN_JAR.exists():
        raise KeycloakUnavailable(
            f"keycloak.sh build-plugin failed ({done.returncode}):\n{done.stdout}{done.stderr}"
        )
    return PLUGIN_JAR


ENV_DB = "SELLER_CONNECTOR_TEST_KEYCLOAK_DB"
"""dev-file (default for the session server: restartable) or dev-mem."""


class KeycloakUnavailable(RuntimeError):
    """Keycloak could not be fetched or started here (no Java 25, no Maven, ...)."""


@dataclass
class KeycloakServer:
    """One Keycloak with the ``sellers`` realm imported."""

    url: str
    admin_user: str
    admin_password: str = field(repr=False)
    client_secret: str | None = field(default=None, repr=False)
    realm: str = REALM
    state_dir: Path | None = None
    port: int | None = None
    management_port: int | None = None
    owned: bool = False
    """True when this object started the server (and so stops it)."""
    webhook_url: str | None = None
    """Where the plugin posts (a loopback URL nobody serves until a test does)."""
    webhook_secret: str | None = field(default=None, repr=False)
    db: str | None = None
    """``dev-mem`` or ``dev-file`` when this object started the server."""
    _admin_token: str | None = field(default=None, repr=False)

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    def from_env(cls) -> KeycloakServer | None:
        """The already running Keycloak named by ``SELLER_CONNECTOR_TEST_KEYCLOAK_URL``."""
        url = os.environ.get(ENV_URL, "").strip().rstrip("/")
        if not url:
            return None
        return cls(
            url=url,
            admin_user=os.environ.get(ENV_ADMIN_USER, "admin"),
            admin_password=os.environ.get(ENV_ADMIN_PASSWORD, "admin"),
            webhook_url=os.environ.get(ENV_WEBHOOK_URL) or None,
            webhook_secret=os.environ.get(ENV_WEBHOOK_SECRET) or None,
        )

    @classmethod
    def start(cls, timeout: float = 300.0, db: str = "dev-mem") -> KeycloakServer:
        """Fetch (once) and start a throwaway Keycloak on free ports; wait until ready.

        ``db`` is ``dev-mem`` (data lost when it stops) or ``dev-file``: an H2 file in this
        server's own state folder (not the shared distribution's ``data/``), so that
        :meth:`halt` and :meth:`resume` can stop and restart it with its data, as a real
        outage would.

        :raises KeycloakUnavailable: with the script's own explanation and the log's tail.
        """
        ensure_plugin_jar()
        state = Path(tempfile.mkdtemp(prefix="seller-connector-keycloak-"))
        port, management_port, webhook_port = free_port(), free_port(), free_port()
        admin_password = secrets.token_urlsafe(16)
        client_secret = secrets.token_urlsafe(24)
        webhook_url = f"http://127.0.0.1:{webhook_port}{WEBHOOK_PATH}"
        webhook_secret = secrets.token_urlsafe(32)
        env = {
            **os.environ,
            "KEYCLOAK_STATE_DIR": str(state),
            "KEYCLOAK_PORT": str(port),
            "KEYCLOAK_MANAGEMENT_PORT": str(management_port),
            "KC_BOOTSTRAP_ADMIN_USERNAME": "admin",
            "KC_BOOTSTRAP_ADMIN_PASSWORD": admin_password,
            "SELLER_CONNECTOR_KEYCLOAK_CLIENT_SECRET": client_secret,
            "SELLER_CONNECTOR_WEBHOOK_URL": webhook_url,
            "SELLER_CONNECTOR_WEBHOOK_SECRET": webhook_secret,
        }
        env.pop("SELLER_CONNECTOR_WEBHOOK_SECRET_FILE", None)
        if db == "dev-file":
            # Keycloak reads KC_DB_URL from its environment: keep the H2 file private.
            env["KC_DB_URL"] = f"jdbc:h2:file:{state / 'h2' / 'keycloakdb'};NON_KEYWORDS=VALUE"
        server = cls(
            url=f"http://127.0.0.1:{port}",
            admin_user="admin",
            admin_password=admin_password,
            client_secret=client_secret,
            state_dir=state,
            port=port,
            management_port=management_port,
            owned=True,
            db=db,
            webhook_url=webhook_url,
            webhook_secret=webhook_secret,
        )
        for command in (
            ["fetch"],
            ["start", "--db", db],
            ["wait", "--timeout", str(int(timeout))],
        ):
            done = subprocess.run(
                [str(SCRIPT), *command],
                env=env,
                capture_output=True,
                text=True,
                timeout=timeout + 60,
                check=False,
            )
            if done.returncode != 0:
                server.stop()
                log_tail = server.log_tail()
                raise KeycloakUnavailable(
                    f"keycloak.sh {' '.join(command)} failed ({done.returncode}):\n"
                    f"{done.stdout}{done.stderr}\n{log_tail}"
                )
        return server

    def _script_env(self) -> dict[str, str]:
        assert self.state_dir is not None
        return {
            **os.environ,
            "KEYCLOAK_STATE_DIR": str(self.state_dir),
            "KEYCLOAK_PORT": str(self.port),
            "KEYCLOAK_MANAGEMENT_PORT": str(self.management_port),
            # The plugin's webhook settings survive a halt and resume.
            "SELLER_CONNECTOR_WEBHOOK_URL": self.webhook_url or "",
            "SELLER_CONNECTOR_WEBHOOK_SECRET": self.webhook_secret or "",
        }

    def stop(self) -> None:
        """Stop the server if this object started it, and remove its state folder."""
        if not self.owned or self.state_dir is None:
            return
        subprocess.run(
            [str(SCRIPT), "stop", "--timeout", "30"],
            env=self._script_env(),
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )
        shutil.rmtree(self.state_dir, ignore_errors=True)
        self.owned = False

    @property
    def restartable(self) -> bool:
        """Whether :meth:`halt` and :meth:`resume` keep the data (an owned dev-file server)."""
        return self.owned and self.db == "dev-file" and self.state_dir is not None

    def halt(self, timeout: float = 30.0) -> None:
        """Stop the Keycloak process for real, keeping its state folder (an outage).

        :raises RuntimeError: when the server is not :attr:`restartable`.
        """
        if not self.restartable:
            raise RuntimeError("only a dev-file Keycloak started by these tests can be halted")
        subprocess.run(
            [str(SCRIPT), "stop", "--timeout", str(int(timeout))],
            env=self._script_env(),
            capture_output=True,
            text=True,
            timeout=timeout + 60,
            check=False,
        )

    def resume(self, timeout: float = 180.0) -> None:
        """Start a :meth:`halt`-ed server again on the same ports, with its data; wait until ready.

        :raises KeycloakUnavailable: when it does not come back.
        """
        if not self.restartable:
            raise RuntimeError("only a dev-file Keycloak started by these tests can be resumed")
        assert self.state_dir is not None
        env = {
            **self._script_env(),
            "KC_BOOTSTRAP_ADMIN_USERNAME": self.admin_user,
            "KC_BOOTSTRAP_ADMIN_PASSWORD": self.admin_password,
            "SELLER_CONNECTOR_KEYCLOAK_CLIENT_SECRET": self.client_secret or "",
            "KC_DB_URL": f"jdbc:h2:file:{self.state_dir / 'h2' / 'keycloakdb'};NON_KEYWORDS=VALUE",
        }
        for command in (["start", "--db", "dev-file"], ["wait", "--timeout", str(int(timeout))]):
            done = subprocess.run(
                [str(SCRIPT), *command],
                env=env,
                capture_output=True,
                text=True,
                timeout=timeout + 60,
                check=False,
            )
            if done.returncode != 0:
                raise KeycloakUnavailable(
                    f"keycloak.sh {' '.join(command)} failed ({done.returncode}):\n"
                    f"{done.stdout}{done.stderr}\n{self.log_tail()}"
                )

    def log_tail(self, lines: int = 40) -> str:
        """The end of Keycloak's log (when this object started it)."""
        if self.state_dir is None:
            return ""
        log = self.state_dir / "keycloak.log"
        if not log.exists():
            return ""
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])

    # ------------------------------------------------------------------ the master admin

    def admin_token(self, fresh: bool = False) -> str:
        """An access token of the master realm's admin (the 'console' in tests)."""
        if self._admin_token is None or fresh:
            response = requests.post(
                f"{self.url}/realms/master/protocol/openid-connect/token",
                data={
                    "grant_type": "password",
                    "client_id": "admin-cli",
                    "username": self.admin_user,
                    "password": self.admin_password,
                },
                timeout=15,
            )
            response.raise_for_status()
            self._admin_token = str(response.json()["access_token"])
        return self._admin_token

    def admin_request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """Call the admin API of the realm as the master admin; ``path`` is relative to
        ``/admin/realms/{realm}`` (or absolute from ``/admin``)."""
        if path.startswith("/admin"):
            url = f"{self.url}{path}"
        else:
            url = f"{self.url}/admin/realms/{self.realm}"
            url += f"/{path.lstrip('/')}" if path.strip("/") else ""
        for attempt in (0, 1):
            response = requests.request(
                method,
                url,
                headers={"Authorization": f"Bearer {self.admin_token(fresh=bool(attempt))}"},
                timeout=30,
                **kwargs,
            )
            if response.status_code != 401:
                break
        return response

    def admin_json(self, method: str, path: str, **kwargs: Any) -> Any:
        """:meth:`admin_request`, raising on errors and decoding JSON."""
        response = self.admin_request(method, path, **kwargs)
        if response.status_code >= 400:
            raise AssertionError(f"{method} {path}: {response.status_code} {response.text[:300]}")
        return response.json() if response.content else None

    def connector_client_secret(self) -> str:
        """The seller-connector client's secret (asked of Keycloak when not known)."""
        if self.client_secret is None:
            clients = self.admin_json("GET", "clients", params={"clientId": "seller-connector"})
            secret = self.admin_json("GET", f"clients/{clients[0]['id']}/client-secret")
            self.client_secret = str(secret["value"])
        return self.client_secret

    def connector_settings(self, **overrides: Any) -> KeycloakSettings:
        """Settings of the adapter: the least-privilege seller-connector client."""
        values: dict[str, Any] = {
            "url": self.url,
            "realm": self.realm,
            "client_id": "seller-connector",
            "client_secret": self.connector_client_secret(),
            "timeout": 30.0,
        }
        values.update(overrides)
        return KeycloakSettings(**values)

    def set_smtp(self, host: str, port: int, sender: str = "no-reply@sellers.test") -> None:
        """Point the realm's outgoing mail at ``host:port`` (plain SMTP, no auth)."""
        self.admin_json(
            "PUT",
            "",
            json={
                "smtpServer": {
                    "host": host,
                    "port": str(port),
                    "from": sender,
                    "fromDisplayName": "Seller Central",
                    "ssl": "false",
                    "starttls": "false",
                    "auth": "false",
                }
            },
        )


def keycloak_server_fixture(
    scope: str = "session",
) -> Callable[..., Iterator[KeycloakServer]]:
    """Make a pytest fixture giving ONE Keycloak for its scope.

    It reuses the server named by ``SELLER_CONNECTOR_TEST_KEYCLOAK_URL`` when set; otherwise it
    starts one (dev-mem) and stops it at the end. When Keycloak cannot run here (no Java 25 or
    Maven) the tests are skipped, unless ``SELLER_CONNECTOR_REQUIRE_KEYCLOAK=1`` (CI) makes
    that an error.
    """

    @pytest.fixture(scope=scope)  # type: ignore[misc]
    def keycloak_server() -> Iterator[KeycloakServer]:
        server = KeycloakServer.from_env()
        if server is None:
            try:
                # dev-file (in the server's own folder) so that the outbox's outage test can
                # stop and restart the session Keycloak for real without losing its data.
                server = KeycloakServer.start(db=os.environ.get(ENV_DB, "dev-file"))
            except KeycloakUnavailable as exc:
                if os.environ.get("SELLER_CONNECTOR_REQUIRE_KEYCLOAK") == "1":
                    raise
                pytest.skip(f"Keycloak cannot run here: {exc}")
        try:
            yield server
        finally:
            server.stop()

    return keycloak_server


# -- An IT administrator of the sellers realm (not the master admin, not the connector) -------


@dataclass
class RealmAdmin:
    """A user of the ``sellers`` realm with ``realm-management`` roles, as a seller's IT team
    would have, calling the admin API with its own token (through the realm's ``admin-cli``)."""

    server: KeycloakServer
    username: str
    user_id: str
    password: str = field(repr=False)

    @classmethod
    def create(cls, server: KeycloakServer, roles: tuple[str, ...]) -> RealmAdmin:
        """Create it with these ``realm-management`` roles."""
        username = f"it-admin-{secrets.token_hex(4)}"
        password = secrets.token_urlsafe(18)
        created = server.admin_request(
            "POST",
            "users",
            json={
                "username": username,
                "enabled": True,
                "firstName": "IT",
                "lastName": "Admin",
                "email": f"{username}@it.example.com",
                "emailVerified": True,
                "credentials": [{"type": "password", "value": password, "temporary": False}],
            },
        )
        assert created.status_code == 201, created.text
        user_id = created.headers["Location"].rsplit("/", 1)[-1]
        management = server.admin_json("GET", "clients", params={"clientId": "realm-management"})
        reps = [
            server.admin_json("GET", f"clients/{management[0]['id']}/roles/{role}")
            for role in roles
        ]
        server.admin_json(
            "POST", f"users/{user_id}/role-mappings/clients/{management[0]['id']}", json=reps
        )
        return cls(server, username, user_id, password)

    def token(self) -> str:
        """A fresh access token (password grant on the realm's ``admin-cli``)."""
        response = requests.post(
            f"{self.server.url}/realms/{self.server.realm}/protocol/openid-connect/token",
            data={
                "grant_type": "password",
                "client_id": "admin-cli",
                "username": self.username,
                "password": self.password,
            },
            timeout=15,
        )
        response.raise_for_status()
        return str(response.json()["access_token"])

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """Call ``/admin/realms/{realm}/{path}`` as this administrator."""
        return requests.request(
            method,
            f"{self.server.url}/admin/realms/{self.server.realm}/{path.lstrip('/')}",
            headers={"Authorization": f"Bearer {self.token()}"},
            timeout=30,
            **kwargs,
        )


# -- Groups, found as the connector finds them: by attribute ---------------------------------


def groups_tagged(server: KeycloakServer, attribute: str, value: str) -> list[dict[str, Any]]:
    """Every group whose ``attribute`` is ``value`` (full representations, with paths)."""
    found = server.admin_json(
        "GET",
        "groups",
        params={
            "q": f"{attribute}:{value}",
            "exact": "true",
            "populateHierarchy": "false",
            "briefRepresentation": "false",
            "max": 1000,
        },
    )
    return [g for g in found if value in (g.get("attributes") or {}).get(attribute, [])]


def set_group(server: KeycloakServer, set_id: str) -> dict[str, Any]:
    """The group of a permission set (tagged ``permission_set_id``), asserting there is one."""
    found = groups_tagged(server, "permission_set_id", set_id)
    assert len(found) == 1, found
    return found[0]


def seller_group(server: KeycloakServer, seller_id: str) -> dict[str, Any]:
    """A seller's own group (tagged ``seller_id``, no ``permission_set_id``), asserting one."""
    found = [
        g
        for g in groups_tagged(server, "seller_id", seller_id)
        if "permission_set_id" not in (g.get("attributes") or {})
    ]
    assert len(found) == 1, found
    return found[0]


# -- Logging in as a seller user (what the portal would do) ----------------------------------

PASSWORD = "Corr3ct-horse-battery"


def set_password(server: KeycloakServer, user_id: str, password: str = PASSWORD) -> None:
    """What the invited user would do through the invitation; here the admin sets it."""
    server.admin_json(
        "PUT",
        f"users/{user_id}/reset-password",
        json={"type": "password", "value": password, "temporary": False},
    )


def password_grant(
    server: KeycloakServer, username: str, password: str = PASSWORD
) -> requests.Response:
    """A password grant on seller-portal (direct access grants are on in the dev realm)."""
    return requests.post(
        f"{server.url}/realms/{server.realm}/protocol/openid-connect/token",
        data={
            "grant_type": "password",
            "client_id": "seller-portal",
            "username": username,
            "password": password,
            "scope": "openid",
        },
        timeout=15,
    )


def claims(token: str) -> dict[str, Any]:
    """The payload of a JWT (checking its signature is Keycloak's business here)."""
    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))
