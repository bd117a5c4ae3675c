"""Local services for development and tests: the throwaway PostgreSQL cluster.

Tests and the dev CLI call :func:`ensure_postgres` instead of assuming a server exists, so
a fresh checkout runs its PostgreSQL tests with nothing but ``apt`` available: the script
``infra/postgres.sh`` installs, initialises and starts the cluster, idempotently. Values
come from :class:`infra.settings.Settings` (the one reader of ``TRADECORE_*``) and are
handed to the script as environment variables, so the Python side and the shell side can
never disagree about the port or the password.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Final, Literal

from infra.settings import PROJECT_ROOT, Settings, get_settings

POSTGRES_SCRIPT: Final[Path] = Path(__file__).with_name("postgres.sh")

PostgresAction = Literal["start", "stop", "status", "url"]


def postgres_script_env(settings: Settings, directory: Path | None = None) -> dict[str, str]:
    """The cluster settings as the script's ``TRADECORE_POSTGRES_*`` variables.

    ``directory`` overrides the cluster folder (default ``<project>/.local/postgres``),
    for a second, independent cluster.
    """
    return {
        "TRADECORE_POSTGRES_HOST": settings.postgres_host,
        "TRADECORE_POSTGRES_PORT": str(settings.postgres_port),
        "TRADECORE_POSTGRES_USER": settings.postgres_user,
        "TRADECORE_POSTGRES_PASSWORD": settings.postgres_password,
        "TRADECORE_POSTGRES_DB": settings.postgres_db,
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
