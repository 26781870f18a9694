#!/usr/bin/env bash
# Fetch, start, stop and watch a local Keycloak for seller-connector (dev, demo and tests).
#
# Not for production: production Keycloak is deployed by its own means. This script runs the
# Quarkus distribution from Maven Central in start-dev mode on the Temurin 25 JDK.
set -euo pipefail

KEYCLOAK_VERSION="${KEYCLOAK_VERSION:-26.7.3}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
CACHE="${SELLER_CONNECTOR_CACHE:-$REPO/.cache}/keycloak"
DIST="$CACHE/keycloak-$KEYCLOAK_VERSION"
STATE="${KEYCLOAK_STATE_DIR:-$CACHE/state}"
PORT="${KEYCLOAK_PORT:-8180}"
MGMT_PORT="${KEYCLOAK_MANAGEMENT_PORT:-9180}"
REALM_FILE="$HERE/realm-sellers.json"
PLUGIN_DIR="$HERE/plugin"
PLUGIN_JAR_NAME="seller-connector-keycloak-plugin.jar"

usage() {
    cat <<EOF
Usage: $(basename "$0") COMMAND [OPTIONS]

Commands:
  fetch                 Download keycloak-quarkus-dist $KEYCLOAK_VERSION with Maven into
                        $CACHE and unpack it (once).
  start [--db dev-mem|dev-file] [--wait] [--timeout S]
                        Start Keycloak in the background (start-dev), importing
                        realm-sellers.json. dev-file (the default) keeps data between runs
                        (demo); dev-mem throws it away (tests).
  wait [--timeout S]    Wait until /health/ready answers (default 180 s).
  stop [--timeout S]    Stop Keycloak: TERM, then KILL after the timeout (default 30 s).
  status                Say whether Keycloak runs, where, and whether it is ready.
  secret                Print the seller-connector client secret in use (for local dev).
  build-plugin          Build the seller-connector Keycloak plugin (plugin/, Maven, unit
                        tests included) and put its jar into providers/.
  --help                This text.

Environment:
  KEYCLOAK_PORT (8180), KEYCLOAK_MANAGEMENT_PORT (9180), KEYCLOAK_VERSION ($KEYCLOAK_VERSION)
  SELLER_CONNECTOR_CACHE      cache folder (default \$REPO/.cache; Keycloak lives in keycloak/)
  KEYCLOAK_STATE_DIR          pid, log and generated dev secret (default cache/state)
  KEYCLOAK_JAVA_HOME          a Java 25+ JDK (default: /usr/lib/jvm/temurin-2[5-9]*)
  KC_BOOTSTRAP_ADMIN_USERNAME / KC_BOOTSTRAP_ADMIN_PASSWORD
                              the master admin; default admin/admin, FOR LOCAL DEV ONLY
  SELLER_CONNECTOR_KEYCLOAK_CLIENT_SECRET
                              secret of the seller-connector client; when unset one is
                              generated once into the state dir (never committed)
  KEYCLOAK_PROVIDERS          a folder of provider jars to install (besides
                              deploy/keycloak/providers/)
  SELLER_CONNECTOR_WEBHOOK_URL / SELLER_CONNECTOR_WEBHOOK_SECRET (or _SECRET_FILE)
                              where the plugin posts console changes, and the HMAC secret
                              shared with the connector; unset: the plugin posts nothing
  PLUGIN_JAVA_HOME            JDK for build-plugin (default: the machine's java, 17+)
EOF
}

die() {
    echo "keycloak.sh: $*" >&2
    exit 1
}

find_java_home() {
    if [[ -n "${KEYCLOAK_JAVA_HOME:-}" ]]; then
        [[ -x "$KEYCLOAK_JAVA_HOME/bin/java" ]] ||
            die "KEYCLOAK_JAVA_HOME=$KEYCLOAK_JAVA_HOME has no bin/java"
        echo "$KEYCLOAK_JAVA_HOME"
        return
    fi
    local candidate
    for candidate in /usr/lib/jvm/temurin-25-jdk-amd64 /usr/lib/jvm/temurin-2[5-9]*; do
        if [[ -x "$candidate/bin/java" ]]; then
            echo "$candidate"
            return
        fi
    done
    die "Keycloak $KEYCLOAK_VERSION needs Java 25 (Temurin); none found in /usr/lib/jvm/temurin-2[5-9]*. Install one or set KEYCLOAK_JAVA_HOME to a Java 25+ JDK."
}

cmd_fetch() {
    if [[ -x "$DIST/bin/kc.sh" ]]; then
        echo "Keycloak $KEYCLOAK_VERSION already unpacked in $DIST"
        return
    fi
    command -v mvn >/dev/null || die "mvn (Maven) is needed to fetch Keycloak"
    mkdir -p "$CACHE"
    local archive="$CACHE/keycloak-quarkus-dist-$KEYCLOAK_VERSION.tar.gz"
    if [[ ! -s "$archive" ]]; then
        echo "Fetching keycloak-quarkus-dist $KEYCLOAK_VERSION (about 180 MB) into $CACHE"
        mvn -q dependency:copy \
            "-Dartifact=org.keycloak:keycloak-quarkus-dist:$KEYCLOAK_VERSION:tar.gz" \
            "-DoutputDirectory=$CACHE" -Dmdep.overWriteIfNewer=true
    fi
    [[ -s "$archive" ]] || die "Maven did not produce $archive"
    # Unpack beside the final place, then rename: an interrupted unpack never looks done.
    local tmp="$CACHE/.unpack.$$"
    rm -rf "$tmp"
    mkdir -p "$tmp"
    tar -xzf "$archive" -C "$tmp"
    rm -rf "$DIST"
    mv "$tmp/keycloak-$KEYCLOAK_VERSION" "$DIST"
    rm -rf "$tmp"
    echo "Keycloak $KEYCLOAK_VERSION unpacked in $DIST"
}

pid_alive() {
    [[ -f "$STATE/keycloak.pid" ]] && kill -0 "$(cat "$STATE/keycloak.pid")" 2>/dev/null
}

client_secret() {
    if [[ -n "${SELLER_CONNECTOR_KEYCLOAK_CLIENT_SECRET:-}" ]]; then
        echo "$SELLER_CONNECTOR_KEYCLOAK_CLIENT_SECRET"
        return
    fi
    local file="$STATE/seller-connector.secret"
    if [[ ! -s "$file" ]]; then
        mkdir -p "$STATE"
        (umask 077 && head -c 32 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' >"$file")
    fi
    cat "$file"
}

install_providers() {
    # Jars of Keycloak extensions (another engineer's plugin) go into providers/ before start.
    local dir jar
    for dir in "$HERE/providers" "${KEYCLOAK_PROVIDERS:-}"; do
        [[ -n "$dir" && -d "$dir" ]] || continue
        for jar in "$dir"/*.jar; do
            [[ -f "$jar" ]] || continue
            # -p keeps the jar's time: a newer copy would make Quarkus rebuild at every start.
            cp -fp "$jar" "$DIST/providers/"
            echo "Installed provider $(basename "$jar")"
        done
    done
}

cmd_build_plugin() {
    command -v mvn >/dev/null || die "mvn (Maven) is needed to build the plugin"
    local java_home="${PLUGIN_JAVA_HOME:-${JAVA_HOME:-}}"
    (
        cd "$PLUGIN_DIR"
        if [[ -n "$java_home" ]]; then
            export JAVA_HOME="$java_home"
        fi
        mvn -q -B package
    ) || die "building the plugin failed (in $PLUGIN_DIR)"
    mkdir -p "$HERE/providers"
    cp -f "$PLUGIN_DIR/target/$PLUGIN_JAR_NAME" "$HERE/providers/$PLUGIN_JAR_NAME"
    echo "Built $HERE/providers/$PLUGIN_JAR_NAME"
}

warn_without_plugin() {
    # realm-sellers.json names the plugin's event listener, claim mapper and the user profile
    # validator of its guard: without the jar, Keycloak logs an error per event, tokens lack the
    # seller claim, and the realm's user profile names a validator Keycloak does not have.
    local dir
    for dir in "$HERE/providers" "${KEYCLOAK_PROVIDERS:-}"; do
        [[ -n "$dir" && -f "$dir/$PLUGIN_JAR_NAME" ]] && return 0
    done
    echo "WARNING: $PLUGIN_JAR_NAME is not in providers/: run '$0 build-plugin' first" >&2
}

cmd_start() {
    local db="dev-file" wait_after=0 timeout=180
    while [[ $# -gt 0 ]]; do
        case "$1" in
            --db) db="$2"; shift 2 ;;
            --db=*) db="${1#--db=}"; shift ;;
            --wait) wait_after=1; shift ;;
            --timeout) timeout="$2"; shift 2 ;;
            *) die "start: unknown option $1" ;;
        esac
    done
    [[ "$db" == dev-mem || "$db" == dev-file ]] || die "--db must be dev-mem or dev-file"
    [[ -x "$DIST/bin/kc.sh" ]] || die "Keycloak is not fetched: run '$0 fetch' first"
    [[ -f "$REALM_FILE" ]] || die "missing $REALM_FILE"
    if pid_alive; then
        die "Keycloak already runs (pid $(cat "$STATE/keycloak.pid")); '$0 stop' first"
    fi
    local java_home
    java_home="$(find_java_home)"
    mkdir -p "$STATE"
    warn_without_plugin
    install_providers

    # Keycloak 26 substitutes ${VAR} placeholders from its environment when it imports at
    # start (checked with 26.7.3): the realm file is copied verbatim and the client secret
    # reaches Keycloak only through its environment, never through a file in data/import.
    local import_dir="$DIST/data/import"
    rm -rf "$import_dir"
    mkdir -p "$import_dir"
    cp "$REALM_FILE" "$import_dir/realm-sellers.json"
    local secret
    secret="$(client_secret)"

    local admin_user="${KC_BOOTSTRAP_ADMIN_USERNAME:-admin}"
    local admin_password="${KC_BOOTSTRAP_ADMIN_PASSWORD:-admin}"
    if [[ -z "${KC_BOOTSTRAP_ADMIN_PASSWORD:-}" ]]; then
        echo "WARNING: master admin is admin/admin: for local development only" >&2
    fi
    echo "Starting Keycloak $KEYCLOAK_VERSION (db $db) on http://127.0.0.1:$PORT, management $MGMT_PORT"
    echo "Log: $STATE/keycloak.log"
    # setsid: Keycloak gets its own process group so stop can end the JVM and its launcher.
    (
        export JAVA_HOME="$java_home"
        export PATH="$java_home/bin:$PATH"
        export KC_BOOTSTRAP_ADMIN_USERNAME="$admin_user"
        export KC_BOOTSTRAP_ADMIN_PASSWORD="$admin_password"
        # Memory: keep the JVM modest on a 2-core, shared machine.
        export JAVA_OPTS_KC_HEAP="${JAVA_OPTS_KC_HEAP:--Xms256m -Xmx1024m}"
        export SELLER_CONNECTOR_KEYCLOAK_CLIENT_SECRET="$secret"
        exec setsid "$DIST/bin/kc.sh" start-dev \
            --http-port "$PORT" --http-host 127.0.0.1 \
            --http-management-port "$MGMT_PORT" --http-management-host 127.0.0.1 \
            --health-enabled=true --import-realm --db "$db" \
            >"$STATE/keycloak.log" 2>&1 </dev/null
    ) &
    echo $! >"$STATE/keycloak.pid"
    echo "$PORT $MGMT_PORT" >"$STATE/keycloak.ports"
    if [[ "$wait_after" == 1 ]]; then
        cmd_wait --timeout "$timeout"
    fi
}

read_ports() {
    # A running Keycloak's ports win over the environment's defaults.
    if [[ -z "${KEYCLOAK_MANAGEMENT_PORT:-}" && -f "$STATE/keycloak.ports" ]]; then
        read -r PORT MGMT_PORT <"$STATE/keycloak.ports"
    fi
}

cmd_wait() {
    local timeout=180
    while [[ $# -gt 0 ]]; do
        case "$1" in
            --timeout) timeout="$2"; shift 2 ;;
            *) die "wait: unknown option $1" ;;
        esac
    done
    read_ports
    local url="http://127.0.0.1:$MGMT_PORT/health/ready" start=$SECONDS
    while ((SECONDS - start < timeout)); do
        if curl -fsS -o /dev/null --max-time 2 "$url" 2>/dev/null; then
            echo "Keycloak ready after $((SECONDS - start)) s: http://127.0.0.1:$PORT"
            return 0
        fi
        if [[ -f "$STATE/keycloak.pid" ]] && ! pid_alive; then
            tail -n 30 "$STATE/keycloak.log" >&2 || true
            die "Keycloak exited before it was ready (log: $STATE/keycloak.log)"
        fi
        sleep 1
    done
    die "Keycloak not ready after $timeout s (log: $STATE/keycloak.log)"
}

cmd_stop() {
    local timeout=30
    while [[ $# -gt 0 ]]; do
        case "$1" in
            --timeout) timeout="$2"; shift 2 ;;
            *) die "stop: unknown option $1" ;;
        esac
    done
    if ! pid_alive; then
        echo "Keycloak is not running"
        rm -f "$STATE/keycloak.pid"
        return 0
    fi
    local pid
    pid="$(cat "$STATE/keycloak.pid")"
    # The pid is the session leader (setsid): signal its whole process group.
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    local start=$SECONDS
    while kill -0 "$pid" 2>/dev/null && ((SECONDS - start < timeout)); do
        sleep 0.5
    done
    if kill -0 "$pid" 2>/dev/null; then
        echo "Keycloak did not stop within $timeout s: killing it" >&2
        kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$STATE/keycloak.pid" "$STATE/keycloak.ports"
    echo "Keycloak stopped"
}

cmd_status() {
    read_ports
    if pid_alive; then
        local ready="not ready"
        if curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$MGMT_PORT/health/ready" 2>/dev/null; then
            ready="ready"
        fi
        echo "Keycloak runs (pid $(cat "$STATE/keycloak.pid")), $ready: http://127.0.0.1:$PORT (management $MGMT_PORT)"
    else
        echo "Keycloak is not running"
        return 3
    fi
}

main() {
    [[ $# -gt 0 ]] || {
        usage
        exit 2
    }
    local command="$1"
    shift
    case "$command" in
        fetch) cmd_fetch "$@" ;;
        start) cmd_start "$@" ;;
        stop) cmd_stop "$@" ;;
        wait) cmd_wait "$@" ;;
        status) cmd_status "$@" ;;
        secret) client_secret ;;
        build-plugin) cmd_build_plugin "$@" ;;
        -h | --help | help) usage ;;
        *)
            usage >&2
            exit 2
            ;;
    esac
}

main "$@"
