#!/usr/bin/env bash
# Install everything and run seller-connector for a demo on this machine: Keycloak (with the
# sellers realm), a local SMTP sink, and the connector (SCIM + Keycloak worker) with a demo
# seller whose SCIM URL and token are printed. Ctrl-C stops everything.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
"$REPO/deploy/install.sh" --test   # the demo's mail sink uses aiosmtpd from the test extras
VENV="${SELLER_CONNECTOR_VENV:-$REPO/.venv}"
PORT="${SELLER_CONNECTOR_PORT:-8080}"
SMTP_PORT="${SELLER_CONNECTOR_DEMO_SMTP_PORT:-8025}"
export SELLER_CONNECTOR_HOME="${SELLER_CONNECTOR_HOME:-$REPO/var}"
export SELLER_CONNECTOR_PUBLIC_URL="${SELLER_CONNECTOR_PUBLIC_URL:-http://127.0.0.1:$PORT}"
mkdir -p "$SELLER_CONNECTOR_HOME"

pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    "$REPO/deploy/keycloak/keycloak.sh" stop || true
}
trap cleanup EXIT INT TERM

"$VENV/bin/python" "$REPO/deploy/mail_sink.py" --port "$SMTP_PORT" --dir "$SELLER_CONNECTOR_HOME/mail" &
pids+=($!)

"$REPO/deploy/keycloak/keycloak.sh" start --db dev-file --wait
KEYCLOAK_URL="http://127.0.0.1:${KEYCLOAK_PORT:-8180}"
"$VENV/bin/python" "$REPO/deploy/keycloak/configure_smtp.py" --keycloak "$KEYCLOAK_URL" --port "$SMTP_PORT"
export SELLER_CONNECTOR_KEYCLOAK_URL="$KEYCLOAK_URL"
SELLER_CONNECTOR_KEYCLOAK_CLIENT_SECRET="$("$REPO/deploy/keycloak/keycloak.sh" secret)"
export SELLER_CONNECTOR_KEYCLOAK_CLIENT_SECRET

echo
echo "Demo seller (keep the token: it is shown once):"
"$VENV/bin/seller-connector" demo
echo
echo "Keycloak admin console: $KEYCLOAK_URL/admin/master/console/#/sellers (admin/admin, local only)"
echo "Emails land in $SELLER_CONNECTOR_HOME/mail"
echo
"$VENV/bin/seller-connector" serve --host 127.0.0.1 --port "$PORT" &
pids+=($!)
wait "${pids[-1]}"
