"""The dev/test PostgreSQL cluster script, against a real server.

The main cluster (``.local/postgres``) is left running: other test modules use it. Stop,
restart and failure are exercised on a second cluster in its own folder and port.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlsplit

import psycopg
import pytest

from infra.services import POSTGRES_SCRIPT, ensure_postgres, run_postgres_script
from infra.settings import PROJECT_ROOT, Settings, get_settings

pytestmark = pytest.mark.postgres


def _server_pid(directory: Path) -> int:
    return int((directory / "data" / "postmaster.pid").read_text().splitlines()[0])


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_start_is_idempotent_and_status_reports_up() -> None:
    url = ensure_postgres()
    main_dir = PROJECT_ROOT / ".local" / "postgres"
    pid = _server_pid(main_dir)

    again = run_postgres_script("start")
    assert again.returncode == 0, again.stderr
    assert ensure_postgres() == url
    assert _server_pid(main_dir) == pid  # the running server was left alone

    status = run_postgres_script("status")
    assert status.returncode == 0
    assert "up" in status.stdout


def test_a_real_connection_runs_select_1_as_the_configured_role() -> None:
    settings = get_settings()
    with psycopg.connect(ensure_postgres(), connect_timeout=10) as conn:
        row = conn.execute("select 1, current_user, current_database()").fetchone()
        fsync = conn.execute("show fsync").fetchone()
        listen = conn.execute("show listen_addresses").fetchone()
    assert row == (1, settings.postgres_user, settings.postgres_db)
    assert fsync == ("off",)  # the throwaway cluster trades durability for speed
    assert listen == (settings.postgres_host,)


def test_url_names_every_setting() -> None:
    settings = get_settings()
    parts = urlsplit(ensure_postgres())
    assert parts.scheme == "postgresql"
    assert (parts.hostname, parts.port) == (settings.postgres_host, settings.postgres_port)
    assert (parts.username, parts.password) == (settings.postgres_user, settings.postgres_password)
    assert parts.path == f"/{settings.postgres_db}"


def test_url_percent_encodes_awkward_credentials(tmp_path: Path) -> None:
    awkward = Settings(postgres_user="trader@desk", postgres_password="p:ss/w rd%", postgres_db="x")
    printed = run_postgres_script("url", awkward, directory=tmp_path)
    assert printed.returncode == 0
    parts = urlsplit(printed.stdout.strip())
    assert parts.username is not None and parts.password is not None
    assert unquote(parts.username) == "trader@desk"
    assert unquote(parts.password) == "p:ss/w rd%"
    assert parts.port == awkward.postgres_port


def test_unknown_action_prints_usage() -> None:
    result = subprocess.run(
        ["bash", str(POSTGRES_SCRIPT), "restart-everything"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert "usage" in result.stderr


@pytest.fixture
def second_cluster() -> Iterator[Path]:
    """A folder for an independent cluster; the postgres OS user must be able to reach
    it, so it lives under the project's .local/ (pytest's tmp dirs are private)."""
    directory = PROJECT_ROOT / ".local" / f"postgres-test-{uuid.uuid4().hex[:8]}"
    yield directory
    run_postgres_script("stop", Settings(), directory=directory)  # port does not matter
    shutil.rmtree(directory, ignore_errors=True)


def test_second_cluster_stop_start_keeps_data_and_reports_failures(
    second_cluster: Path,
) -> None:
    ensure_postgres()  # the main cluster holds the default port
    taken = Settings(postgres_db="second")
    with pytest.raises(RuntimeError, match=r"(?s)start failed.*(already in use|could not)"):
        ensure_postgres(taken, directory=second_cluster)

    settings = Settings(postgres_port=_free_port(), postgres_db="second")
    url = ensure_postgres(settings, directory=second_cluster)
    assert f":{settings.postgres_port}/second" in url
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("create table kept (n int)")
        conn.execute("insert into kept values (42)")

    stopped = run_postgres_script("stop", settings, directory=second_cluster)
    assert stopped.returncode == 0, stopped.stderr
    assert run_postgres_script("status", settings, directory=second_cluster).returncode == 3
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(url, connect_timeout=3)
    again = run_postgres_script("stop", settings, directory=second_cluster)
    assert again.returncode == 0  # stopping a stopped cluster is a no-op

    assert ensure_postgres(settings, directory=second_cluster) == url
    assert run_postgres_script("status", settings, directory=second_cluster).returncode == 0
    with psycopg.connect(url) as conn:
        assert conn.execute("select n from kept").fetchall() == [(42,)]

    # The main cluster was never touched.
    assert run_postgres_script("status").returncode == 0
