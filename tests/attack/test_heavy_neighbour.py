"""One seller's heaviest allowed requests never hold another seller up.

Against gunicorn on SQLite (one writer at a time, the case where a held lock would show):
seller A sends 400-operation PATCHes and 1,000-term searches back to back while seller B
creates users. Each of B's creates is answered within 2 s, and most of them while one of
A's requests was in flight (without that overlap, the test would prove nothing).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import requests

from tests.conftest import PATCH_SCHEMA, user_body
from tests.support.live_server import LiveServer

CREATES = 25
BOUND_SECONDS = 2.0


def _headers(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Content-Type": "application/scim+json"}


@pytest.mark.slow
def test_a_heavy_seller_does_not_delay_another_sellers_create(tmp_path: Path) -> None:
    server = LiveServer(tmp_path / "home", workers=2).start()
    try:
        heavy = _headers(server.create_seller("Heavy Seller", "owner@heavy.example.com")["token"])
        light = _headers(server.create_seller("Light Seller", "owner@light.example.com")["token"])
        created = requests.post(
            f"{server.scim}/Users",
            headers=heavy,
            json=user_body("busy@heavy.example.com"),
            timeout=30,
        )
        assert created.status_code == 201, created.text
        user = f"{server.scim}/Users/{created.json()['id']}"
        # 400 operations, each replacing the title: linear in the resource, and all applied.
        patch = {
            "schemas": [PATCH_SCHEMA],
            "Operations": [
                {"op": "replace", "path": "title", "value": f"title {n}"} for n in range(400)
            ],
        }
        search = {
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
            "filter": " or ".join(
                f'userName eq "nobody{n}@heavy.example.com"' for n in range(1000)
            ),
        }
        in_flight: list[tuple[float, float]] = []
        heavy_answers: list[int] = []
        stop = threading.Event()

        def heavy_client(send: str) -> None:
            session = requests.Session()
            while not stop.is_set():
                started = time.monotonic()
                if send == "patch":
                    answer = session.patch(user, headers=heavy, json=patch, timeout=60)
                else:
                    answer = session.post(
                        f"{server.scim}/Users/.search", headers=heavy, json=search, timeout=60
                    )
                in_flight.append((started, time.monotonic()))
                heavy_answers.append(answer.status_code)

        heavies = [threading.Thread(target=heavy_client, args=(s,)) for s in ("patch", "search")]
        for thread in heavies:
            thread.start()
        time.sleep(0.5)
        session = requests.Session()
        creates: list[tuple[float, float, int]] = []
        try:
            for n in range(CREATES):
                started = time.monotonic()
                answer = session.post(
                    f"{server.scim}/Users",
                    headers=light,
                    json=user_body(f"staff{n}@light.example.com"),
                    timeout=30,
                )
                creates.append((started, time.monotonic(), answer.status_code))
                time.sleep(0.05)
        finally:
            stop.set()
            for thread in heavies:
                thread.join(timeout=120)

        assert heavy_answers and set(heavy_answers) == {200}, heavy_answers
        assert [status for _, _, status in creates] == [201] * CREATES
        slowest = max(end - start for start, end, _ in creates)
        assert slowest < BOUND_SECONDS, f"a create took {slowest:.2f} s"
        overlapped = sum(
            any(a < end and start < b for a, b in in_flight) for start, end, _ in creates
        )
        assert overlapped >= CREATES * 0.8, f"only {overlapped} creates met a heavy request"
        final = requests.get(user, headers=heavy, timeout=30).json()
        assert final["title"] == "title 399"
    finally:
        server.stop()
