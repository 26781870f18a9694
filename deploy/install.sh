#!/usr/bin/env bash
# Install what seller-connector needs on a Debian machine: a Python virtualenv with the
# project, and (with --test) the servers the tests start: OpenLDAP slapd and PostgreSQL.
# Keycloak is fetched from Maven Central by deploy/keycloak/keycloak.sh.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${SELLER_CONNECTOR_VENV:-$REPO/.venv}"
WITH_TEST=0
[[ "${1:-}" == "--test" ]] && WITH_TEST=1

say() { echo "install: $*" >&2; }

as_root() {
    if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi
}

apt_install() {
    local missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    ((${#missing[@]} == 0)) && return 0
    say "installing Debian packages: ${missing[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

command -v python3 >/dev/null || { say "python3 is required (3.11+)"; exit 1; }
if ! command -v mvn >/dev/null; then apt_install maven; fi

if ((WITH_TEST)); then
    apt_install slapd ldap-utils postgresql
fi

if [[ ! -x "$VENV/bin/python" ]]; then
    say "creating $VENV"
    python3 -m venv "$VENV"
fi
target="$REPO"
((WITH_TEST)) && target="$REPO[test]"
say "installing the project into $VENV"
"$VENV/bin/pip" install -q --disable-pip-version-check -e "$target"
"$VENV/bin/python" -c "import connector, scim" || { say "the project did not install"; exit 1; }

"$REPO/deploy/keycloak/keycloak.sh" fetch
# The Keycloak plugin (JUnit tests included): the jar Keycloak installs at start.
"$REPO/deploy/keycloak/keycloak.sh" build-plugin
