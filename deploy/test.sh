#!/usr/bin/env bash
# Install everything and run the whole test suite: lint, unit tests, and integration tests
# against real servers (Keycloak, OpenLDAP slapd, PostgreSQL, an SMTP sink) that the tests
# start themselves on loopback. Extra arguments go to pytest.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
"$REPO/deploy/install.sh" --test

VENV="${SELLER_CONNECTOR_VENV:-$REPO/.venv}"
echo "test: ruff" >&2
"$VENV/bin/ruff" check .
"$VENV/bin/ruff" format --check .

# The servers are part of the suite: missing ones fail it rather than skip.
export SELLER_CONNECTOR_REQUIRE_KEYCLOAK=1 CI="${CI:-true}"
echo "test: pytest" >&2
exec "$VENV/bin/pytest" -p no:cacheprovider "$@"
