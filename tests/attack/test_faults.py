"""Faults: the process killed in the middle of a Bulk write, the database locked or gone.
The store stays consistent and clients get 503 with Retry-After, never a 500.
(The identity provider going down is the outage test in tests/integration/outbox/.)"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from connector.bootstrap import bootstrap
from connector.entrypoints.web import create_app
from connector.settings import Settings
from tests.conftest import bulk_creates, make_settings, user_body
from tests.support.live_server import LiveServer
from tests.support.ports import free_port


def _bulk(count: int, prefix: str) -> dict[str, Any]:
    return bulk_creates(user_body(f"{prefix}{n}@crash.example.com") for n in range(count))


def _lost_so_far(database: Path) -> int:
    """How many users of the killed Bulk are stored, read without disturbing the writer."""
    try:
        with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
            row = db.execute(
                "SELECT count(*) FROM users WHERE user_name_key LIKE 'lost%'"
            ).fetchone()
    except sqlite3.Error:
        return 0
    return int(row[0])


@pytest.mark.slow
def test_sigkill_during_bulk_leaves_the_store_consistent(tmp_path: Path) -> None:
    server = LiveServer(tmp_path / "home", workers=1).start()
    try:
        seller = server.create_seller("Crash Test", "owner@crash.example.com")
        headers = {
            "Authorization": f"Bearer {seller['token']}",
            "Content-Type": "application/scim+json",
        }
        # A first Bulk that completes: the kill must not lose committed work.
        done = requests.post(
            f"{server.scim}/Bulk", json=_bulk(50, "kept"), headers=headers, timeout=120
        )
        assert done.status_code == 200
        assert all(o["status"] == "201" for o in done.json()["Operations"])

        answered: list[int] = []

        def send() -> None:
            with contextlib.suppress(requests.RequestException):  # the server dies under it
                reply = requests.post(
                    f"{server.scim}/Bulk", json=_bulk(1000, "lost"), headers=headers, timeout=120
                )
                answered.append(reply.status_code)

        sender = threading.Thread(target=send)
        sender.start()
        # Kill as soon as the Bulk has written some of its operations, and not all.
        database = tmp_path / "home" / "seller-connector.sqlite3"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and _lost_so_far(database) < 20:
            time.sleep(0.01)
        server.kill()
        sender.join(timeout=30)
        assert answered == [], "the Bulk finished before the kill: the test proved nothing"
    finally:
        server.kill()

    database = tmp_path / "home" / "seller-connector.sqlite3"
    connection = sqlite3.connect(database)
    try:
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        users = connection.execute(
            "SELECT id, user_name_key FROM users WHERE role = 'secondary'"
        ).fetchall()
        names = {name for _, name in users}
        kept = {f"kept{n}@crash.example.com" for n in range(50)}
        assert kept <= names
        lost = names - kept
        # Each operation of a Bulk is committed on its own (RFC 7644 §3.7: a Bulk is not one
        # transaction, and one seller's Bulk must not hold the store's write lock for all of
        # it): the kill landed in the middle of this one, so part of it is stored.
        assert 0 < len(lost) < 1000, "the kill did not land mid-Bulk: the test proved nothing"
        for user_id, _ in users:
            # Every stored user has its reserved email, its audit event and its outbox entry.
            assert (
                connection.execute(
                    "SELECT count(*) FROM reserved_emails WHERE user_id = ?", (user_id,)
                ).fetchone()[0]
                >= 1
            )
            assert (
                connection.execute(
                    "SELECT count(*) FROM audit_events WHERE target = ?", (f"user:{user_id}",)
                ).fetchone()[0]
                >= 1
            )
            assert (
                connection.execute(
                    "SELECT count(*) FROM outbox WHERE aggregate_id = ?", (user_id,)
                ).fetchone()[0]
                >= 1
            )
    finally:
        connection.close()

    # The service starts again on the same store and serves it.
    again = LiveServer(tmp_path / "home", workers=1).start()
    try:
        listed = requests.get(
            f"{again.scim}/Users", headers=headers, params={"count": 1}, timeout=30
        )
        assert listed.status_code == 200
        assert listed.json()["totalResults"] == len(users) + 1  # and the primary
    finally:
        again.stop()


def test_locked_database_answers_503_with_retry_after(
    sqlite_url: str, tmp_path: Path, make_seller: Any
) -> None:
    connector = bootstrap(make_settings(sqlite_url, tmp_path, busy_timeout_ms=200), migrate=False)
    client = create_app(connector).test_client()
    handle = make_seller()
    locker = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    try:
        write = client.post(
            "/scim/v2/Users", headers=handle.headers, json=user_body("late@locked.example.com")
        )
        assert write.status_code == 503
        assert write.headers["Retry-After"].isdigit()
        assert write.json["status"] == "503" and "Retry" in write.json["detail"]
        # Readers do not wait for the writer (WAL).
        assert client.get("/scim/v2/Users", headers=handle.headers).status_code == 200
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    retried = client.post(
        "/scim/v2/Users", headers=handle.headers, json=user_body("late@locked.example.com")
    )
    assert retried.status_code == 201


def test_unreachable_database_answers_503(tmp_path: Path) -> None:
    nowhere = f"postgresql+psycopg://nobody@127.0.0.1:{free_port()}/none?connect_timeout=2"
    settings = Settings(database_url=nowhere, secret_key="s", home=tmp_path)
    client = create_app(bootstrap(settings, migrate=False)).test_client()
    response = client.get(
        "/scim/v2/Users", headers={"Authorization": "Bearer scn_0123456789abcdef.secret"}
    )
    assert response.status_code == 503
    assert response.headers["Retry-After"].isdigit()
    assert response.json["status"] == "503"
    health = client.get("/healthz")
    assert health.status_code == 503
