#!/usr/bin/env bash
# A throwaway PostgreSQL 15 cluster for development and tests.
#
#   bash infra/postgres.sh start    # install if needed, initdb once, start, ensure role+db
#   bash infra/postgres.sh stop     # fast shutdown (no-op when stopped)
#   bash infra/postgres.sh status   # exit 0 when up, 3 when down
#   bash infra/postgres.sh url      # print postgresql://user:password@host:port/db
#
# Why a private cluster instead of the distro's service: tests need a server they can
# start without systemd, on a fixed port, with a known password, that survives between
# test runs and can be thrown away with `rm -rf .local/postgres`.
#
# THIS CLUSTER IS FOR DEV/TESTS ONLY: fsync, synchronous_commit and full_page_writes are
# off for speed, so a machine crash can lose or corrupt its data. It listens on the given
# host (127.0.0.1 by default) only, with its unix socket inside the data folder.
#
# Environment (all optional):
#   TRADECORE_POSTGRES_HOST      listen address            (127.0.0.1)
#   TRADECORE_POSTGRES_PORT      port                      (54329)
#   TRADECORE_POSTGRES_USER      role the app connects as  (tradecore)
#   TRADECORE_POSTGRES_PASSWORD  its password              (tradecore)
#   TRADECORE_POSTGRES_DB        database, owned by it     (tradecore)
#   TRADECORE_POSTGRES_DIR       cluster folder            (<project>/.local/postgres)
#
# Run as root (containers, CI) it installs postgresql-15 with apt when missing and runs
# the server as the `postgres` OS user; run as an ordinary user it runs the server as
# that user and expects the binaries to be installed.
set -euo pipefail

PROJECT_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PG_HOST="${TRADECORE_POSTGRES_HOST:-127.0.0.1}"
PG_PORT="${TRADECORE_POSTGRES_PORT:-54329}"
PG_USER="${TRADECORE_POSTGRES_USER:-tradecore}"
PG_PASSWORD="${TRADECORE_POSTGRES_PASSWORD:-tradecore}"
PG_DB="${TRADECORE_POSTGRES_DB:-tradecore}"
PG_DIR="${TRADECORE_POSTGRES_DIR:-$PROJECT_ROOT/.local/postgres}"
PG_MAJOR=15
PGDATA="$PG_DIR/data"
LOGFILE="$PGDATA/server.log"

die() {
    echo "postgres.sh: $*" >&2
    exit 1
}

if [[ "$(id -u)" == 0 ]]; then
    SERVER_USER=postgres
else
    SERVER_USER="$(id -un)"
fi

# Run a command as the server's OS user (initdb and postgres refuse to run as root).
as_server() {
    if [[ "$(id -u)" != 0 ]]; then
        "$@"
    elif command -v runuser >/dev/null 2>&1; then
        runuser -u postgres -- "$@"
    else
        su postgres -s /bin/bash -c "$(printf '%q ' "$@")"
    fi
}

find_bindir() {
    local candidate
    for candidate in "/usr/lib/postgresql/$PG_MAJOR/bin" /usr/lib/postgresql/*/bin; do
        if [[ -x "$candidate/initdb" && -x "$candidate/pg_ctl" ]]; then
            echo "$candidate"
            return 0
        fi
    done
    if command -v pg_config >/dev/null 2>&1; then
        candidate="$(pg_config --bindir)"
        if [[ -x "$candidate/initdb" && -x "$candidate/pg_ctl" ]]; then
            echo "$candidate"
            return 0
        fi
    fi
    return 1
}

install_server() {
    if [[ "$(id -u)" != 0 ]]; then
        die "PostgreSQL server binaries not found and not root: install postgresql-$PG_MAJOR"
    fi
    echo "postgres.sh: installing postgresql-$PG_MAJOR with apt-get" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >&2
    # The package's post-install creates a default cluster on port 5432; we never use it,
    # but do not start it either.
    if ! apt-get install -y -q "postgresql-$PG_MAJOR" >&2; then
        apt-get install -y -q postgresql >&2
    fi
    if command -v pg_ctlcluster >/dev/null 2>&1; then
        pg_lsclusters -h 2>/dev/null | while read -r version name _; do
            pg_ctlcluster "$version" "$name" stop >/dev/null 2>&1 || true
        done
    fi
}

BINDIR=""
require_bindir() {
    BINDIR="$(find_bindir)" || {
        install_server
        BINDIR="$(find_bindir)" || die "postgresql installed but initdb/pg_ctl not found"
    }
}

is_running() {
    [[ -f "$PGDATA/PG_VERSION" ]] || return 1
    as_server "$BINDIR/pg_ctl" status -D "$PGDATA" >/dev/null 2>&1
}

# Percent-encode for the URL's user, password and database parts.
urlencode() {
    local text="$1" out="" char i
    for ((i = 0; i < ${#text}; i++)); do
        char="${text:i:1}"
        case "$char" in
            [A-Za-z0-9._~-]) out+="$char" ;;
            *) out+="$(printf '%%%02X' "'$char")" ;;
        esac
    done
    printf '%s' "$out"
}

print_url() {
    local host="$PG_HOST"
    [[ "$host" == *:* ]] && host="[$host]"
    printf 'postgresql://%s:%s@%s:%s/%s\n' "$(urlencode "$PG_USER")" \
        "$(urlencode "$PG_PASSWORD")" "$host" "$PG_PORT" "$(urlencode "$PG_DB")"
}

# Serialise start/stop: test processes and developers may call this at the same time.
take_lock() {
    mkdir -p "$PG_DIR"
    exec 9>"$PG_DIR/.lock"
    if command -v flock >/dev/null 2>&1; then
        flock -w 300 9 || die "timed out waiting for $PG_DIR/.lock"
    fi
}

init_cluster() {
    [[ -f "$PGDATA/PG_VERSION" ]] && return 0
    if [[ "$(id -u)" == 0 ]]; then
        chown postgres: "$PG_DIR"
        as_server test -x "$PG_DIR" ||
            die "the postgres OS user cannot enter $PG_DIR (check its parents' permissions)"
    fi
    echo "postgres.sh: creating cluster in $PGDATA" >&2
    as_server "$BINDIR/initdb" -D "$PGDATA" -U "$SERVER_USER" --encoding=UTF8 --no-locale \
        --auth-local=trust --auth-host=scram-sha-256 >"$PG_DIR/initdb.log" 2>&1 ||
        die "initdb failed: $(tail -n 20 "$PG_DIR/initdb.log")"
    echo "include_if_exists = 'tradecore.conf'" | as_server tee -a "$PGDATA/postgresql.conf" \
        >/dev/null
}

# Rewritten on every start so a new host/port takes effect without a fresh initdb.
write_config() {
    as_server tee "$PGDATA/tradecore.conf" >/dev/null <<EOF
# Written by infra/postgres.sh on every start; edit the script, not this file.
listen_addresses = '$PG_HOST'
port = $PG_PORT
unix_socket_directories = '$PGDATA'
max_connections = 200
# Throwaway dev/test cluster: durability traded for speed.
fsync = off
synchronous_commit = off
full_page_writes = off
logging_collector = off
EOF
}

psql_admin() {
    as_server "$BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -h "$PGDATA" -p "$PG_PORT" \
        -U "$SERVER_USER" -d postgres "$@"
}

ensure_role_and_database() {
    psql_admin -v role="$PG_USER" -v password="$PG_PASSWORD" -v db="$PG_DB" <<'SQL' >/dev/null
SELECT format('CREATE ROLE %I LOGIN CREATEDB', :'role')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'role') \gexec
SELECT format('ALTER ROLE %I WITH LOGIN CREATEDB PASSWORD %L', :'role', :'password') \gexec
SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'role')
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db') \gexec
SQL
}

cmd_start() {
    take_lock
    require_bindir
    init_cluster
    if ! is_running; then
        write_config
        # 9>&-: the server must not inherit the lock, or it would hold it until it stops.
        as_server "$BINDIR/pg_ctl" start -D "$PGDATA" -l "$LOGFILE" -w -t 60 \
            >/dev/null 2>&1 9>&- ||
            die "server did not start; last log lines:
$(tail -n 20 "$LOGFILE" 2>/dev/null)"
    fi
    ensure_role_and_database || die "could not create role/database; see $LOGFILE"
    echo "postgres.sh: up at $PG_HOST:$PG_PORT (data $PGDATA)" >&2
}

cmd_stop() {
    take_lock
    require_bindir
    if is_running; then
        as_server "$BINDIR/pg_ctl" stop -D "$PGDATA" -m fast -w -t 60 >/dev/null ||
            die "server did not stop; see $LOGFILE"
        echo "postgres.sh: stopped" >&2
    fi
}

cmd_status() {
    BINDIR="$(find_bindir)" || {
        echo "down (not installed)"
        exit 3
    }
    if is_running && "$BINDIR/pg_isready" -q -h "$PG_HOST" -p "$PG_PORT" -t 5; then
        echo "up at $PG_HOST:$PG_PORT (data $PGDATA)"
        exit 0
    fi
    echo "down"
    exit 3
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    url) print_url ;;
    *)
        echo "usage: bash infra/postgres.sh start|stop|status|url" >&2
        exit 2
        ;;
esac
