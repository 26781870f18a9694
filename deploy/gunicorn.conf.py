"""gunicorn settings for running seller-connector under systemd (see deploy/systemd/).

    gunicorn -c deploy/gunicorn.conf.py 'connector.entrypoints.web:create_app()'

`seller-connector serve` uses the same values without this file.
"""

import multiprocessing
import os

bind = os.environ.get("SELLER_CONNECTOR_BIND", "127.0.0.1:8080")
# One worker per core and one more, 4 threads each: measured by bench/server_model.py (README,
# Performance, "Server model").
workers = int(os.environ.get("SELLER_CONNECTOR_WORKERS", multiprocessing.cpu_count() + 1))
worker_class = "gthread"
threads = int(os.environ.get("SELLER_CONNECTOR_THREADS", "4"))
timeout = 60
graceful_timeout = 20
keepalive = 5
# Bodies are bounded by the app (MAX_CONTENT_LENGTH and the Bulk maxPayloadSize).
limit_request_line = 8190
accesslog = None  # the app logs one JSON line per request, with its request id
errorlog = "-"
loglevel = "warning"
# Forwarded headers only from a local reverse proxy.
forwarded_allow_ips = "127.0.0.1"


# The shared metrics folder (PROMETHEUS_MULTIPROC_DIR, emptied at start) and one outbox worker
# process beside the request workers (when Keycloak is configured), started once the master
# listens and stopped with it: the same as `seller-connector serve`.
_hooks: dict = {}


def _worker_hooks() -> dict:
    if not _hooks:
        from connector.bootstrap import bootstrap
        from connector.entrypoints.worker import gunicorn_hooks

        _hooks.update(gunicorn_hooks(bootstrap(migrate=False)))
    return _hooks


def on_starting(server) -> None:
    _worker_hooks()["on_starting"](server)


def when_ready(server) -> None:
    _worker_hooks()["when_ready"](server)


def on_exit(server) -> None:
    _worker_hooks()["on_exit"](server)
