#!/usr/bin/env bash
# A throwaway PostgreSQL 15 cluster for development and tests.
#
#   bash infra/postgres.sh start    # install if needed, initdb once, start, ensure role+db
#                                   # (+ build/load/create the TimescaleDB extension)
#   bash infra/postgres.sh stop     # fast shutdown (no-op when stopped)
#   bash infra/postgres.sh status   # exit 0 when up, 3 when down; says if timescaledb loaded
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
#   TRADECORE_TIMESCALEDB        load TimescaleDB          (true; false = plain PostgreSQL)
#   TRADECORE_DEBIAN_MIRROR      Debian mirror for the TimescaleDB source
#                                (default: the first Debian mirror in the apt sources)
#
# Run as root (containers, CI) it installs postgresql-15 with apt when missing and runs
# the server as the `postgres` OS user; run as an ordinary user it runs the server as
# that user and expects the binaries to be installed.
#
# TimescaleDB: Debian 12 has no binary package of it for PostgreSQL 15, so the first
# start as root builds the Apache-2-licensed edition (hypertables, time_bucket, chunks,
# drop_chunks; no compression or continuous aggregates) from Debian trixie's source
# package and installs it into the server's lib and extension folders, once per machine
# (.local/timescaledb-build/build.log has the output). The source index is fetched into
# a private apt state under that folder, so the machine's own apt sources and lists are
# left untouched. Not root and not installed: a warning, and plain PostgreSQL.
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
# The extension is installed machine-wide, so its build folder does not follow PG_DIR.
TSDB_BUILD_ROOT="$PROJECT_ROOT/.local/timescaledb-build"
TSDB_LOG="$TSDB_BUILD_ROOT/build.log"
TSDB_SUITE=trixie

die() {
    echo "postgres.sh: $*" >&2
    exit 1
}

# Same spellings pydantic accepts for the `timescaledb` setting.
case "${TRADECORE_TIMESCALEDB:-true}" in
    1 | [Tt] | [Tt][Rr][Uu][Ee] | [Yy] | [Yy][Ee][Ss] | [Oo][Nn]) TSDB_WANTED=1 ;;
    0 | [Ff] | [Ff][Aa][Ll][Ss][Ee] | [Nn] | [Nn][Oo] | [Oo][Ff][Ff]) TSDB_WANTED=0 ;;
    *) die "TRADECORE_TIMESCALEDB must be a boolean (true/false, 1/0, yes/no, on/off);" \
        "got '$TRADECORE_TIMESCALEDB'" ;;
esac
# Set by cmd_start once the extension is known to be installed: write_config preloads it.
TSDB_LOAD=0

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
    if ((TSDB_LOAD)); then
        as_server tee -a "$PGDATA/tradecore.conf" >/dev/null <<EOF
# TimescaleDB: its loader must be preloaded; never phone home from a dev/test cluster.
shared_preload_libraries = 'timescaledb'
timescaledb.telemetry_level = off
EOF
    fi
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

# ---------------------------------------------------------------------------------------
# TimescaleDB
# ---------------------------------------------------------------------------------------

pg_config_path() {
    if [[ -x "$BINDIR/pg_config" ]]; then
        echo "$BINDIR/pg_config"
    else
        command -v pg_config || die "pg_config not found (install postgresql-client-$PG_MAJOR)"
    fi
}

# Installed = the control file, the loader library and the versioned library it names.
timescaledb_installed() {
    local pg_config pkglibdir control version
    pg_config="$(pg_config_path)"
    pkglibdir="$("$pg_config" --pkglibdir)"
    control="$("$pg_config" --sharedir)/extension/timescaledb.control"
    [[ -f "$control" && -f "$pkglibdir/timescaledb.so" ]] || return 1
    version="$(sed -n "s/^default_version *= *'\([^']*\)'.*/\1/p" "$control")"
    [[ -n "$version" && -f "$pkglibdir/timescaledb-$version.so" ]]
}

# The first http(s)/ftp Debian mirror in the machine's apt sources (one-line *.list and
# deb822 *.sources), preferring one that serves this release's codename, never a
# security or backports archive: the repository names no mirror of its own.
debian_mirror() {
    local codename="" files=()
    if [[ -r /etc/os-release ]]; then
        codename="$(. /etc/os-release && echo "${VERSION_CODENAME:-}")"
    fi
    [[ -f /etc/apt/sources.list ]] && files+=(/etc/apt/sources.list)
    shopt -s nullglob
    files+=(/etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources)
    shopt -u nullglob
    ((${#files[@]})) || return 1
    awk -v codename="$codename" '
        function consider(uris, suites,    nu, ns, u, s, i, j, score) {
            nu = split(uris, u, /[ \t]+/)
            ns = split(suites, s, /[ \t]+/)
            for (i = 1; i <= nu; i++) {
                if (u[i] !~ /^(https?|ftp):\/\// || u[i] ~ /security/) continue
                sub(/\/+$/, "", u[i])
                for (j = 1; j <= ns; j++) {
                    if (s[j] == "" || s[j] ~ /security|backports/) continue
                    score = (s[j] == codename) ? 2 : 1
                    print score, ++order, u[i]
                }
            }
        }
        function flush() {
            if (stanza && enabled && types ~ /(^|[ \t])deb(-src)?([ \t]|$)/) consider(uris, suites)
            stanza = 0; enabled = 1; types = ""; uris = ""; suites = ""
        }
        FNR == 1 { flush(); deb822 = (FILENAME ~ /\.sources$/) }
        /^[ \t]*#/ { next }
        deb822 && /^[ \t]*$/ { flush(); next }
        deb822 {
            field = tolower($1); value = $0
            sub(/^[^:]*:[ \t]*/, "", value)
            if (field == "types:") { types = value; stanza = 1 }
            else if (field == "uris:") { uris = value; stanza = 1 }
            else if (field == "suites:") { suites = value; stanza = 1 }
            else if (field == "enabled:" && tolower(value) == "no") enabled = 0
            next
        }
        $1 == "deb" || $1 == "deb-src" {
            line = $0
            sub(/#.*/, "", line)
            gsub(/\[[^]]*\]/, "", line)
            split(line, f, /[ \t]+/)
            # f[1] is empty when the line was indented.
            off = (f[1] == "") ? 1 : 0
            consider(f[2 + off], f[3 + off])
        }
        END { flush() }
    ' "${files[@]}" | sort -k1,1nr -k2,2n | awk 'NR == 1 { print $3 }' | grep .
}

tsdb_build_failed() {
    die "TimescaleDB build failed while $1. Last lines of $TSDB_LOG:
$(tail -n 40 "$TSDB_LOG" 2>/dev/null)
(Set TRADECORE_TIMESCALEDB=false to run plain PostgreSQL meanwhile.)"
}

# apt-get install what is missing; on a machine whose package lists were never fetched
# (or are stale, so downloads 404) update once and retry.
apt_install_missing() {
    local missing=() pkg
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' ||
            missing+=("$pkg")
    done
    ((${#missing[@]})) || return 0
    echo "postgres.sh: installing build dependencies: ${missing[*]}" >&2
    local apt=(apt-get -y -q --no-install-recommends -o DPkg::Lock::Timeout=300)
    export DEBIAN_FRONTEND=noninteractive
    # 8>&- 9>&-: a daemon a package's post-install starts must not inherit our locks.
    "${apt[@]}" install "${missing[@]}" >>"$TSDB_LOG" 2>&1 8>&- 9>&- || {
        apt-get -q -o DPkg::Lock::Timeout=300 update >>"$TSDB_LOG" 2>&1 8>&- 9>&- &&
            "${apt[@]}" install "${missing[@]}" >>"$TSDB_LOG" 2>&1 8>&- 9>&-
    }
}

# Download and unpack Debian trixie's `timescaledb` source package into $1, through a
# private apt state (its own sources file, lists and caches) so nothing under /etc/apt or
# /var/lib/apt changes and later system `apt-get update`s do not fetch trixie indexes.
fetch_timescaledb_source() {
    local destination="$1" mirror apt_dir
    mirror="${TRADECORE_DEBIAN_MIRROR:-}"
    if [[ -z "$mirror" ]]; then
        mirror="$(debian_mirror)" || die "no Debian mirror found in /etc/apt/sources.list" \
            "or /etc/apt/sources.list.d/; set TRADECORE_DEBIAN_MIRROR=<mirror URL>/debian"
    fi
    apt_dir="$TSDB_BUILD_ROOT/apt"
    mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial"
    {
        echo "Types: deb-src"
        echo "URIs: $mirror"
        echo "Suites: $TSDB_SUITE"
        echo "Components: main"
        if [[ -f /usr/share/keyrings/debian-archive-keyring.gpg ]]; then
            echo "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg"
        fi
    } >"$apt_dir/timescaledb-src.sources"
    local private=(
        -o "Dir::Etc::SourceList=$apt_dir/timescaledb-src.sources"
        -o "Dir::Etc::SourceParts=-"
        -o "Dir::State::Lists=$apt_dir/lists"
        -o "Dir::Cache=$apt_dir/cache"
    )
    echo "== apt-get update ($mirror $TSDB_SUITE, deb-src only; +$((SECONDS - started)) s)" \
        >>"$TSDB_LOG"
    apt-get -q "${private[@]}" update >>"$TSDB_LOG" 2>&1 ||
        tsdb_build_failed "fetching the $TSDB_SUITE source index from $mirror"
    rm -rf "$destination"
    mkdir -p "$destination"
    echo "== apt-get source timescaledb/$TSDB_SUITE (+$((SECONDS - started)) s)" >>"$TSDB_LOG"
    (cd "$destination" && apt-get -q "${private[@]}" source "timescaledb/$TSDB_SUITE") \
        >>"$TSDB_LOG" 2>&1 || tsdb_build_failed "downloading/unpacking the source package"
}

# Build and install the extension once per machine (root only). Serialised by its own
# lock: clusters in other folders may start at the same moment.
install_timescaledb() {
    mkdir -p "$TSDB_BUILD_ROOT"
    exec 8>"$TSDB_BUILD_ROOT/.lock"
    if command -v flock >/dev/null 2>&1; then
        flock -w 900 8 || die "timed out waiting for $TSDB_BUILD_ROOT/.lock"
    fi
    if timescaledb_installed; then # another process built it while we waited
        exec 8>&-
        return 0
    fi
    local started=$SECONDS pg_config srcdir
    : >"$TSDB_LOG"
    echo "postgres.sh: building TimescaleDB (Apache-2 edition) from Debian $TSDB_SUITE" \
        "source; log in $TSDB_LOG" >&2
    apt_install_missing cmake make gcc libc6-dev dpkg-dev xz-utils libssl-dev \
        "postgresql-server-dev-$PG_MAJOR" ||
        tsdb_build_failed "installing build dependencies with apt-get"
    pg_config="$(pg_config_path)"
    fetch_timescaledb_source "$TSDB_BUILD_ROOT/src"
    srcdir="$(find "$TSDB_BUILD_ROOT/src" -mindepth 1 -maxdepth 1 -type d -name 'timescaledb-*' |
        head -n 1)"
    [[ -n "$srcdir" && -x "$srcdir/bootstrap" ]] ||
        tsdb_build_failed "looking for the unpacked source (no timescaledb-*/bootstrap)"
    # Options as in the source's CMakeLists.txt; the Debian source is repacked without the
    # TSL-licensed code, hence APACHE_ONLY. Tests and telemetry-by-default off.
    echo "== bootstrap (cmake) (+$((SECONDS - started)) s)" >>"$TSDB_LOG"
    (cd "$srcdir" && BUILD_DIR=build BUILD_FORCE_REMOVE=true ./bootstrap \
        -DCMAKE_BUILD_TYPE=Release -DAPACHE_ONLY=ON -DREGRESS_CHECKS=OFF -DTAP_CHECKS=OFF \
        -DWARNINGS_AS_ERRORS=OFF -DSEND_TELEMETRY_DEFAULT=OFF -DPG_CONFIG="$pg_config") \
        >>"$TSDB_LOG" 2>&1 || tsdb_build_failed "configuring with cmake (./bootstrap)"
    echo "== make (+$((SECONDS - started)) s)" >>"$TSDB_LOG"
    make -C "$srcdir/build" -j "$(nproc 2>/dev/null || echo 2)" >>"$TSDB_LOG" 2>&1 ||
        tsdb_build_failed "compiling"
    echo "== make install (+$((SECONDS - started)) s)" >>"$TSDB_LOG"
    make -C "$srcdir/build" install >>"$TSDB_LOG" 2>&1 || tsdb_build_failed "installing"
    timescaledb_installed || tsdb_build_failed "checking the installed files"
    echo "== installed (+$((SECONDS - started)) s)" >>"$TSDB_LOG"
    echo "postgres.sh: TimescaleDB installed in $((SECONDS - started)) s" >&2
    exec 8>&-
}

# 0 when the extension is (now) installed; 1 with a warning when it cannot be.
ensure_timescaledb_installed() {
    timescaledb_installed && return 0
    if [[ "$(id -u)" != 0 ]]; then
        echo "postgres.sh: warning: TimescaleDB is not installed and building it needs root;" \
            "running plain PostgreSQL (TRADECORE_TIMESCALEDB=false silences this)" >&2
        return 1
    fi
    install_timescaledb
}

timescaledb_preloaded() {
    local libraries
    libraries="$(psql_admin -At -c 'SHOW shared_preload_libraries')" || return 1
    [[ ",${libraries// /}," == *,timescaledb,* ]]
}

# CREATE EXTENSION needs a superuser (timescaledb is not a trusted extension); the app
# role then owns its own hypertables. After a rebuild with a newer version, ALTER
# EXTENSION ... UPDATE must be the first statement of its session, hence PGOPTIONS
# rather than a SET for quieting the NOTICE banner.
ensure_timescaledb_extension() {
    local versions quiet=(env PGOPTIONS="-c client_min_messages=warning")
    versions="$(as_server "${quiet[@]}" "$BINDIR/psql" -X -q -At -v ON_ERROR_STOP=1 \
        -h "$PGDATA" -p "$PG_PORT" -U "$SERVER_USER" -d "$PG_DB" -c \
        "SELECT default_version || ' ' || coalesce(installed_version, '-')
         FROM pg_available_extensions WHERE name = 'timescaledb'")" || return 1
    case "$versions" in
        "") return 1 ;;
        # The Apache edition ships a job-history retention job whose procedure is
        # TSL-only, so it fails and logs an ERROR on every retry; unschedule it (alter_job
        # is TSL-only too, hence the catalog update).
        *" -") local sql="CREATE EXTENSION IF NOT EXISTS timescaledb;
            UPDATE _timescaledb_config.bgw_job SET scheduled = false
            WHERE proc_name = 'policy_job_stat_history_retention'" ;;
        "${versions%% *} ${versions%% *}") return 0 ;;
        *) local sql="ALTER EXTENSION timescaledb UPDATE" ;;
    esac
    as_server "${quiet[@]}" "$BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -h "$PGDATA" \
        -p "$PG_PORT" -U "$SERVER_USER" -d "$PG_DB" -c "$sql" >/dev/null
}

cmd_start() {
    take_lock
    require_bindir
    init_cluster
    if ((TSDB_WANTED)) && ensure_timescaledb_installed; then
        TSDB_LOAD=1
    fi
    if ! is_running; then
        write_config
        # 9>&-: the server must not inherit the lock, or it would hold it until it stops.
        as_server "$BINDIR/pg_ctl" start -D "$PGDATA" -l "$LOGFILE" -w -t 60 \
            >/dev/null 2>&1 9>&- ||
            die "server did not start; last log lines:
$(tail -n 20 "$LOGFILE" 2>/dev/null)"
    elif ((TSDB_LOAD)) && ! timescaledb_preloaded; then
        # Started before the extension was installed (or with it switched off): a
        # preloaded library only loads at server start.
        echo "postgres.sh: restarting the server to load timescaledb" >&2
        write_config
        as_server "$BINDIR/pg_ctl" restart -D "$PGDATA" -l "$LOGFILE" -m fast -w -t 60 \
            >/dev/null 2>&1 9>&- ||
            die "server did not restart; last log lines:
$(tail -n 20 "$LOGFILE" 2>/dev/null)"
    fi
    ensure_role_and_database || die "could not create role/database; see $LOGFILE"
    local extension=""
    if ((TSDB_LOAD)); then
        ensure_timescaledb_extension ||
            die "could not create the timescaledb extension in database $PG_DB; see $LOGFILE"
        extension=", timescaledb"
    fi
    echo "postgres.sh: up at $PG_HOST:$PG_PORT (data $PGDATA$extension)" >&2
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
        local extension="timescaledb not loaded" version
        if PGCONNECT_TIMEOUT=5 timescaledb_preloaded 2>/dev/null; then
            version="$(PGCONNECT_TIMEOUT=5 as_server "$BINDIR/psql" -X -q -At -h "$PGDATA" \
                -p "$PG_PORT" -U "$SERVER_USER" -d "$PG_DB" -c \
                "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'" \
                2>/dev/null)" || version=""
            extension="timescaledb loaded (extension ${version:-not created} in $PG_DB)"
        fi
        echo "up at $PG_HOST:$PG_PORT (data $PGDATA), $extension"
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
