"""Hosting the outbox worker: a thread of this process, or a child process beside gunicorn.

The worker itself (what it claims and applies) is ``connector.services.outbox``; the composition
root builds it (``Connector.outbox_worker``). This module only decides where it runs, and
prepares what the processes of one ``serve`` share: the metrics folder.

**Several machines.** Each machine runs ``serve`` (and so one outbox worker) on the same
PostgreSQL: the queue's claims skip each other's rows (``FOR UPDATE SKIP LOCKED``), an
aggregate's entries are applied one claim at a time in id order whichever machine claims
them, and a machine that dies leaves its claims to the others once their lease
(``SELLER_CONNECTOR_OUTBOX_LEASE_SECONDS``, 300 s) ends. Every machine needs the same
``SELLER_CONNECTOR_SECRET_KEY``; SQLite is for one machine only.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from connector.bootstrap import Connector, keycloak_configured
from connector.services.outbox import ENV_PREFIX, OutboxPolicy, OutboxWorker

log = logging.getLogger("seller_connector.outbox")


class BackgroundWorker:
    """An :class:`OutboxWorker` running in a daemon thread of this process.

    Only for a process that does not fork afterwards (tests, a single-process embedding):
    SQLite connections, locks and threads do not survive a ``fork()`` (see
    :func:`start_background_worker`).
    """

    def __init__(self, worker: OutboxWorker, interval: float | None = None) -> None:
        self.worker = worker
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=worker.run,
            args=(self._stop, interval),
            name="seller-connector-outbox",
            daemon=True,
        )

    def start(self) -> BackgroundWorker:
        """Start the thread."""
        self._thread.start()
        return self

    @property
    def alive(self) -> bool:
        """Whether the thread runs."""
        return self._thread.is_alive()

    def stop(self, timeout: float = 15.0) -> None:
        """Ask the loop to stop after its current call, and wait up to ``timeout`` seconds."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)


class WorkerProcess:
    """``seller-connector worker`` running as a child process (a fresh interpreter)."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.process = process

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self.process.pid

    @property
    def alive(self) -> bool:
        """Whether the child still runs."""
        return self.process.poll() is None

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM (the worker ends after its current call), then SIGKILL after ``timeout``."""
        if not self.alive:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("outbox worker %d did not stop in %.0f s: killing it", self.pid, timeout)
            self.process.kill()
            self.process.wait(5)


_WORKER_MAIN = (
    "import sys; from connector.entrypoints.cli import main; "
    "sys.exit(main(['worker'], prog_name='seller-connector'))"
)


def start_background_worker(
    connector: Connector,
    *,
    in_process: bool = False,
    policy: OutboxPolicy | None = None,
    interval: float | None = None,
) -> BackgroundWorker | WorkerProcess | None:
    """Start ONE outbox worker (with the console poll) beside this process; stop it with
    ``.stop()``. ``serve`` calls it once, in the gunicorn master (see :func:`gunicorn_hooks`).

    By default the worker is a separate process, ``seller-connector worker``, on the same
    store (the connector's database URL and home are passed down) and the same Keycloak and
    ``SELLER_CONNECTOR_OUTBOX_*`` settings (the environment). Not a thread of the caller: the
    gunicorn master forks its request workers *after* ``when_ready`` (and again whenever one
    is replaced), and a fork taken while a thread holds SQLite connections leaves the children
    with copies of them: request workers then failed to boot with "database is locked". A
    child process keeps the master single-threaded, has its own connections and signals, and
    a crash of the worker does not touch the service.

    ``in_process=True`` runs it in a daemon thread of this process instead (tests, or a
    process that never forks). Returns None, after a warning, when Keycloak is not configured:
    SCIM then still works and changes wait in the outbox until a worker runs.
    """
    if not keycloak_configured():
        log.warning(
            "SELLER_CONNECTOR_KEYCLOAK_URL is not set: no outbox worker; changes wait in the "
            "outbox until one runs (seller-connector worker)"
        )
        return None
    if in_process:
        worker = connector.outbox_worker(policy=policy)
        assert worker is not None
        return BackgroundWorker(worker, interval).start()
    env = {
        **os.environ,
        "SELLER_CONNECTOR_DATABASE_URL": connector.settings.database_url,
        "SELLER_CONNECTOR_HOME": str(connector.settings.home),
    }
    if policy is not None:
        env.update({ENV_PREFIX + k.upper(): str(v) for k, v in policy.__dict__.items()})
    if interval is not None:
        env[ENV_PREFIX + "INTERVAL"] = str(interval)
    process = subprocess.Popen([sys.executable, "-c", _WORKER_MAIN], env=env)
    log.info("outbox worker started (pid %d)", process.pid)
    return WorkerProcess(process)


MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def prepare_multiprocess_dir(home: Path) -> Path:
    """Give the processes of one ``serve`` a shared metrics folder, empty.

    Points ``PROMETHEUS_MULTIPROC_DIR`` at ``home/prometheus`` (unless the environment names a
    folder already: then that one, which must be this service's alone) and empties it, so that
    a previous run's values (and reused pids) are not added in. Call it in the gunicorn master
    before it forks (``on_starting``): request workers and the outbox worker process inherit
    the variable, and prometheus_client, imported afterwards in each of them, writes its values
    there; ``/metrics`` adds them up (``connector.entrypoints.metrics``). This module does not
    import prometheus_client: the master must not choose its value class before the variable
    is set.
    """
    path = Path(os.environ.get(MULTIPROC_ENV) or home / "prometheus")
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    for entry in path.iterdir():
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
    os.environ[MULTIPROC_ENV] = str(path)
    if "prometheus_client" in sys.modules:
        log.warning(
            "prometheus_client was imported before %s was set: this process's metrics stay its own",
            MULTIPROC_ENV,
        )
    return path


def gunicorn_hooks(connector: Connector) -> dict[str, Callable[[Any], None]]:
    """gunicorn server hooks: the shared metrics folder, and ONE outbox worker process beside
    the service.

    ``on_starting`` runs once in the master before anything is forked: it prepares the
    metrics folder (:func:`prepare_multiprocess_dir`). ``when_ready`` runs once in the master
    when it listens (before it forks the request workers): it starts the worker process;
    ``on_exit`` stops it when gunicorn shuts down. Pass them with the other settings:
    ``{"bind": ..., **gunicorn_hooks(connector)}``.
    """
    running: list[BackgroundWorker | WorkerProcess] = []

    def on_starting(_server: Any) -> None:
        prepare_multiprocess_dir(connector.settings.home)

    def when_ready(_server: Any) -> None:
        handle = start_background_worker(connector)
        if handle is not None:
            running.append(handle)

    def on_exit(_server: Any) -> None:
        while running:
            running.pop().stop()

    return {"on_starting": on_starting, "when_ready": when_ready, "on_exit": on_exit}
