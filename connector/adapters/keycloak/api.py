"""A thin, error-mapping layer over python-keycloak's admin connection.

Every admin call of the adapter goes through :class:`AdminApi.request`, which uses the
``KeycloakAdmin`` connection of python-keycloak (client-credentials token, refreshed when it
expires or on a 401) and turns failures into the port's two exceptions:

* no connection, a timeout, 429 or 5xx: :class:`IdentityProviderUnavailable`, with
  ``retry_after`` read from ``Retry-After``;
* any other 4xx: :class:`IdentityProviderRejected` (404 and 409 as the subclasses below,
  which callers catch when they converge).

The raw calls are used instead of python-keycloak's per-object helpers because those drop the
response headers (``Retry-After``, ``Location``) and raise on codes the adapter expects.
Nothing here logs a header, a token, a secret or a request body.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import email.utils
import json
import logging
import threading
import time
from typing import Any
from urllib.parse import quote

import requests
from keycloak import KeycloakAdmin
from keycloak.exceptions import KeycloakConnectionError, KeycloakError

from connector.adapters.keycloak import metrics
from connector.adapters.keycloak.settings import KeycloakSettings
from connector.ports.identity import IdentityProviderRejected, IdentityProviderUnavailable

log = logging.getLogger(__name__)


class RejectedByKeycloak(IdentityProviderRejected):
    """Keycloak answered a 4xx; ``status`` says which."""

    def __init__(self, detail: str, status: int) -> None:
        super().__init__(detail)
        self.status = status


class NotFoundInKeycloak(RejectedByKeycloak):
    """Keycloak answered 404."""


class ConflictInKeycloak(RejectedByKeycloak):
    """Keycloak answered 409 (a name, username, email or membership already exists)."""


class ForbiddenInKeycloak(RejectedByKeycloak):
    """Keycloak answered 403: the service account lacks a role for this call."""


def seg(value: str) -> str:
    """Quote one path segment (role names carry ``:``, group paths carry ``/``)."""
    return quote(value, safe="")


def retry_after_seconds(value: str | None, now: dt.datetime | None = None) -> float | None:
    """Read a ``Retry-After`` header: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    now = now or dt.datetime.now(dt.UTC)
    return max(0.0, (when - now).total_seconds())


def _keycloak_message(response: requests.Response) -> str:
    """Keycloak's own words about an error, short (never the request)."""
    try:
        body = response.json()
    except ValueError:
        return (response.text or "")[:200]
    if isinstance(body, dict):
        for key in ("errorMessage", "error_description", "error", "message"):
            if body.get(key):
                return str(body[key])[:200]
    return str(body)[:200]


class AdminApi:
    """The admin REST API of one realm, as the seller-connector service account."""

    def __init__(self, settings: KeycloakSettings) -> None:
        self.settings = settings
        # The service account lives in the realm it administers: token and API share it.
        self._admin = KeycloakAdmin(
            server_url=settings.url + "/",
            realm_name=settings.realm,
            user_realm_name=settings.realm,
            client_id=settings.client_id,
            client_secret_key=settings.client_secret,
            grant_type="client_credentials",
            verify=settings.verify,
            timeout=int(max(1, settings.timeout)),
            pool_maxsize=max(10, settings.max_workers * 2),
        )
        # python-keycloak mounts urllib3 retries (once, to survive a reset connection), which
        # also sleep out a 429/503's Retry-After inside the call. The outbox should get that
        # delay instead of a blocked worker, so keep the reset retry and drop the sleeping.
        for adapter in self._admin.connection._s.adapters.values():
            retry = getattr(adapter, "max_retries", None)
            if retry is not None:
                retry.respect_retry_after_header = False
        self._token_lock = threading.Lock()
        self._has_token = False

    @property
    def admin(self) -> KeycloakAdmin:
        """The python-keycloak admin client (for the few calls that suit it as they are)."""
        return self._admin

    @property
    def realm_path(self) -> str:
        return f"admin/realms/{seg(self.settings.realm)}"

    def own_user_id(self) -> str | None:
        """The user id of the service account this API acts as, read from the ``sub`` of its
        own access token: no admin call, so the account needs no right to view its own client.

        Keycloak issued the token to us over the connection we trust, so its payload is read
        without checking the signature. None when the token carries no ``sub``.
        """
        self._ensure_token()
        token = (self._admin.connection.token or {}).get("access_token")
        if not isinstance(token, str) or token.count(".") != 2:
            return None
        payload = token.split(".")[1]
        try:
            claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        except (binascii.Error, ValueError):
            return None
        subject = claims.get("sub") if isinstance(claims, dict) else None
        return str(subject) if subject else None

    def _ensure_token(self) -> None:
        # Fetch the first token explicitly, so that a wrong secret reads as such and not as a
        # 401 on whatever call came first.
        if self._has_token:
            return
        with self._token_lock:
            if self._has_token:
                return
            try:
                self._admin.connection.get_token()
            except KeycloakConnectionError as exc:
                metrics.ERRORS.labels("unavailable").inc()
                raise IdentityProviderUnavailable(
                    f"Cannot reach Keycloak at {self.settings.url} to get a token"
                ) from exc
            except KeycloakError as exc:
                code = exc.response_code
                if code is None or code == 429 or code >= 500:
                    metrics.ERRORS.labels("unavailable").inc()
                    raise IdentityProviderUnavailable(
                        f"Keycloak could not issue a token for {self.settings.client_id} ({code})"
                    ) from exc
                metrics.ERRORS.labels("token").inc()
                raise IdentityProviderRejected(
                    f"Keycloak refused the client credentials of {self.settings.client_id!r} "
                    f"in realm {self.settings.realm!r} ({code}): check the client id and "
                    "secret (SELLER_CONNECTOR_KEYCLOAK_CLIENT_SECRET[_FILE])"
                ) from exc
            self._has_token = True

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: dict[str, Any] | None = None,
        ok: tuple[int, ...] = (200, 201, 204),
    ) -> requests.Response:
        """Call ``{url}/{path}`` (path relative to the server root) and check the answer.

        :raises NotFoundInKeycloak: on 404 (unless 404 is in ``ok``).
        :raises ConflictInKeycloak: on 409 (unless 409 is in ``ok``).
        :raises IdentityProviderRejected: on other 4xx.
        :raises IdentityProviderUnavailable: on connection errors, 429 and 5xx.
        """
        self._ensure_token()
        metrics.REQUESTS.labels(method).inc()
        started = time.perf_counter()
        try:
            return self._request(method, path, body, params, ok)
        except IdentityProviderUnavailable:
            metrics.ERRORS.labels("unavailable").inc()
            raise
        except RejectedByKeycloak as exc:
            kind = {403: "forbidden", 404: "not_found", 409: "conflict"}.get(exc.status, "rejected")
            metrics.ERRORS.labels(kind).inc()
            raise
        except IdentityProviderRejected:
            metrics.ERRORS.labels("token").inc()
            raise
        finally:
            metrics.DURATION.labels(method).observe(time.perf_counter() - started)

    def _request(
        self,
        method: str,
        path: str,
        body: Any,
        params: dict[str, Any] | None,
        ok: tuple[int, ...],
    ) -> requests.Response:
        connection = self._admin.connection
        params = params or {}
        data = None if body is None else json.dumps(body)
        try:
            if method == "GET":
                response = connection.raw_get(path, **params)
            elif method == "POST":
                response = connection.raw_post(path, data=data or "", **params)
            elif method == "PUT":
                response = connection.raw_put(path, data=data or "", **params)
            elif method == "DELETE":
                response = connection.raw_delete(path, data=data, **params)
            else:  # pragma: no cover - a programming error
                raise ValueError(f"unsupported method {method}")
        except KeycloakConnectionError as exc:
            raise IdentityProviderUnavailable(
                f"Cannot reach Keycloak at {self.settings.url} ({method} {path})"
            ) from exc
        except KeycloakError as exc:
            # Raised by python-keycloak when a token refresh fails mid-call.
            code = exc.response_code
            if code is None or code == 429 or code >= 500:
                raise IdentityProviderUnavailable(
                    f"Keycloak token refresh failed ({code})"
                ) from exc
            raise IdentityProviderRejected(f"Keycloak token refresh refused ({code})") from exc
        status = response.status_code
        log.debug("keycloak %s %s -> %s", method, path, status)
        if status in ok:
            return response
        message = f"Keycloak answered {status} to {method} /{path}: {_keycloak_message(response)}"
        if status == 429 or status >= 500:
            raise IdentityProviderUnavailable(
                message, retry_after=retry_after_seconds(response.headers.get("Retry-After"))
            )
        if status == 400 and method == "GET":
            # The adapter's reads carry no body and well-formed parameters: a 400 to one is the
            # server's fault. Keycloak shutting down was seen answering "Cannot parse the JSON"
            # to a GET; retried like an outage (and poison after max_attempts if it persists).
            raise IdentityProviderUnavailable(message)
        if status == 404:
            raise NotFoundInKeycloak(message, status)
        if status == 409:
            raise ConflictInKeycloak(message, status)
        if status == 403:
            raise ForbiddenInKeycloak(
                message + " (the seller-connector service account lacks a realm-management "
                "role for this; see deploy/keycloak/README.md)",
                status,
            )
        raise RejectedByKeycloak(message, status)

    # Shorthands: each returns decoded JSON, or None for an empty body.

    def get(self, path: str, **params: Any) -> Any:
        """GET and decode JSON."""
        return _json(self.request("GET", path, params=params))

    def get_or_none(self, path: str, **params: Any) -> Any:
        """GET and decode JSON, or None on 404."""
        response = self.request("GET", path, params=params, ok=(200, 404))
        return None if response.status_code == 404 else _json(response)

    def post(self, path: str, body: Any = None, **params: Any) -> requests.Response:
        """POST JSON."""
        return self.request("POST", path, body=body, params=params)

    def put(self, path: str, body: Any = None, **params: Any) -> requests.Response:
        """PUT JSON."""
        return self.request("PUT", path, body=body, params=params)

    def delete(self, path: str, body: Any = None, *, missing_ok: bool = True) -> None:
        """DELETE; a 404 is success when ``missing_ok`` (converging to 'absent')."""
        ok = (200, 204, 404) if missing_ok else (200, 204)
        self.request("DELETE", path, body=body, ok=ok)

    @staticmethod
    def created_id(response: requests.Response) -> str:
        """The id at the end of a 201's ``Location``."""
        location = response.headers.get("Location", "")
        if not location:
            raise IdentityProviderRejected("Keycloak created an object but sent no Location")
        return location.rstrip("/").rsplit("/", 1)[-1]


def _json(response: requests.Response) -> Any:
    if response.status_code == 204 or not response.content:
        return None
    return response.json()
