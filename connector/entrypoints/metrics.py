"""``/metrics``: what an operator watches, in Prometheus' text format (prometheus_client).

* ``seller_connector_http_requests_total{operation, status}`` and
  ``seller_connector_http_request_duration_seconds{operation}``: every request, SCIM ones by
  operation (``GET Users``, ``GET Users/{id}``, ``PATCH Groups/{id}``, ``POST Bulk``,
  ``POST .search`` ...), the others by their route (``GET /healthz``); never by seller, path
  or id, so that the number of series stays bounded.
* ``seller_connector_outbox_entries{state}`` (``pending``, ``in_progress``, ``poison``),
  ``seller_connector_outbox_backlog`` (pending and in progress),
  ``seller_connector_outbox_oldest_entry_age_seconds`` and
  ``seller_connector_outbox_waiting_for_retry``: read from the store at each scrape.
* ``seller_connector_directory_last_run_*{source}`` (``timestamp_seconds``,
  ``duration_seconds``, ``success``, ``full``, ``changes{kind}``): the last run of each
  directory source as recorded by :func:`connector.services.monitoring.record_directory_run`,
  and ``seller_connector_directory_state_timestamp_seconds{source}``: when each source last
  stored its sync state (its last successful run), from the store too.
* ``seller_connector_keycloak_requests_total{method}``,
  ``seller_connector_keycloak_request_duration_seconds{method}`` and
  ``seller_connector_keycloak_errors_total{kind}`` (``connector.adapters.keycloak.metrics``).
* ``seller_connector_store_up``: 0 when the store could not be read for this scrape.

**Several processes.** ``serve`` runs gunicorn with several worker processes and one outbox
worker process. Counters and histograms are per process, so ``serve`` gives them
prometheus_client's multiprocess mode:
:func:`connector.entrypoints.worker.prepare_multiprocess_dir` sets
``PROMETHEUS_MULTIPROC_DIR`` to ``$SELLER_CONNECTOR_HOME/prometheus`` (unless set already)
and empties it, in the gunicorn master before any process imports prometheus_client; every
worker and the outbox worker then write their values there, and a scrape adds them up
(``MultiProcessCollector``). The gauges are not per process: they are read from the store at
scrape time, the same on every worker and every machine. Without the variable (tests, one
process) the process's own registry is served.

**Who may scrape.** With ``SELLER_CONNECTOR_METRICS_TOKEN`` (or ``_FILE``) set, a request must
carry ``Authorization: Bearer <token>`` (compared in constant time), from anywhere. Without
it, only loopback clients, and never a request that a proxy forwarded (``X-Forwarded-For`` or
``Forwarded``): the SCIM port is usually published through a reverse proxy, and the figures
(request volumes, error rates, directory source ids) are not for the internet. So by default a
Prometheus agent on the same machine scrapes, and one elsewhere needs the token.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

from flask import Blueprint, Flask, Response, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from connector.bootstrap import Connector
from connector.domain.model import utcnow

log = logging.getLogger("seller_connector.metrics")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # read by prometheus_client itself
TOKEN_ENV = "SELLER_CONNECTOR_METRICS_TOKEN"  # noqa: S105 - a variable name, not a secret
PATH = "/metrics"

REQUESTS = Counter(
    "seller_connector_http_requests",
    "HTTP requests served, SCIM ones by operation, by status code.",
    ["operation", "status"],
)
DURATION = Histogram(
    "seller_connector_http_request_duration_seconds",
    "How long requests took to answer, by operation.",
    ["operation"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)

# SCIM resources and endpoints (RFC 7644); anything else under /scim/v2 is "other".
_SCIM_PREFIX = "/scim/v2"
_SCIM_ENDPOINTS = frozenset(
    {"Users", "Groups", "Bulk", ".search", "Me", "Schemas", "ResourceTypes",
     "ServiceProviderConfig"}
)  # fmt: skip


def _token() -> str | None:
    value = os.environ.get(TOKEN_ENV, "").strip()
    if value:
        return value
    path = os.environ.get(TOKEN_ENV + "_FILE", "").strip()
    if path:
        try:
            return Path(path).read_text(encoding="utf-8").strip() or None
        except OSError:
            log.error("%s_FILE=%s cannot be read: /metrics refuses every scrape", TOKEN_ENV, path)
            return "\0unreadable"  # nobody can present this
    return None


def _refusal() -> Response | None:
    """None when the request may scrape; otherwise the answer (see the module docstring)."""
    token = _token()
    if token is not None:
        given = request.headers.get("Authorization", "")
        scheme, _, value = given.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(
            value.strip().encode(), token.encode()
        ):
            return None
        return Response(
            "A bearer token is required (SELLER_CONNECTOR_METRICS_TOKEN).\n",
            status=401,
            headers={"WWW-Authenticate": 'Bearer realm="metrics"', "Content-Type": "text/plain"},
        )
    forwarded = request.headers.get("X-Forwarded-For") or request.headers.get("Forwarded")
    try:
        loopback = ipaddress.ip_address(request.remote_addr or "").is_loopback
    except ValueError:
        loopback = False
    if loopback and not forwarded:
        return None
    return Response(
        "Metrics are served to loopback clients only: set SELLER_CONNECTOR_METRICS_TOKEN to "
        "scrape from elsewhere.\n",
        status=403,
        headers={"Content-Type": "text/plain"},
    )


def operation() -> str:
    """The ``operation`` label of the current request: bounded, never an id or a seller."""
    path = request.path
    if path == _SCIM_PREFIX or path.startswith(_SCIM_PREFIX + "/"):
        parts = [p for p in path[len(_SCIM_PREFIX) :].split("/") if p]
        if not parts:
            return f"{request.method} /"
        if parts[0] not in _SCIM_ENDPOINTS:
            return f"{request.method} other"
        name = parts[0]
        if len(parts) > 1:
            name += "/.search" if parts[1] == ".search" and len(parts) == 2 else "/{id}"
        return f"{request.method} {name}"
    rule = request.url_rule.rule if request.url_rule is not None else "unmatched"
    return f"{request.method} {rule}"


class StoreCollector(Collector):
    """The gauges read from the store at scrape time."""

    def __init__(self, connector: Connector) -> None:
        self.connector = connector

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "seller_connector_store_up", "Whether the store could be read for this scrape."
        )
        try:
            snapshot = self.connector.monitoring().snapshot(utcnow())
        except Exception:  # the store is down: say so, and serve the rest
            log.warning("metrics: the store could not be read", exc_info=True)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        backlog = snapshot.backlog
        entries = GaugeMetricFamily(
            "seller_connector_outbox_entries",
            "Outbox entries waiting, by state (done ones are not counted).",
            labels=["state"],
        )
        for state, value in (
            ("pending", backlog.pending),
            ("in_progress", backlog.in_progress),
            ("poison", backlog.poison),
        ):
            entries.add_metric([state], value)
        yield entries
        yield GaugeMetricFamily(
            "seller_connector_outbox_backlog",
            "Outbox entries not yet applied (pending and in progress).",
            value=backlog.pending + backlog.in_progress,
        )
        yield GaugeMetricFamily(
            "seller_connector_outbox_oldest_entry_age_seconds",
            "Age of the oldest outbox entry not yet applied (0 when there is none).",
            value=backlog.oldest_age or 0.0,
        )
        yield GaugeMetricFamily(
            "seller_connector_outbox_waiting_for_retry",
            "Pending outbox entries waiting for their next attempt after a failure.",
            value=backlog.waiting_for_retry,
        )
        when = GaugeMetricFamily(
            "seller_connector_directory_last_run_timestamp_seconds",
            "When the last recorded run of a directory source ended (unix time).",
            labels=["source"],
        )
        duration = GaugeMetricFamily(
            "seller_connector_directory_last_run_duration_seconds",
            "How long the last recorded run of a directory source took.",
            labels=["source"],
        )
        success = GaugeMetricFamily(
            "seller_connector_directory_last_run_success",
            "1 when the last recorded run applied everything it planned, else 0.",
            labels=["source"],
        )
        full = GaugeMetricFamily(
            "seller_connector_directory_last_run_full",
            "1 when the last recorded run was a full run, 0 for a delta.",
            labels=["source"],
        )
        changes = GaugeMetricFamily(
            "seller_connector_directory_last_run_changes",
            "What the last recorded run of a directory source did, by kind.",
            labels=["source", "kind"],
        )
        for run in snapshot.directory_runs:
            when.add_metric([run.source_id], run.finished_at.timestamp())
            duration.add_metric([run.source_id], run.seconds)
            success.add_metric([run.source_id], 1 if run.ok else 0)
            full.add_metric([run.source_id], 1 if run.full else 0)
            for kind, count in sorted(run.counts.items()):
                changes.add_metric([run.source_id, kind], count)
        yield from (when, duration, success, full, changes)
        state = GaugeMetricFamily(
            "seller_connector_directory_state_timestamp_seconds",
            "When a directory source last stored its sync state: its last successful run.",
            labels=["source"],
        )
        for source, at in sorted(snapshot.directory_states.items()):
            state.add_metric([source], at.timestamp())
        yield state


class _ProcessCollector(Collector):
    """This process's own metrics (when not in multiprocess mode)."""

    def collect(self) -> Iterator[Metric]:
        yield from REGISTRY.collect()


def exposition(connector: Connector) -> bytes:
    """The metrics text: every process's counters (multiprocess mode) or this process's, and
    the store's gauges."""
    registry = CollectorRegistry(auto_describe=False)
    if os.environ.get(MULTIPROC_ENV):
        multiprocess.MultiProcessCollector(registry)
    else:
        registry.register(_ProcessCollector())
    registry.register(StoreCollector(connector))
    return generate_latest(registry)


def create_blueprint(connector: Connector) -> Blueprint:
    """``GET /metrics``, and the hooks that count every request of the application."""
    blueprint = Blueprint("metrics", __name__)

    @blueprint.before_app_request
    def _started() -> None:
        g.metrics_started = time.perf_counter()

    @blueprint.after_app_request
    def _counted(response: Response) -> Response:
        started = g.get("metrics_started")
        if started is not None:
            label = operation()
            REQUESTS.labels(label, str(response.status_code)).inc()
            DURATION.labels(label).observe(time.perf_counter() - started)
        return response

    @blueprint.get(PATH)
    def metrics() -> Response:
        refused = _refusal()
        if refused is not None:
            return refused
        return Response(exposition(connector), headers={"Content-Type": CONTENT_TYPE_LATEST})

    return blueprint


def install(app: Flask, connector: Connector) -> None:
    """Mount ``/metrics`` and the request counting on ``app``."""
    app.register_blueprint(create_blueprint(connector))
