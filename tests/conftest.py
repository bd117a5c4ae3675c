"""Shared fixtures: backends for the write model, the bundled universe, data paths."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
from hypothesis import settings as hypothesis_settings

from aggregates.instruments import Universe, load_universe
from infra.eventstore import eventsourcing_env
from infra.settings import Settings, as_environment, get_settings

# `make test` (and so CI) runs the same examples every time, so a red run reproduces;
# plain `pytest` keeps exploring new ones, which is how edge cases get found.
hypothesis_settings.register_profile("ci", derandomize=True, print_blob=True)


def require_data(relative: str) -> Path:
    """Path of a shared data file; skip when absent, fail when TRADECORE_REQUIRE_DATA=1."""
    settings = get_settings()
    path = settings.data_dir / relative
    if not path.exists():
        message = f"shared data file {path} is absent"
        if settings.require_data:
            pytest.fail(message + " and TRADECORE_REQUIRE_DATA=1")
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def universe() -> Universe:
    return load_universe(None)


def postgres_env() -> dict[str, str]:
    """A fresh schema on the throwaway PostgreSQL (started on demand)."""
    import psycopg

    from infra.services import ensure_postgres

    url = ensure_postgres()
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    return eventsourcing_env(Settings(persistence="postgres"), schema=schema)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, str]]:
    """The same tests on the embedded SQLite file and on a real PostgreSQL."""
    if request.param == "sqlite":
        yield eventsourcing_env(Settings(persistence="sqlite",
                                         sqlite_path=tmp_path / "events.sqlite"))
    else:
        yield postgres_env()


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    """The dev/CI broker (``infra/kafka.sh``, started on demand): its bootstrap address."""
    from infra.services import ensure_kafka

    return ensure_kafka()


@pytest.fixture
def kafka_prefix() -> str:
    """A topic prefix of this test's own: tests share the broker, never its topics."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def distributed_settings(kafka_bootstrap: str, kafka_prefix: str) -> Settings:
    """Settings of a distributed deployment in a fresh PostgreSQL schema and fresh
    topics (created), on the dev broker. Processes of the test get them as env vars
    (``distributed_env``)."""
    from infra.kafka import ensure_topics

    env = postgres_env()
    settings = Settings(persistence="postgres", postgres_schema=env["POSTGRES_SCHEMA"],
                        readmodel_schema=f"{env['POSTGRES_SCHEMA']}_rm",
                        kafka_bootstrap=kafka_bootstrap, kafka_dev_broker=True,
                        kafka_topic_prefix=kafka_prefix, kafka_event_partitions=3,
                        kafka_matching_partitions=2, kafka_fetch_wait_ms=20)
    ensure_topics(settings)
    return settings


def distributed_env(settings: Settings) -> dict[str, str]:
    """``settings`` as the TRADECORE_* variables a worker process reads."""
    return as_environment(settings, (
        "persistence", "postgres_host", "postgres_port", "postgres_user",
        "postgres_password", "postgres_db", "postgres_schema", "readmodel_schema",
        "kafka_bootstrap", "kafka_dev_broker", "kafka_topic_prefix",
        "kafka_event_partitions", "kafka_matching_partitions", "kafka_fetch_wait_ms"))


# -- the shared J-Quants data, read once per session ---------------------------------------
@pytest.fixture(scope="session")
def jquants_dir() -> Path:
    """The shared ``jquants/`` folder (daily_quotes.csv.gz, listed_info.json)."""
    require_data("jquants/listed_info.json")
    return require_data("jquants/daily_quotes.csv.gz").parent


@pytest.fixture(scope="session")
def all_quotes(jquants_dir: Path) -> pl.DataFrame:
    """The full shared daily quotes (926 k rows), loaded once per session."""
    from inference.data import load_daily_quotes

    return load_daily_quotes(jquants_dir)


@pytest.fixture(scope="session")
def listed_info(jquants_dir: Path) -> pl.DataFrame:
    from inference.data import load_listed_info

    return load_listed_info(jquants_dir)
