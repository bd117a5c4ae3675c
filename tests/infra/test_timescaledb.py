"""The dev/test cluster's TimescaleDB extension, against the real server.

Read models are projected into hypertables and bucketed with ``time_bucket``; retention
drops whole chunks. These tests check exactly those features on the cluster that
``infra/postgres.sh start`` leaves behind, as the application role (not a superuser).
The switched-off path (plain PostgreSQL) runs on a second cluster in its own folder.
Budget: about 5 s once the extension is built (the first build on a machine takes longer).
"""

from __future__ import annotations

import shutil
import socket
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from infra.services import (
    ensure_postgres,
    ensure_timescaledb,
    run_postgres_script,
    timescaledb_available,
)
from infra.settings import PROJECT_ROOT, Settings, get_settings

pytestmark = pytest.mark.postgres

DAY_ONE = datetime(2024, 3, 4, tzinfo=UTC)  # a Monday; five sessions follow


@pytest.fixture(scope="module")
def url() -> str:
    if not get_settings().timescaledb:
        pytest.skip("TRADECORE_TIMESCALEDB=false: the cluster runs plain PostgreSQL")
    return ensure_timescaledb()


@pytest.fixture
def fills(url: str) -> Iterator[tuple[psycopg.Connection, sql.Composed]]:
    """A `fills` hypertable (one chunk per day) in a schema of its own, with 3 fills per
    session on five sessions, as the application role."""
    schema = sql.Identifier(f"t_{uuid.uuid4().hex[:12]}")
    table = sql.SQL("{}.fills").format(schema)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(schema))
        try:
            conn.execute(
                sql.SQL(
                    "CREATE TABLE {} (executed_at timestamptz NOT NULL, symbol text NOT NULL,"
                    " quantity bigint NOT NULL, price bigint NOT NULL)"
                ).format(table)
            )
            conn.execute(
                "SELECT create_hypertable(%s::regclass, 'executed_at',"
                " chunk_time_interval => interval '1 day')",
                (table.as_string(conn),),
            )
            rows = [
                (DAY_ONE + timedelta(days=day, hours=hour), "7203", 100 * (day + 1), 2500 + hour)
                for day in range(5)
                for hour in (0, 2, 5)
            ]
            with conn.cursor() as cur:
                cur.executemany(
                    sql.SQL(
                        "INSERT INTO {} (executed_at, symbol, quantity, price)"
                        " VALUES (%s, %s, %s, %s)"
                    ).format(table),
                    rows,
                )
            yield conn, table
        finally:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(schema))


def _chunk_count(conn: psycopg.Connection, table: sql.Composed) -> int:
    row = conn.execute(
        "SELECT count(*) FROM show_chunks(%s::regclass)", (table.as_string(conn),)
    ).fetchone()
    assert row is not None
    return int(row[0])


def test_the_app_role_gets_a_hypertable_with_a_chunk_per_day(
    url: str, fills: tuple[psycopg.Connection, sql.Composed]
) -> None:
    conn, table = fills
    assert timescaledb_available(url)
    who = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()
    assert who == (False,)  # not a superuser: what the application connects as
    listed = conn.execute(
        "SELECT hypertable_schema || '.' || hypertable_name, num_chunks"
        " FROM timescaledb_information.hypertables"
        " WHERE format('%%I.%%I', hypertable_schema, hypertable_name)::regclass"
        " = %s::regclass",
        (table.as_string(conn),),
    ).fetchall()
    assert len(listed) == 1
    assert listed[0][1] == 5
    assert _chunk_count(conn, table) == 5


def test_time_bucket_sums_volume_per_day_and_per_week(
    fills: tuple[psycopg.Connection, sql.Composed],
) -> None:
    conn, table = fills
    daily = conn.execute(
        sql.SQL(
            "SELECT time_bucket(interval '1 day', executed_at) AS day, sum(quantity), max(price)"
            " FROM {} GROUP BY day ORDER BY day"
        ).format(table)
    ).fetchall()
    assert daily == [
        (DAY_ONE + timedelta(days=day), 3 * 100 * (day + 1), 2505) for day in range(5)
    ]
    # Weekly buckets start on Monday (TimescaleDB's origin 2000-01-03), so the five
    # sessions Mon..Fri land in one bucket.
    weekly = conn.execute(
        sql.SQL(
            "SELECT time_bucket(interval '1 week', executed_at) AS week, count(*)"
            " FROM {} GROUP BY week"
        ).format(table)
    ).fetchall()
    assert weekly == [(DAY_ONE, 15)]


def test_drop_chunks_removes_sessions_older_than_the_cutoff(
    fills: tuple[psycopg.Connection, sql.Composed],
) -> None:
    conn, table = fills
    cutoff = DAY_ONE + timedelta(days=3)
    dropped = conn.execute(
        "SELECT drop_chunks(%s::regclass, older_than => %s)",
        (table.as_string(conn), cutoff),
    ).fetchall()
    assert len(dropped) == 3
    assert _chunk_count(conn, table) == 2
    left = conn.execute(
        sql.SQL("SELECT min(executed_at), count(*) FROM {}").format(table)
    ).fetchone()
    assert left == (cutoff, 6)


def test_a_second_start_leaves_the_running_server_alone(url: str) -> None:
    pid_file = PROJECT_ROOT / ".local" / "postgres" / "data" / "postmaster.pid"
    pid = pid_file.read_text().splitlines()[0]
    again = run_postgres_script("start")
    assert again.returncode == 0, again.stderr
    assert "restarting" not in again.stderr
    assert pid_file.read_text().splitlines()[0] == pid
    status = run_postgres_script("status")
    assert status.returncode == 0
    assert "timescaledb loaded" in status.stdout
    assert timescaledb_available(url)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def plain_cluster() -> Iterator[tuple[Settings, Path]]:
    """A second cluster with the extension switched off, under the project's .local/
    (the postgres OS user cannot enter pytest's private tmp dirs)."""
    directory = PROJECT_ROOT / ".local" / f"postgres-plain-{uuid.uuid4().hex[:8]}"
    settings = Settings(postgres_port=_free_port(), postgres_db="plain", timescaledb=False)
    yield settings, directory
    run_postgres_script("stop", settings, directory=directory)
    shutil.rmtree(directory, ignore_errors=True)


def test_switched_off_the_cluster_is_plain_postgresql(
    plain_cluster: tuple[Settings, Path],
) -> None:
    settings, directory = plain_cluster
    url = ensure_postgres(settings, directory=directory)
    assert not timescaledb_available(url)
    status = run_postgres_script("status", settings, directory=directory)
    assert status.returncode == 0
    assert "timescaledb not loaded" in status.stdout
    with pytest.raises(RuntimeError, match="TRADECORE_TIMESCALEDB=false"):
        ensure_timescaledb(settings, directory=directory)
