"""What the Keycloak adapter counts, for ``/metrics`` (prometheus_client).

Counted in whichever process calls Keycloak: the outbox worker process beside ``serve``, a
request worker, a command. Under ``serve`` these processes share ``PROMETHEUS_MULTIPROC_DIR``
(see ``connector.entrypoints.metrics``), so the service's ``/metrics`` adds them up.

* ``seller_connector_keycloak_requests_total{method}``: admin and bulk calls made.
* ``seller_connector_keycloak_request_duration_seconds{method}``: how long they took.
* ``seller_connector_keycloak_errors_total{kind}``: calls that failed: ``unavailable`` (no
  connection, a timeout, 429, 5xx), ``not_found`` (404), ``conflict`` (409), ``forbidden``
  (403: a missing role), ``rejected`` (another 4xx), ``token`` (the client credentials grant
  failed). A 404 or 409 that the adapter expects while converging (a lookup, "already a
  member") is an answer, not an error, and is not counted here.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

REQUESTS = Counter(
    "seller_connector_keycloak_requests",
    "Calls to Keycloak's admin API and the plugin's bulk endpoint.",
    ["method"],
)
DURATION = Histogram(
    "seller_connector_keycloak_request_duration_seconds",
    "How long calls to Keycloak took.",
    ["method"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
ERRORS = Counter(
    "seller_connector_keycloak_errors",
    "Calls to Keycloak that failed, by kind (unavailable, not_found, conflict, forbidden, "
    "rejected, token).",
    ["kind"],
)
