"""`seller-connector serve` (gunicorn) as a real process on a loopback port, for tests that
need a live server: conformance, load, faults."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

from tests.support.ports import free_port

CLI = str(Path(sys.executable).with_name("seller-connector"))


@dataclass
class LiveServer:
    """A connector with its own state folder; ``start()`` it, ``stop()`` or ``kill()`` it."""

    home: Path
    workers: int = 2
    extra_env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def scim(self) -> str:
        return f"{self.url}/scim/v2"

    def env(self) -> dict[str, str]:
        env = {
            **os.environ,
            "SELLER_CONNECTOR_HOME": str(self.home),
            "SELLER_CONNECTOR_PUBLIC_URL": self.url,
            **self.extra_env,
        }
        for name in ("SELLER_CONNECTOR_DATABASE_URL", "SELLER_CONNECTOR_KEYCLOAK_URL"):
            if name not in self.extra_env:
                env.pop(name, None)
        return env

    def cli(self, *args: str) -> str:
        """Run a seller-connector command against this server's store; return its stdout."""
        done = subprocess.run(
            [CLI, *args], env=self.env(), capture_output=True, text=True, timeout=120
        )
        if done.returncode != 0:
            raise RuntimeError(f"seller-connector {' '.join(args)} failed: {done.stderr}")
        return done.stdout

    def create_seller(self, name: str, email: str) -> dict[str, str]:
        """A professional seller; returns the CLI's JSON (id, scim_url, token)."""
        out = self.cli(
            "sellers",
            "create",
            name,
            "--plan",
            "professional",
            "--primary-email",
            email,
            "--primary-name",
            "Olive Owner",
        )
        return dict(json.loads(out))

    def start(self, timeout: float = 60) -> LiveServer:
        self.home.mkdir(parents=True, exist_ok=True)
        log = (self.home / "server.log").open("ab")
        self.process = subprocess.Popen(
            [
                CLI,
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                str(self.workers),
            ],
            env=self.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited: {self.log_tail()}")
            try:
                if requests.get(f"{self.url}/healthz", timeout=5).status_code == 200:
                    return self
            except requests.RequestException:
                pass  # not listening, or still loading the app
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"the server did not answer in {timeout} s: {self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        path = self.home / "server.log"
        return (
            "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
            if path.exists()
            else ""
        )

    def kill(self) -> None:
        """SIGKILL the whole process group at once: no cleanup, as a crash."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()

    def outbox_worker_pid(self) -> int | None:
        """The outbox worker process that ``serve`` started beside gunicorn, or None."""
        for pid in self.worker_pids():
            try:
                arguments = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if any(b"main(['worker']" in argument for argument in arguments):
                return pid
        return None

    def worker_pids(self) -> list[int]:
        """The gunicorn master and workers of this server."""
        if self.process is None:
            return []
        out = subprocess.run(["pgrep", "-g", str(self.process.pid)], capture_output=True, text=True)
        return [int(p) for p in out.stdout.split()]
