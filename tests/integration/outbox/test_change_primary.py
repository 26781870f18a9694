"""Change-primary end to end: the operator starts it, the new address gets a link, a plain HTTP
client follows it (GET shows the change, POST confirms), and the store and Keycloak change
together; the former primary stays as a deactivated secondary user and both addresses are
told. The link works once, its secret is never logged, and a forged confirmation fails."""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import requests
from click.testing import Result

from connector.bootstrap import Connector
from connector.entrypoints.web import create_app
from connector.services.outbox import OutboxWorker
from tests.conftest import SellerHandle, user_body
from tests.integration.outbox.helpers import kc_user, scim_json
from tests.integration.plugin.helpers import serve
from tests.support.keycloak import KeycloakServer
from tests.support.ports import free_port
from tests.support.smtp import SmtpSink

pytestmark = pytest.mark.keycloak


def _mail_to(smtp: SmtpSink, address: str) -> list[Any]:
    return [m for m in smtp.messages if address in m.rcpt_tos]


def test_a_primary_change_follows_the_emailed_link_to_keycloak(
    keycloak_server: KeycloakServer,
    connector: Connector,
    client: Any,
    make_seller: Callable[..., SellerHandle],
    make_worker: Callable[..., OutboxWorker],
    cli: Callable[..., Result],
    smtp: SmtpSink,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    base = f"http://127.0.0.1:{free_port()}"
    for name, value in (
        ("SELLER_CONNECTOR_SMTP_HOST", smtp.host),
        ("SELLER_CONNECTOR_SMTP_PORT", str(smtp.port)),
        ("SELLER_CONNECTOR_PUBLIC_URL", base),
    ):
        monkeypatch.setenv(name, value)
    handle = make_seller()
    old_address = handle.primary.user_name
    # The new primary is a secondary user of the seller, deactivated first (the rule).
    new_address = f"heir-{uuid.uuid4().hex[:8]}@primary.example.com"
    heir = scim_json(
        client.post("/scim/v2/Users", json=user_body(new_address), headers=handle.headers), 201
    )
    worker = make_worker()
    worker.run_once()
    refused = cli("sellers", "change-primary", handle.seller.id, "--to", new_address)
    assert refused.exit_code != 0 and "Deactivate it first" in refused.output
    deactivated = client.patch(
        f"/scim/v2/Users/{heir['id']}",
        headers=handle.headers,
        json={
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "replace", "path": "active", "value": False}],
        },
    )
    assert deactivated.status_code == 200

    started = cli("sellers", "change-primary", handle.seller.id, "--to", new_address)
    assert started.exit_code == 0, started.output
    (mail,) = [m for m in _mail_to(smtp, new_address) if m.subject.startswith("Confirm")]
    link = re.search(rf"{re.escape(base)}/operator/confirm-primary/[A-Za-z0-9_-]+", mail.text)
    assert link is not None, mail.text
    url = link.group(0)
    secret = url.rsplit("/", 1)[1]
    assert secret not in started.output  # the operator never sees it

    with serve(create_app(connector), base):
        page = requests.get(url, timeout=10)
        assert page.status_code == 200
        assert handle.seller.name in page.text and new_address in page.text
        assert page.headers["Referrer-Policy"] == "no-referrer"
        assert page.headers["Cache-Control"] == "no-store"
        assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
        check = re.search(r'name="check" value="([0-9a-f]+)"', page.text)
        assert check is not None
        # A confirmation that did not come from the page (cross-site) changes nothing.
        forged = requests.post(url, data={"check": "0" * 64}, timeout=10)
        assert forged.status_code == 403
        elsewhere = requests.post(
            url,
            data={"check": check.group(1)},
            headers={"Origin": "https://evil.example"},
            timeout=10,
        )
        assert elsewhere.status_code == 403
        with connector.uow() as uow:
            assert uow.sellers.get(handle.seller.id).primary_user_id == handle.primary.id  # type: ignore[union-attr]

        done = requests.post(url, data={"check": check.group(1)}, timeout=10)
        assert done.status_code == 200, done.text
        assert new_address in done.text
        # Single use.
        assert requests.get(url, timeout=10).status_code == 404
        assert requests.post(url, data={"check": check.group(1)}, timeout=10).status_code == 404

    # The store: the heir is the primary, the former primary a deactivated secondary.
    with connector.uow() as uow:
        seller = uow.sellers.get(handle.seller.id)
        assert seller is not None and seller.primary_user_id == heir["id"]
        promoted = uow.users.get(seller.id, heir["id"])
        former = uow.users.get(seller.id, handle.primary.id)
        audit = [e.action for e in uow.audit.list(seller.id)]
    assert promoted is not None and promoted.is_primary and promoted.active
    assert former is not None and not former.is_primary and not former.active
    assert "primary.changed" in audit
    # The secret appears in none of the connector's log lines (its request log names the
    # route only; this test's own HTTP server, werkzeug, is not the deployed one).
    ours = [r for r in caplog.records if r.name.startswith("seller_connector")]
    assert ours and not any(secret in r.getMessage() or secret in str(r.__dict__) for r in ours)

    # Keycloak follows through the outbox, and both addresses are told.
    report = worker.drain()
    assert report.poisoned == report.retried == 0, report.errors
    kc_heir = kc_user(keycloak_server, heir["id"])
    kc_former = kc_user(keycloak_server, handle.primary.id)
    assert kc_heir is not None and kc_former is not None
    assert kc_heir["enabled"] is True and kc_heir["attributes"]["seller_role"] == ["primary"]
    assert kc_former["enabled"] is False and kc_former["attributes"]["seller_role"] == ["secondary"]
    told_new = [m for m in _mail_to(smtp, new_address) if "now the primary" in m.subject]
    told_old = [m for m in _mail_to(smtp, old_address) if "no longer the primary" in m.subject]
    assert len(told_new) == 1 and len(told_old) == 1
    assert told_old[0].html and new_address in told_old[0].text
