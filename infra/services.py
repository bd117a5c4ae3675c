"""Local services for development and tests: the throwaway PostgreSQL cluster.

Tests and the dev CLI call :func:`ensure_postgres` (or :func:`ensure_timescaledb` when
they need hypertables) instead of assuming a server exists, so a fresh checkout runs its
PostgreSQL tests with nothing but ``apt`` available: the script ``infra/postgres.sh``
installs, initialises and starts the cluster, builds the TimescaleDB extension once per
machine, idempotently. Values come from :class:`infra.settings.Settings` (the one reader
of ``TRADECORE_*``) and are handed to the script as environment variables, so the Python
side and the shell side can never disagree about the port or the password.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Final, Literal

import psycopg

from infra.settings import PROJECT_ROOT, Settings, as_environment, get_settings

POSTGRES_SCRIPT: Final[Path] = Path(__file__).with_name("postgres.sh")

PostgresAction = Literal["start", "stop", "status", "url"]


def postgres_script_env(settings: Settings, directory: Path | None = None) -> dict[str, str]:
    """The cluster settings as the script's ``TRADECORE_POSTGRES_*`` variables.

    ``directory`` overrides the cluster folder (default ``<project>/.local/postgres``),
    for a second, independent cluster.
    """
    return {
        **as_environment(settings, ("postgres_host", "postgres_port", "postgres_user",
                                    "postgres_password", "postgres_db", "timescaledb")),
        "TRADECORE_POSTGRES_DIR": str(directory or PROJECT_ROOT / ".local" / "postgres"),
    }


def run_postgres_script(
    action: PostgresAction,
    settings: Settings | None = None,
    directory: Path | None = None,
    timeout_s: float = 900.0,
) -> subprocess.CompletedProcess[str]:
    """Run ``bash infra/postgres.sh <action>`` and return its result (never raises on a
    non-zero exit: ``status`` exits 3 when the server is down, which is an answer)."""
    assignments = [
        f"{name}={value}"
        for name, value in postgres_script_env(settings or get_settings(), directory).items()
    ]
    # `env NAME=value ... bash script`: the child inherits this process's environment
    # (PATH, apt proxies) with the cluster settings on top, and Python never reads it.
    return subprocess.run(
        ["env", *assignments, "bash", str(POSTGRES_SCRIPT), action],
        capture_output=True,
        text=True,
        timeout=timeout_s,  # a first start may install the server with apt
        check=False,
    )


def ensure_postgres(settings: Settings | None = None, directory: Path | None = None) -> str:
    """Start the dev/test cluster if it is not running and return its postgresql:// URL.

    Raises ``RuntimeError`` carrying the script's output when it cannot be started, so a
    failing fixture says why (apt unreachable, port taken, ...) instead of a bare
    connection refused later on.
    """
    started = run_postgres_script("start", settings, directory)
    if started.returncode != 0:
        raise RuntimeError(
            f"infra/postgres.sh start failed with exit code {started.returncode}:\n"
            f"{started.stdout}{started.stderr}".rstrip()
        )
    url = run_postgres_script("url", settings, directory)
    if url.returncode != 0 or not url.stdout.strip():
        raise RuntimeError(f"infra/postgres.sh url failed:\n{url.stdout}{url.stderr}".rstrip())
    return url.stdout.strip()


def timescaledb_available(url: str) -> bool:
    """Whether the database at ``url`` can make hypertables: the extension is created in
    that database and its library works (it refuses to run unless preloaded).

    Asked as the connecting role, which may not read ``shared_preload_libraries``, so the
    library is probed by calling ``time_bucket``. Connection failures raise
    (``psycopg.OperationalError``) rather than answer ``False``: a server that is down
    must not be mistaken for plain PostgreSQL by a caller choosing between a hypertable
    and an ordinary table.
    """
    with psycopg.connect(url, connect_timeout=10, autocommit=True) as conn:
        created = conn.execute(
            "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'"
        ).fetchone()
        if created is None:
            return False
        try:
            conn.execute("SELECT time_bucket(interval '1 day', now())").fetchone()
        except psycopg.errors.DatabaseError:
            return False
    return True


def ensure_timescaledb(settings: Settings | None = None, directory: Path | None = None) -> str:
    """Start the dev/test cluster with the TimescaleDB extension and return its URL.

    The first call on a machine may build the extension (about a minute, as root). Raises
    ``RuntimeError`` naming the reason when the extension is switched off by
    ``TRADECORE_TIMESCALEDB`` or is still missing after start (not root, build failed), so
    a test that needs hypertables fails with the cause instead of "function
    create_hypertable does not exist".
    """
    settings = settings or get_settings()
    if not settings.timescaledb:
        raise RuntimeError(
            "TimescaleDB is switched off (TRADECORE_TIMESCALEDB=false); "
            "set it to true to build and load the extension"
        )
    url = ensure_postgres(settings, directory)
    if not timescaledb_available(url):
        status = run_postgres_script("status", settings, directory)
        raise RuntimeError(
            "the timescaledb extension is not available after infra/postgres.sh start "
            "(building it needs root; see .local/timescaledb-build/build.log):\n"
            f"{status.stdout}{status.stderr}".rstrip()
        )
    return url


KAFKA_SCRIPT: Final[Path] = Path(__file__).with_name("kafka.sh")


def ensure_kafka(port: int = 19092) -> str:
    """Start the dev/CI broker (``infra/kafka.sh``) on ``port`` unless it is up; its
    bootstrap address. Raises ``RuntimeError`` with the script's output when it cannot."""
    started = subprocess.run(
        ["env", f"TRADECORE_KAFKA_PORT={port}", "bash", str(KAFKA_SCRIPT), "start"],
        capture_output=True, text=True, timeout=60, check=False)
    if started.returncode != 0:
        raise RuntimeError(f"infra/kafka.sh start failed with exit code {started.returncode}:"
                           f"\n{started.stdout}{started.stderr}".rstrip())
    return f"127.0.0.1:{port}"
