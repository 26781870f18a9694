"""Keycloak's own SCIM API (a preview in 26.7) as a third target, seeded with the same users.

What a seller's IT could switch on instead of this service. Switching it on in 26.7.3:
start with ``--features=scim-api``; the realm attribute ``scimApiEnabled: true``; a
confidential client whose service account holds realm-management ``manage-users``; an
``oidc-audience-mapper`` whose included custom audience is the SCIM base URL itself
(``<keycloak>/realms/<realm>/scim/v2``); a long access-token lifespan for the benchmark.
It lists at most 100 per page and has no Bulk, no sort, no ETags: only the operations it
has are measured.

The distribution the project fetched (``.cache/keycloak``, deploy/keycloak/keycloak.sh
fetch) is copied into the run's temporary folder (a build with other features would
otherwise change the shared copy) and started in ``start-dev`` mode with an in-memory
database, on free loopback ports.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from scimbench.seed import Tenant, email_of
from scimbench.servers import HOST, ROOT, Server, free_port

VERSION = os.environ.get("KEYCLOAK_VERSION", "26.7.3")
REALM = "bench"
CLIENT = "scim-bench"
SECRET = "scim-bench-secret-not-for-production"


def distribution() -> Path | None:
    """The unpacked Keycloak the project fetched, if any."""
    cache = Path(os.environ.get("SELLER_CONNECTOR_CACHE", ROOT / ".cache"))
    found = cache / "keycloak" / f"keycloak-{VERSION}"
    return found if (found / "bin" / "kc.sh").exists() else None


def java_home() -> str | None:
    """A Java 25+ JDK, as deploy/keycloak/keycloak.sh looks for it."""
    if os.environ.get("KEYCLOAK_JAVA_HOME"):
        return os.environ["KEYCLOAK_JAVA_HOME"]
    candidates = sorted(Path("/usr/lib/jvm").glob("temurin-2[5-9]*"))
    return str(candidates[0]) if candidates else None


class KeycloakScim:
    """A Keycloak of our own with the SCIM API on, its admin and its SCIM client."""

    def __init__(self, work: Path) -> None:
        source = distribution()
        jdk = java_home()
        if source is None or jdk is None:
            raise RuntimeError(
                "Keycloak's own SCIM needs the fetched distribution and a Java 25 JDK: run "
                "deploy/keycloak/keycloak.sh fetch (or pass --no-keycloak)"
            )
        self.home = work / "keycloak"
        shutil.copytree(source, self.home, symlinks=True)
        for jar in (self.home / "providers").glob("*.jar"):
            jar.unlink()  # the bench realm uses none of the project's plugin
        self.port = free_port()
        self.management = free_port()
        self.admin_password = "bench-admin-" + os.urandom(6).hex()
        env = {
            **os.environ,
            "JAVA_HOME": jdk,
            "KC_BOOTSTRAP_ADMIN_USERNAME": "admin",
            "KC_BOOTSTRAP_ADMIN_PASSWORD": self.admin_password,
        }
        self.log_path = work / "keycloak.log"
        log = self.log_path.open("wb")
        process = subprocess.Popen(
            [
                str(self.home / "bin" / "kc.sh"),
                "start-dev",
                f"--http-port={self.port}",
                f"--http-host={HOST}",
                f"--http-management-port={self.management}",
                f"--http-management-host={HOST}",
                "--health-enabled=true",
                "--db=dev-mem",
                "--features=scim-api",
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        prefix = f"/realms/{REALM}/scim/v2"
        self.server = Server("keycloak-scim", self.port, prefix, process, log, self.log_path, "")
        self.url = f"http://{HOST}:{self.port}"
        self.base = f"{self.url}{prefix}"

    # -- HTTP ------------------------------------------------------------------------------

    def _call(
        self, method: str, url: str, body: Any = None, token: str | None = None, form: bool = False
    ) -> Any:
        headers = {"Accept": "application/json"}
        data = None
        if form:
            data = urllib.parse.urlencode(body).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        elif body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if token:
            headers["Authorization"] = f"Bearer {token}"
        request = urllib.request.Request(url, data=data, method=method, headers=headers)  # noqa: S310
        with urllib.request.urlopen(request, timeout=300) as response:  # noqa: S310
            payload = response.read()
        return json.loads(payload) if payload else None

    def _admin_token(self) -> str:
        return str(
            self._call(
                "POST",
                f"{self.url}/realms/master/protocol/openid-connect/token",
                {
                    "grant_type": "password",
                    "client_id": "admin-cli",
                    "username": "admin",
                    "password": self.admin_password,
                },
                form=True,
            )["access_token"]
        )

    # -- Life --------------------------------------------------------------------------------

    def wait_ready(self, timeout: float = 300.0) -> None:
        """Until /health/ready answers (the first start re-augments Quarkus: 30-60 s)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.server.process.poll() is not None:
                raise RuntimeError(f"Keycloak exited: {self.server.tail()}")
            try:
                self._call("GET", f"http://{HOST}:{self.management}/health/ready")
                return
            except OSError:
                time.sleep(1)
        raise RuntimeError(f"Keycloak did not start in {timeout} s: {self.server.tail()}")

    def stop(self) -> None:
        """Stop Keycloak (SIGTERM, then SIGKILL)."""
        self.server.stop()

    # -- The realm, the client, the users ---------------------------------------------------------

    def seed(self, users: int, groups: int) -> Tenant:
        """A realm with the SCIM API on, its client, and ``users`` users in ``groups`` groups
        (the same addresses and names as our store and the reference), loaded by partial
        import as the master admin (seeding is not measured)."""
        admin = self._admin_token()
        admin_api = f"{self.url}/admin/realms"
        self._call(
            "POST",
            admin_api,
            {
                "realm": REALM,
                "enabled": True,
                "attributes": {"scimApiEnabled": "true"},
                # The benchmark must not stop to fetch tokens.
                "accessTokenLifespan": 36_000,
                "clients": [
                    {
                        "clientId": CLIENT,
                        "secret": SECRET,
                        "publicClient": False,
                        "serviceAccountsEnabled": True,
                        "standardFlowEnabled": False,
                        "directAccessGrantsEnabled": False,
                        "protocolMappers": [
                            {
                                "name": "scim-audience",
                                "protocol": "openid-connect",
                                "protocolMapper": "oidc-audience-mapper",
                                "config": {
                                    "included.custom.audience": self.base,
                                    "access.token.claim": "true",
                                    "id.token.claim": "false",
                                },
                            }
                        ],
                    }
                ],
                "groups": [{"name": f"Team {g:04d}"} for g in range(groups)],
            },
            admin,
        )
        realm_api = f"{admin_api}/{REALM}"
        client = self._call("GET", f"{realm_api}/clients?clientId={CLIENT}", token=admin)[0]
        account = self._call(
            "GET", f"{realm_api}/clients/{client['id']}/service-account-user", token=admin
        )
        management = self._call(
            "GET", f"{realm_api}/clients?clientId=realm-management", token=admin
        )[0]
        role = self._call(
            "GET", f"{realm_api}/clients/{management['id']}/roles/manage-users", token=admin
        )
        self._call(
            "POST",
            f"{realm_api}/users/{account['id']}/role-mappings/clients/{management['id']}",
            [role],
            admin,
        )

        def load(start: int) -> None:
            chunk = []
            for i in range(start, min(users, start + 250)):
                email = email_of(i)
                chunk.append(
                    {
                        "username": email,
                        "email": email,
                        "emailVerified": True,
                        "firstName": f"Given{i}",
                        "lastName": f"Family{i % 997}",
                        "enabled": True,
                        "groups": [f"/Team {i % groups:04d}"] if groups else [],
                    }
                )
            self._call(
                "POST",
                f"{realm_api}/partialImport",
                {"ifResourceExists": "SKIP", "users": chunk},
                admin,
            )

        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(load, range(0, users, 250)))
        admin = self._admin_token()
        ids: dict[str, str] = {}
        for first in range(0, users + 1000, 1000):
            page = self._call(
                "GET",
                f"{realm_api}/users?first={first}&max=1000&briefRepresentation=true",
                token=admin,
            )
            ids.update({u["username"]: u["id"] for u in page})
            if len(page) < 1000:
                break
        names = [email_of(i) for i in range(users)]
        found = self._call("GET", f"{realm_api}/groups?max={groups + 10}", token=admin)
        token = self._call(
            "POST",
            f"{self.url}/realms/{REALM}/protocol/openid-connect/token",
            {"grant_type": "client_credentials", "client_id": CLIENT, "client_secret": SECRET},
            form=True,
        )["access_token"]
        return Tenant(
            token=str(token),
            user_ids=[ids[n] for n in names],
            user_names=names,
            group_ids=[g["id"] for g in found],
        )
