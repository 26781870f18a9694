""" "Secondary users" notices (issue 15, point 2): a secondary user's first sign-in, its
deactivation and its reactivation, whichever way they happen, are told to the primary user and
to the active secondary users subscribed to ``secondary-users``, one email per recipient per
event, queued in the outbox with the change.

The first tests read the queue (no Keycloak needed); the last ones run the worker against the
session's real Keycloak and a real SMTP sink: a deactivation through SCIM and one in the
Keycloak console each deliver exactly one email per recipient, also across an SMTP outage.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from click.testing import Result

from connector.adapters.sql.outbox_queue import SqlOutboxQueue
from connector.bootstrap import Connector
from connector.domain.drafts import Actor
from connector.ports.identity import ProviderChange
from connector.ports.outbox import MAIL_SEND
from connector.services.console import apply_pushed
from connector.services.outbox import OutboxWorker
from connector.services.users import expire_invitations, set_active
from tests.conftest import SELLER_USER, SellerHandle, user_body
from tests.integration.outbox.helpers import kc_user, scim_json, wait_until
from tests.support.keycloak import KeycloakServer
from tests.support.smtp import ReceivedMail, SmtpSink

EXTENSION = {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", SELLER_USER]}


class Team:
    """A seller with a watcher (subscribed), a quiet user (not subscribed), a sleeper
    (subscribed, deactivated) and a leaver (subscribed, the one changes happen to)."""

    def __init__(self, client: Any, handle: SellerHandle) -> None:
        self.client = client
        self.handle = handle
        domain = f"team-{uuid.uuid4().hex[:6]}.example.com"
        self.watcher = self.add(f"watcher@{domain}", ["secondary-users", "orders"])
        self.quiet = self.add(f"quiet@{domain}", ["orders"])
        self.sleeper = self.add(f"sleeper@{domain}", ["secondary-users"])
        self.leaver = self.add(f"leaver@{domain}", ["secondary-users"])
        self.set_active(self.sleeper, False)

    def add(self, address: str, notifications: list[str]) -> dict[str, Any]:
        body = user_body(address, **EXTENSION, **{SELLER_USER: {"notifications": notifications}})
        return scim_json(
            self.client.post("/scim/v2/Users", json=body, headers=self.handle.headers), 201
        )

    def set_active(self, user: dict[str, Any], active: bool) -> None:
        scim_json(
            self.client.patch(
                f"/scim/v2/Users/{user['id']}",
                json={
                    "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                    "Operations": [{"op": "replace", "path": "active", "value": active}],
                },
                headers=self.handle.headers,
            ),
            200,
        )

    @property
    def told(self) -> list[str]:
        """Who the rule tells about the leaver: the primary and the active subscriber."""
        return sorted([self.handle.primary.user_name, self.watcher["userName"]])


def queued(connector: Connector, about: str) -> list[dict[str, Any]]:
    """The notices queued about an address (newest last)."""
    entries = SqlOutboxQueue(connector.engine).entries(limit=10_000)
    return [
        e.payload
        for e in reversed(entries)
        if e.topic == MAIL_SEND and about in e.payload["subject"]
    ]


def recipients(notices: list[dict[str, Any]]) -> list[str]:
    return sorted(n["to"] for n in notices)


# -- The rule, through every way a change comes (the queue) -----------------------------------


def test_who_is_told_of_what_whichever_way_it_happens(
    connector: Connector, client: Any, make_seller: Callable[..., SellerHandle]
) -> None:
    team = Team(client, make_seller())
    leaver = team.leaver["userName"]
    assert queued(connector, leaver) == []  # creating users tells nobody
    # The sleeper's deactivation was told to the primary and the two active subscribers.
    sleeper_notices = queued(connector, team.sleeper["userName"])
    assert recipients(sleeper_notices) == sorted(
        [team.handle.primary.user_name, team.watcher["userName"], team.leaver["userName"]]
    )

    team.set_active(team.leaver, False)  # SCIM
    notices = queued(connector, leaver)
    assert recipients(notices) == team.told
    (first,) = [n for n in notices if n["to"] == team.watcher["userName"]]
    assert "was deactivated" in first["subject"] and team.handle.seller.name in first["subject"]
    assert "identity provider (SCIM)" in first["text"] and "<b>" in first["html"]

    team.set_active(team.leaver, False)  # nothing changes, nothing is told
    assert len(queued(connector, leaver)) == 2
    team.set_active(team.leaver, True)  # SCIM reactivation
    reactivated = [n for n in queued(connector, leaver) if "reactivated" in n["subject"]]
    assert recipients(reactivated) == team.told

    # The command line (and the operator API, which calls the same use case).
    set_active(connector.uow(), team.handle.seller, team.leaver["id"], False, Actor("cli:ops"))
    by_cli = [n for n in queued(connector, leaver) if "deactivated" in n["subject"]]
    assert len(by_cli) == 4 and "by the marketplace" in by_cli[-1]["text"]

    # A refused change queues nothing (the primary cannot be deactivated).
    primary = team.handle.primary
    refused = client.patch(
        f"/scim/v2/Users/{primary.id}",
        json={
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "replace", "path": "active", "value": False}],
        },
        headers=team.handle.headers,
    )
    assert refused.status_code == 403
    assert queued(connector, primary.user_name) == []

    # A SCIM DELETE of an active user is its deactivation.
    quiet = team.quiet["userName"]
    deleted = client.delete(f"/scim/v2/Users/{team.quiet['id']}", headers=team.handle.headers)
    assert deleted.status_code == 204
    assert recipients(queued(connector, quiet)) == team.told


def test_first_sign_in_is_told_once_and_a_lapsed_invitation_as_a_deactivation(
    connector: Connector, client: Any, make_seller: Callable[..., SellerHandle]
) -> None:
    team = Team(client, make_seller())
    seller_id = team.handle.seller.id

    def pushed(user: dict[str, Any], kind: str) -> str:
        change = ProviderChange(
            provider_user_id=f"kc-{user['id']}",
            kind=kind,
            at=dt.datetime.now(dt.UTC),
            event_id=uuid.uuid4().hex,
            details={"connector_user_id": user["id"], "seller_id": seller_id},
        )
        return apply_pushed(connector.uow, connector.catalogue, change).result

    # The invitation accepted (the plugin's event), then its login: one first sign-in.
    assert pushed(team.leaver, "invitation-accepted") == "applied"
    assert pushed(team.leaver, "login") == "applied"
    assert pushed(team.leaver, "login") == "applied"
    signed_in = [
        n for n in queued(connector, team.leaver["userName"]) if "first time" in n["subject"]
    ]
    assert recipients(signed_in) == team.told
    # A first login without the invitation event is the first sign-in too (SSO users).
    assert pushed(team.watcher, "login") == "applied"
    told = [n for n in queued(connector, team.watcher["userName"]) if "first time" in n["subject"]]
    assert recipients(told) == sorted([team.handle.primary.user_name, team.leaver["userName"]])

    # The quiet user never accepts: its invitation lapses and it is deactivated, told so.
    assert expire_invitations(connector.uow(), dt.datetime.now(dt.UTC) + dt.timedelta(days=30)) == 1
    lapsed = queued(connector, team.quiet["userName"])
    assert recipients(lapsed) == sorted([*team.told, team.leaver["userName"]])
    assert all("invitation expired" in n["text"] for n in lapsed)


# -- Delivered through the worker, against Keycloak and a real SMTP sink --------------------------


def _notices(sink: SmtpSink, about: str, word: str) -> Counter[str]:
    """How many notices about ``about`` with ``word`` in the subject each address received."""
    found: Counter[str] = Counter()
    for mail in list(sink.messages):
        if about in mail.subject and word in mail.subject:
            for address in mail.rcpt_tos:
                found[address.casefold()] += 1
    return found


def _both_parts(mail: ReceivedMail) -> bool:
    return bool(mail.text.strip()) and "<p>" in mail.html


@pytest.fixture
def mailbox(monkeypatch: pytest.MonkeyPatch) -> Any:
    """The connector's own mail server (apart from the realm's), and a way to restart it."""
    state: dict[str, SmtpSink] = {"sink": SmtpSink().start()}
    monkeypatch.setenv("SELLER_CONNECTOR_SMTP_HOST", state["sink"].host)
    monkeypatch.setenv("SELLER_CONNECTOR_SMTP_PORT", str(state["sink"].port))

    class Mailbox:
        @property
        def sink(self) -> SmtpSink:
            return state["sink"]

        def stop(self) -> None:
            state["sink"].stop()

        def start(self) -> None:
            state["sink"] = SmtpSink(port=state["sink"].port).start()

    yield Mailbox()
    state["sink"].stop()


@pytest.mark.keycloak
def test_a_scim_deactivation_emails_each_recipient_once_also_across_an_smtp_outage(
    keycloak_server: KeycloakServer,
    connector: Connector,
    client: Any,
    make_seller: Callable[..., SellerHandle],
    make_worker: Callable[..., OutboxWorker],
    smtp: SmtpSink,
    mailbox: Any,
) -> None:
    team = Team(client, make_seller())
    worker = make_worker()
    report, _ = worker.run_once()
    assert report.poisoned == 0, report.errors

    team.set_active(team.leaver, False)
    worker.drain()
    leaver = team.leaver["userName"]
    assert wait_until(lambda: sum(_notices(mailbox.sink, leaver, "deactivated").values()) >= 2)
    time.sleep(0.5)  # nothing more arrives
    assert _notices(mailbox.sink, leaver, "deactivated") == {a.casefold(): 1 for a in team.told}
    mail = mailbox.sink.wait_for(lambda m: leaver in m.subject)
    assert _both_parts(mail)

    # The mail server goes down; the reactivation is kept and its notices wait in the outbox.
    mailbox.stop()
    team.set_active(team.leaver, True)
    report = worker.drain()
    assert report.retried >= 2 and report.poisoned == 0, report.errors
    pending = SqlOutboxQueue(connector.engine).entries(state="pending", limit=100)
    waiting = [e for e in pending if e.topic == MAIL_SEND and leaver in e.payload["subject"]]
    assert len(waiting) == 2 and all("mail unavailable" in (e.last_error or "") for e in waiting)
    mailbox.start()

    def delivered() -> bool:
        worker.drain()
        return sum(_notices(mailbox.sink, leaver, "reactivated").values()) >= 2

    assert wait_until(delivered, timeout=30, every=0.5)
    time.sleep(0.5)
    worker.drain()
    assert _notices(mailbox.sink, leaver, "reactivated") == {a.casefold(): 1 for a in team.told}


@pytest.mark.keycloak
def test_a_console_deactivation_emails_each_recipient_once(
    keycloak_server: KeycloakServer,
    connector: Connector,
    client: Any,
    make_seller: Callable[..., SellerHandle],
    make_worker: Callable[..., OutboxWorker],
    cli: Callable[..., Result],
    smtp: SmtpSink,
    mailbox: Any,
) -> None:
    team = Team(client, make_seller())
    worker = make_worker()
    report, first_poll = worker.run_once()  # users in Keycloak; the console marker starts now
    assert report.poisoned == 0, report.errors
    assert first_poll is not None and first_poll.started

    # What an IT administrator does in the console: disable the leaver.
    kc_leaver = kc_user(keycloak_server, team.leaver["id"])
    assert kc_leaver is not None
    keycloak_server.admin_json(
        "PUT", f"users/{kc_leaver['id']}", json={**kc_leaver, "enabled": False}
    )

    def polled() -> bool:
        result = cli("keycloak", "poll", "--once", "--format", "json")
        assert result.exit_code == 0, result.output
        changes = json.loads(result.output)["changes"]
        return any(c["kind"] == "disabled" and c["result"] == "applied" for c in changes)

    assert wait_until(polled, timeout=30, every=0.3)
    leaver = team.leaver["userName"]

    def delivered() -> bool:
        worker.run_once()  # polls again (nothing new) and sends
        return sum(_notices(mailbox.sink, leaver, "deactivated").values()) >= 2

    assert wait_until(delivered, timeout=30, every=0.5)
    time.sleep(0.5)
    worker.run_once()
    assert _notices(mailbox.sink, leaver, "deactivated") == {a.casefold(): 1 for a in team.told}
    mail = mailbox.sink.wait_for(lambda m: leaver in m.subject)
    assert "Keycloak admin console" in mail.text and _both_parts(mail)
    with connector.uow() as uow:
        stored = uow.users.get(team.handle.seller.id, team.leaver["id"])
    assert stored is not None and not stored.active


def test_the_recipient_index_follows_every_save_even_twice_in_one_unit_of_work(
    connector: Connector, client: Any, make_seller: Callable[..., SellerHandle]
) -> None:
    """A user deactivated and reactivated in one unit of work (a directory batch does that)
    ends as a recipient again: a save never trusts rows the same unit of work rewrote."""
    from connector.services.queries import notification_recipients
    from connector.services.users import change_active

    team = Team(client, make_seller())
    seller = team.handle.seller
    with connector.uow() as uow:
        user = uow.users.get(seller.id, team.watcher["id"])
        assert user is not None
        change_active(uow, seller, user, False, Actor("test"))
        change_active(uow, seller, user, True, Actor("test"))
        uow.commit()
    found = notification_recipients(connector.uow(), connector.catalogue, seller, "orders")
    assert [r.user_id for r in found] == [
        team.handle.primary.id,
        team.quiet["id"],
        team.watcher["id"],
    ]
