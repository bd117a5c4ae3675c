"""The runtime of one ``tradecore worker`` process of the distributed deployment.

A worker is one :class:`Runnable` (the relay, the matching service, the saga, a
projector) run in the main thread until SIGTERM or SIGINT, with a small HTTP server
beside it for operators and orchestrators:

- ``GET /healthz``: 200 while the process lives (liveness);
- ``GET /readyz``: 200 when the runnable says it is ready, else 503, with its detail as
  JSON (the broker or the database unreachable and being retried, a partition waiting
  for its fence, ...): Kubernetes readiness, ``docker compose`` health checks;
- ``GET /metrics``: the process's Prometheus metrics.

SIGTERM (what ``docker stop`` and Kubernetes send) sets the stop event: the runnable
finishes the batch in hand, stores it, commits, and returns; the process exits 0. Before
it starts, :func:`check_reachable` tries the database and the broker the settings name,
so a worker pointed nowhere says which setting is wrong and exits 2 instead of retrying
forever in silence.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

from infra.settings import Settings

log = logging.getLogger("tradecore.worker")


class Healthy(Protocol):
    name: str

    def health(self) -> dict[str, Any]:
        """``{"ready": bool, ...detail}``; called from the health server's threads."""


class Runnable(Healthy, Protocol):
    def run(self, stop: threading.Event) -> None:
        """Work until ``stop`` is set; retry (with backoff, logged) what fails meanwhile."""


class Unreachable(RuntimeError):
    """A setting points at nothing that answers."""

    def __init__(self, setting: str, value: str, reason: str) -> None:
        super().__init__(f"{setting}={value!r}: {reason}")
        self.setting = setting


def check_reachable(settings: Settings, needs: Iterable[str] = ("postgres", "kafka"),
                    timeout_s: float = 5.0) -> None:
    """Raise :class:`Unreachable` naming the first setting whose service does not answer."""
    needs = set(needs)
    if "postgres" in needs:
        if settings.persistence != "postgres":
            raise Unreachable("TRADECORE_PERSISTENCE", settings.persistence,
                              "the distributed deployment needs 'postgres'")
        import psycopg

        from infra.eventstore import postgres_url

        try:
            psycopg.connect(postgres_url(settings), connect_timeout=max(1, int(timeout_s)),
                            autocommit=True).close()
        except psycopg.OperationalError as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else repr(err)
            raise Unreachable("TRADECORE_POSTGRES_HOST/PORT",
                              f"{settings.postgres_host}:{settings.postgres_port}",
                              f"cannot connect ({first})") from None
    if "kafka" in needs:
        from confluent_kafka import KafkaException
        from confluent_kafka.admin import AdminClient

        # log_level 0: librdkafka's own connection-refused lines would precede the one
        # line that says which setting is wrong
        client = AdminClient({"bootstrap.servers": settings.kafka_bootstrap,
                              "socket.connection.setup.timeout.ms": int(timeout_s * 1000),
                              "log_level": 0})
        try:
            client.list_topics(timeout=timeout_s)
        except KafkaException as err:
            raise Unreachable("TRADECORE_KAFKA_BOOTSTRAP", settings.kafka_bootstrap,
                              f"no broker answers ({err.args[0].str()})") from None


class _Health(BaseHTTPRequestHandler):
    runnable: Healthy

    def do_GET(self) -> None:
        path = self.path.partition("?")[0]
        if path == "/healthz":
            self._send(200, b'{"status":"alive"}', "application/json")
        elif path == "/readyz":
            try:
                health = self.runnable.health()
            except Exception as err:  # a broken health check is not ready
                health = {"ready": False, "error": repr(err)}
            body = json.dumps({"worker": self.runnable.name, **health}, default=str).encode()
            self._send(200 if health.get("ready") else 503, body, "application/json")
        elif path == "/metrics":
            from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

            self._send(200, generate_latest(), CONTENT_TYPE_LATEST)
        else:
            self._send(404, b'{"detail":"not found"}', "application/json")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # probes every few seconds
        pass


def health_server(runnable: Healthy, host: str, port: int) -> ThreadingHTTPServer:
    """Serve /healthz, /readyz and /metrics for ``runnable`` from a daemon thread;
    :class:`Unreachable` naming TRADECORE_WORKER_PORT when the port cannot be had."""
    handler = type("Health", (_Health,), {"runnable": runnable})
    try:
        server = ThreadingHTTPServer((host, port), handler)
    except OSError as err:  # another worker on this host has the port
        raise Unreachable("TRADECORE_WORKER_PORT", str(port),
                          f"cannot serve /readyz there ({err.strerror}); give each worker "
                          "on a host its own port, or 0 for a free one") from None
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="worker-health", daemon=True).start()
    return server


def run_worker(runnable: Runnable, settings: Settings, *, port: int | None = None) -> int:
    """Run ``runnable`` until SIGTERM/SIGINT, with its health server; the exit code."""
    stop = threading.Event()

    def stopping(signum: int, _frame: Any) -> None:
        log.info("%s: %s received, draining", runnable.name, signal.Signals(signum).name)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, stopping)
    port = settings.worker_port if port is None else port
    server = health_server(runnable, settings.worker_host, port)
    log.info("%s: /readyz and /metrics on http://%s:%d", runnable.name,
             *server.server_address[:2])
    try:
        runnable.run(stop)
    finally:
        server.shutdown()
    log.info("%s: stopped", runnable.name)
    return 0
