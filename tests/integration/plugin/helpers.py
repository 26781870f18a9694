"""What the plugin and SSO tests share: the adapter, sellers of their own, tokens, a live app."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from flask import Flask
from werkzeug.serving import make_server

from connector.domain.catalogue import Level
from connector.domain.model import Email, Plan, Role, SellerAccount, SellerUser


def new_seller() -> SellerAccount:
    """A seller of its own for one test (a fresh id: tests never see each other's users)."""
    short = uuid.uuid4().hex[:10]
    return SellerAccount(id=f"s-{short}", name=f"Seller {short}", plan=Plan.professional)


def new_user(
    seller: SellerAccount,
    role: Role = Role.secondary,
    permissions: dict[str, Level] | None = None,
    email: str | None = None,
) -> SellerUser:
    """A user of ``seller`` with a unique address."""
    short = uuid.uuid4().hex[:8]
    address = email or f"user-{short}@{seller.id}.example.com"
    return SellerUser(
        id=f"u-{short}",
        seller_id=seller.id,
        user_name=address,
        role=role,
        emails=[Email(address, primary=True)],
        given_name="Test",
        family_name=short,
        permissions=permissions or {},
    )


@dataclass
class Recorded:
    """The raw requests a live app received on one path (to replay them)."""

    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)


@contextmanager
def serve(app: Flask, url: str, record_path: str | None = None) -> Iterator[Recorded]:
    """Serve ``app`` on the loopback host and port of ``url`` in a thread, recording the raw
    requests to ``record_path``."""
    parts = urlsplit(url)
    recorded = Recorded()
    inner = app.wsgi_app

    def recording(environ: dict[str, Any], start_response: Any) -> Any:
        if record_path is not None and environ.get("PATH_INFO") == record_path:
            length = int(environ.get("CONTENT_LENGTH") or 0)
            body = environ["wsgi.input"].read(length)
            import io

            environ["wsgi.input"] = io.BytesIO(body)
            headers = {
                key[5:].replace("_", "-").title(): value
                for key, value in environ.items()
                if key.startswith("HTTP_")
            }
            recorded.requests.append((headers, body))
        return inner(environ, start_response)

    server = make_server(parts.hostname or "127.0.0.1", parts.port or 80, recording, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield recorded
    finally:
        server.shutdown()
        thread.join(timeout=10)
