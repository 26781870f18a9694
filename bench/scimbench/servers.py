"""The servers under test, started on free loopback ports, and their processes' figures."""

from __future__ import annotations

import contextlib
import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

HOST = "127.0.0.1"
BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A TCP port free on the loopback interface right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _command(name: str) -> str:
    """The console script of this virtual environment, else the one on PATH."""
    local = BIN / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if found is None:
        raise SystemExit(f"{name} not found: install the project (pip install -e '.[test]').")
    return found


def _seller_connector() -> list[str]:
    """The ``seller-connector`` command; without the console script, the same entry point."""
    local = BIN / "seller-connector"
    found = str(local) if local.exists() else shutil.which("seller-connector")
    if found:
        return [found]
    code = "import sys; from connector.entrypoints.cli import main; sys.exit(main())"
    return [sys.executable, "-c", code]


@dataclass
class Server:
    """A server process we started (and only that one is ever signalled)."""

    name: str
    port: int
    prefix: str
    process: subprocess.Popen[bytes]
    log: IO[bytes]
    log_path: Path
    health: str
    workers: int = 1
    threads: int = 0
    notes: dict[str, str] = field(default_factory=dict)

    @property
    def base(self) -> str:
        return f"http://{HOST}:{self.port}{self.prefix}"

    def wait_ready(self, timeout: float = 90.0) -> None:
        """Wait until the health URL answers 200."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited: see {self.log_path}\n{self.tail()}")
            try:
                connection = http.client.HTTPConnection(HOST, self.port, timeout=2)
                connection.request("GET", self.health)
                status = connection.getresponse().status
                connection.close()
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} did not start in {timeout} s: {self.tail()}")

    def tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self) -> None:
        """SIGTERM (gunicorn stops gracefully), SIGKILL after 20 s."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.log.close()

    def worker_pids(self) -> list[int]:
        """The server's processes that serve requests: gunicorn's workers, or the server itself."""
        children = child_pids(self.process.pid)
        return children or [self.process.pid]


def start_ours(
    home: Path,
    workers: int | None,
    threads: int | None,
    database_url: str | None = None,
    worker_class: str | None = None,
) -> Server:
    """``seller-connector serve`` on a free port, with its state folder ``home`` (and its
    store there in SQLite, unless ``database_url`` names another)."""
    port = free_port()
    # Only our settings: none of the caller's (a Keycloak URL would start an outbox worker).
    env = {k: v for k, v in os.environ.items() if not k.startswith("SELLER_CONNECTOR_")}
    env |= {
        "SELLER_CONNECTOR_HOME": str(home),
        "SELLER_CONNECTOR_PUBLIC_URL": f"http://{HOST}:{port}",
        "SELLER_CONNECTOR_SECRET_KEY": "bench-secret-key-not-for-production",
        # The run's own creates (thousands, with the Bulk cells) all stay pending: past the
        # default cap, which guards squatting, not load.
        "SELLER_CONNECTOR_MAX_PENDING_INVITATIONS": "10000000",
    }
    if database_url:
        env["SELLER_CONNECTOR_DATABASE_URL"] = database_url
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    command = [*_seller_connector(), "serve", "--host", HOST, "--port", str(port)]
    if workers:
        command += ["--workers", str(workers)]
    if threads:
        command += ["--threads", str(threads)]
    if worker_class:
        command += ["--worker-class", worker_class]
    log_path = home / "server.log"
    log = log_path.open("wb")
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=home)
    server = Server("seller-connector", port, "/scim/v2", process, log, log_path, "/healthz")
    server.wait_ready()
    server.workers = len(child_pids(process.pid))
    server.threads = 1 if worker_class == "sync" else threads or _default_threads()
    return server


def _default_threads() -> int:
    from connector.entrypoints.cli.server import serve

    for param in serve.params:
        if param.name == "threads":
            return int(param.default)  # type: ignore[arg-type]
    return 0


def start_reference(home: Path, token: str) -> Server:
    """The scim2-server reference server (in memory, threaded wsgiref) on a free port."""
    port = free_port()
    command = [
        _command("scim2-server"),
        "--hostname",
        HOST,
        "--port",
        str(port),
        "--bearer-token",
        token,
    ]
    log_path = home / "reference.log"
    log = log_path.open("wb")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=home)
    server = Server(
        "scim2-server", port, "/v2", process, log, log_path, "/v2/ServiceProviderConfig"
    )
    server.wait_ready()
    return server


def start_bare(home: Path, database: Path, workers: int, threads: int) -> Server:
    """The bare ceiling (``scimbench.bare``) under gunicorn with our server model, on a
    SQLite file already seeded."""
    port = free_port()
    env = dict(os.environ)
    env["BARE_DATABASE"] = str(database)
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(ROOT / "bench"), str(ROOT), env.get("PYTHONPATH")])
    )
    command = [
        _command("gunicorn"),
        "--bind",
        f"{HOST}:{port}",
        "--worker-class",
        "gthread" if threads > 1 else "sync",
        "--workers",
        str(workers),
        "--threads",
        str(threads),
        "scimbench.bare:app_from_env()",
    ]
    log_path = home / "bare.log"
    log = log_path.open("wb")
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=home)
    server = Server("bare ceiling", port, "/bare/v2", process, log, log_path, "/healthz")
    server.wait_ready()
    server.workers, server.threads = workers, threads
    return server


# -- Process figures (Linux /proc) ---------------------------------------------------------


def child_pids(pid: int) -> list[int]:
    """The direct children of a process."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as handle:
                stat = handle.read()
        except OSError:
            continue
        # The command name is in parentheses and may hold spaces: split after it.
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 1 and int(fields[1]) == pid:
            found.append(int(entry))
    return sorted(found)


def rss_mib(pid: int, kind: str = "VmRSS") -> float:
    """Resident memory of a process, in MiB: all of it (VmRSS), or only its private memory
    (RssAnon), without the database pages SQLite maps from the file (RssFile), which the
    kernel shares and reclaims as it needs."""
    with open(f"/proc/{pid}/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith(f"{kind}:"):
                return int(line.split()[1]) / 1024
    return 0.0


def fd_counts(pid: int) -> tuple[int, int]:
    """Open file descriptors of a process, and how many of them are sockets."""
    fds = sockets = 0
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            fds += 1
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:"):
                    sockets += 1
    return fds, sockets


def established(port: int) -> int:
    """TCP connections established to a local port (server side)."""
    count = 0
    with open("/proc/net/tcp", encoding="ascii") as handle:
        next(handle)
        for line in handle:
            parts = line.split()
            local, state = parts[1], parts[3]
            if state == "01" and int(local.rsplit(":", 1)[1], 16) == port:
                count += 1
    return count
