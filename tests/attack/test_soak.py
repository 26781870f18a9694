"""A bounded soak on loopback: 8 clients mixing reads and writes against gunicorn for
SELLER_CONNECTOR_SOAK_SECONDS (20 by default; the benchmark's --soak runs longer). No
request fails, and the workers' memory and open files do not grow."""

from __future__ import annotations

import os
import random
import threading
import time
import uuid
from pathlib import Path

import pytest
import requests

from tests.conftest import PATCH_SCHEMA, user_body
from tests.support.live_server import LiveServer

CLIENTS = 8


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _open_files(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _snapshot(server: LiveServer) -> dict[int, tuple[int, int]]:
    return {pid: (_rss_kib(pid), _open_files(pid)) for pid in server.worker_pids()}


@pytest.mark.slow
def test_soak_has_no_errors_and_no_growth(tmp_path: Path) -> None:
    seconds = float(os.environ.get("SELLER_CONNECTOR_SOAK_SECONDS", "20"))
    # Thousands of creates, each with a pending invitation: the squatting cap is not tested here.
    server = LiveServer(
        tmp_path / "home",
        workers=2,
        extra_env={"SELLER_CONNECTOR_MAX_PENDING_INVITATIONS": "10000000"},
    ).start()
    try:
        seller = server.create_seller("Soak Test", "owner@soak.example.com")
        headers = {
            "Authorization": f"Bearer {seller['token']}",
            "Content-Type": "application/scim+json",
        }
        errors: list[str] = []
        counts = [0] * CLIENTS
        stop = threading.Event()

        def client(number: int) -> None:
            session = requests.Session()
            mine: list[str] = []
            rng = random.Random(number)
            while not stop.is_set():
                roll = rng.random()
                try:
                    if roll < 0.25 or not mine:
                        r = session.post(
                            f"{server.scim}/Users",
                            headers=headers,
                            timeout=30,
                            json=user_body(f"soak-{uuid.uuid4().hex}@soak.example.com"),
                        )
                        if r.status_code == 201:
                            mine.append(r.json()["id"])
                    elif roll < 0.5:
                        r = session.get(
                            f"{server.scim}/Users/{rng.choice(mine)}", headers=headers, timeout=30
                        )
                    elif roll < 0.7:
                        r = session.get(
                            f"{server.scim}/Users",
                            headers=headers,
                            timeout=30,
                            params={"filter": 'emails.value co "soak"', "count": 50},
                        )
                    elif roll < 0.9:
                        r = session.patch(
                            f"{server.scim}/Users/{rng.choice(mine)}",
                            headers=headers,
                            timeout=30,
                            json={
                                "schemas": [PATCH_SCHEMA],
                                "Operations": [
                                    {
                                        "op": "replace",
                                        "path": "displayName",
                                        "value": f"n{rng.random()}",
                                    }
                                ],
                            },
                        )
                    else:
                        r = session.get(f"{server.scim}/Groups", headers=headers, timeout=30)
                    if r.status_code >= 400:
                        errors.append(f"{r.request.method} {r.url}: {r.status_code} {r.text[:200]}")
                    counts[number] += 1
                except requests.RequestException as error:
                    errors.append(repr(error))

        threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
        for thread in threads:
            thread.start()
        time.sleep(min(5.0, seconds / 4))  # warm up: imports, caches, connection pools
        before = _snapshot(server)
        time.sleep(seconds)
        after = _snapshot(server)
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    finally:
        server.stop()

    assert errors == []
    assert sum(counts) > CLIENTS * 10, counts
    for pid, (rss, files) in before.items():
        if pid not in after:
            continue
        later_rss, later_files = after[pid]
        # Caches warm a little more; a leak grows with every request (thousands here).
        assert later_rss - rss < 30 * 1024, f"worker {pid}: RSS {rss} -> {later_rss} KiB"
        assert later_files - files <= 4, f"worker {pid}: open files {files} -> {later_files}"
