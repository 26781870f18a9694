"""How the adapter reads settings and maps HTTP failures, without Keycloak.

A healthy Keycloak never answers 429 or 503 on demand, so these tests run a tiny HTTP server
on loopback that plays one: it issues a token and answers the admin call with the status the
test asks for.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from connector.adapters.keycloak import KeycloakIdentityProvider, KeycloakSettings
from connector.adapters.keycloak.api import retry_after_seconds
from connector.adapters.keycloak.settings import KeycloakSettingsError
from connector.ports.identity import IdentityProviderRejected, IdentityProviderUnavailable


class _Stub(BaseHTTPRequestHandler):
    status = 503
    headers_out: dict[str, str] = {}

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, status: int, body: object, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        if self.path.endswith("/protocol/openid-connect/token"):
            self._send(200, {"access_token": "stub", "expires_in": 300, "token_type": "Bearer"})
        else:
            self.do_GET()

    def do_GET(self) -> None:
        self._send(type(self).status, {"errorMessage": "stubbed"}, type(self).headers_out)


@pytest.fixture
def stub() -> Iterator[tuple[type[_Stub], KeycloakSettings]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Stub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    settings = KeycloakSettings(
        url=f"http://127.0.0.1:{server.server_address[1]}",
        realm="sellers",
        client_id="seller-connector",
        client_secret="stub-secret",
        timeout=5.0,
    )
    try:
        yield _Stub, settings
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    ("status", "retry_after", "expected"),
    [(503, "7", 7.0), (429, "2", 2.0), (502, None, None)],
)
def test_overload_and_server_errors_are_unavailable_with_retry_after(
    stub: tuple[type[_Stub], KeycloakSettings],
    status: int,
    retry_after: str | None,
    expected: float | None,
) -> None:
    handler, settings = stub
    handler.status = status
    handler.headers_out = {"Retry-After": retry_after} if retry_after else {}
    with pytest.raises(IdentityProviderUnavailable) as caught:
        KeycloakIdentityProvider(settings).ensure_catalogue()
    assert caught.value.retry_after == expected


def test_a_400_to_a_read_is_retried_as_the_servers_fault(
    stub: tuple[type[_Stub], KeycloakSettings],
) -> None:
    """The adapter's GETs carry no body: a Keycloak shutting down was seen answering them
    "400 Cannot parse the JSON". Not final: retried like an outage."""
    handler, settings = stub
    handler.status = 400
    handler.headers_out = {}
    with pytest.raises(IdentityProviderUnavailable, match="400"):
        KeycloakIdentityProvider(settings).ensure_catalogue()


@pytest.mark.parametrize("status", [403, 404, 409])
def test_client_errors_are_rejected(
    stub: tuple[type[_Stub], KeycloakSettings], status: int
) -> None:
    handler, settings = stub
    handler.status = status
    handler.headers_out = {}
    with pytest.raises(IdentityProviderRejected, match=str(status)):
        KeycloakIdentityProvider(settings).ensure_catalogue()


def test_retry_after_reads_seconds_and_dates() -> None:
    assert retry_after_seconds("12") == 12.0
    assert retry_after_seconds(None) is None
    assert retry_after_seconds("soon") is None
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past


def test_settings_from_env(tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text("from-file\n")
    settings = KeycloakSettings.from_env(
        {
            "SELLER_CONNECTOR_KEYCLOAK_URL": "http://kc.test:8180/",
            "SELLER_CONNECTOR_KEYCLOAK_CLIENT_SECRET": "from-env",
            "SELLER_CONNECTOR_KEYCLOAK_CLIENT_SECRET_FILE": str(secret_file),
        }
    )
    assert settings.url == "http://kc.test:8180"
    assert settings.realm == "sellers"  # from mappings/idp.yaml
    assert settings.client_id == "seller-connector"
    assert settings.client_secret == "from-file"
    assert "from-file" not in repr(settings)

    with pytest.raises(KeycloakSettingsError, match="URL"):
        KeycloakSettings.from_env({})
    with pytest.raises(KeycloakSettingsError, match="CLIENT_SECRET"):
        KeycloakSettings.from_env({"SELLER_CONNECTOR_KEYCLOAK_URL": "http://kc.test"})
