"""The one settings object: every ``TRADECORE_*`` environment variable is read here.

Nothing else in the project reads ``os.environ``; composition roots (``api/``,
``streams/``) take a :class:`Settings` and pass plain values down.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from datetime import date
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    """Configuration for every deployment; defaults give the embedded one."""

    model_config = SettingsConfigDict(env_prefix="TRADECORE_", extra="ignore")

    # --- data -------------------------------------------------------------------------
    data_dir: Path = Field(
        default=PROJECT_ROOT.parent / "shared" / "data",
        description="Folder with jquants/ and lobster/ market data.",
    )
    require_data: bool = Field(
        default=False,
        description="Fail (instead of skip) tests that need the shared market data.",
    )
    cache_dir: Path = Field(
        default=PROJECT_ROOT / "var" / "cache",
        description=(
            "Derived data kept between processes (the universe read from the J-Quants "
            "files, keyed by their size and mtime); safe to delete."
        ),
    )

    # --- event store ------------------------------------------------------------------
    persistence: Literal["sqlite", "postgres"] = Field(
        default="sqlite", description="Event store: embedded SQLite file or PostgreSQL."
    )
    sqlite_path: Path = Field(
        default=PROJECT_ROOT / "var" / "tradecore.sqlite",
        description="SQLite event store file (embedded deployment).",
    )
    sqlite_synchronous: Literal["NORMAL", "FULL"] = Field(
        default="NORMAL",
        description="SQLite fsync in WAL mode: NORMAL survives app crashes, FULL power loss.",
    )
    postgres_host: str = Field(default="127.0.0.1", description="PostgreSQL host.")
    postgres_port: int = Field(default=54329, description="PostgreSQL port.")
    postgres_user: str = Field(default="tradecore", description="PostgreSQL user.")
    postgres_password: str = Field(default="tradecore", description="PostgreSQL password.")
    postgres_db: str = Field(default="tradecore", description="PostgreSQL database.")
    postgres_schema: str = Field(default="public", description="Schema for event tables.")

    # --- write model --------------------------------------------------------------
    matching_engine: Literal["reference", "kernel"] = Field(
        default="kernel",
        description="Matching stage's engine: the Numba kernel, or the pure-Python reference.",
    )
    venue_snapshot_every: int = Field(
        default=10_000,
        description="The matching stage snapshots its books every N venue commands.",
    )
    commission_schedule: str = Field(
        default="tiered_online",
        description="Commission schedule name (see aggregates.fees).",
    )
    max_order_notional_yen: int = Field(
        default=1_000_000_000, description="Pre-trade risk: largest notional per order."
    )
    fat_finger_pct: int = Field(
        default=10,
        description="Pre-trade risk: reject limit prices further than this % from last price.",
    )
    session_rules: Literal["ignore", "enforce"] = Field(
        default="ignore",
        description=(
            "Pre-trade risk: TSE session hours. `ignore` (dev default: orders at any hour) or "
            "`enforce` (a desk sets this: orders outside 09:00-11:30, 12:30-15:30 JST, on "
            "weekends or Dec 31-Jan 3 are refused)."
        ),
    )
    snapshot_interval: int = Field(
        default=200, description="Snapshot aggregates every N events (0 = never)."
    )
    saga_batch_size: int = Field(
        default=256,
        description="Notifications the saga processes per database transaction.",
    )

    # --- read models --------------------------------------------------------------
    readmodel_sqlite_path: Path = Field(
        default=PROJECT_ROOT / "var" / "readmodels.sqlite",
        description="SQLite read-model file (embedded deployment).",
    )
    readmodel_schema: str = Field(
        default="readmodels",
        description="PostgreSQL schema for read models (TimescaleDB when the extension is there).",
    )
    timescaledb: bool = Field(
        default=True,
        description="Dev/CI cluster: build and load the TimescaleDB extension (infra/postgres.sh).",
    )
    projection_batch_size: int = Field(
        default=2000, description="Notifications a projector writes per database transaction."
    )
    projection_shares: int = Field(
        default=1, ge=1, le=64,
        description=(
            "Shares of the projections whose rows each depend on one aggregate (balances, "
            "halts): `balances#0of2`, `balances#1of2`... each projected by a worker of its "
            "own (`tradecore worker projections --projection balances#0of2`). Changing it "
            "needs `tradecore projections rebuild`."
        ),
    )
    retention_days: int = Field(
        default=0,
        description="Drop fills/ledger/PnL/bar rows older than this many days (0 = keep all).",
    )

    # --- Kafka (distributed deployment) ---------------------------------------------
    bus: Literal["log", "kafka"] = Field(
        default="log",
        description=(
            "Where the stages read their input: `log` (the event store's notification log; "
            "embedded, or workers over one PostgreSQL) or `kafka` (the distributed "
            "deployment: the relay publishes the log, workers consume topics)."
        ),
    )
    kafka_bootstrap: str = Field(
        default="127.0.0.1:19092",
        description="Kafka bootstrap servers (host:port, comma-separated) for every client.",
    )
    kafka_dev_broker: bool = Field(
        default=False,
        description=(
            "The broker is the dev/CI one (Tansu, infra/kafka.sh): switches on the "
            "workarounds for its faults (../shared/KAFKA.md). Never set it for Apache Kafka."
        ),
    )
    kafka_topic_prefix: str = Field(
        default="tradecore", description="Prefix of every topic name (`<prefix>.events.order`)."
    )
    kafka_event_partitions: int = Field(
        default=6, ge=1, description="Partitions of each `<prefix>.events.<aggregate>` topic."
    )
    kafka_matching_partitions: int = Field(
        default=4, ge=1,
        description="Partitions of `<prefix>.matching.in|out` (symbols spread over them).",
    )
    kafka_replication_factor: int = Field(
        default=1, ge=1, description="Replication factor of created topics (3 in production)."
    )
    kafka_retention_ms: int = Field(
        default=604_800_000,
        description="retention.ms of created topics (-1 keeps forever; the event store is "
        "the record either way).",
    )
    kafka_fetch_wait_ms: int = Field(
        default=50, ge=1, description="Consumers' fetch.wait.max.ms (latency vs broker CPU)."
    )
    kafka_session_timeout_ms: int = Field(
        default=6000, description="Consumers' session.timeout.ms (group failover time)."
    )
    kafka_linger_ms: int = Field(default=5, ge=0, description="Producers' linger.ms.")
    relay_batch_size: int = Field(
        default=20_000, ge=1,
        description="Notifications the relay publishes per batch (one wait for the broker's "
        "acks, one position write).",
    )
    worker_host: str = Field(
        default="127.0.0.1", description="Where a `tradecore worker` serves /readyz and /metrics."
    )
    worker_port: int = Field(
        default=9100, ge=0,
        description="Port of a worker's /readyz and /metrics (0: pick a free one, logged).",
    )

    # --- market-data loop (streams) ---------------------------------------------------
    model_checkpoint: Path | None = Field(
        default=None,
        description="ATFT-GAT-FAN checkpoint the streams loop predicts with "
        "(`tradecore model train` writes one); unset: no loop.",
    )
    streams_ingest: bool = Field(
        default=False,
        description="The streams worker also ingests bars (from `streams_source`) into "
        "`<prefix>.md.bars`; off: another process publishes them.",
    )
    streams_source: Literal["files", "api"] = Field(
        default="files",
        description="Where the loop's daily bars come from: J-Quants files replayed "
        "(`streams_data`) or the J-Quants API polled (`jquants_refresh_token`).",
    )
    jquants_refresh_token: str | None = Field(
        default=None, description="J-Quants API refresh token (API polling); keep it secret."
    )
    jquants_base_url: str = Field(
        default="https://api.jquants.com", description="J-Quants API base URL."
    )
    streams_data: Path | None = Field(
        default=None,
        description="J-Quants folder (daily_quotes, listed_info) the loop replays and reads "
        "sectors from; default: `<data_dir>/jquants`.",
    )
    streams_from: date | None = Field(
        default=None,
        description="First trading day the loop predicts (the sessions before it warm the "
        "features up); default: the first day the warm-up allows.",
    )
    streams_to: date | None = Field(
        default=None, description="Last day a file replay sends (default: the data's last)."
    )
    streams_speed: float = Field(
        default=0.0, ge=0,
        description="Replay speed in trading days per second (0: as fast as it is taken).",
    )
    streams_poll_s: float = Field(
        default=60.0, gt=0, description="API polling: seconds between asks for today's bars."
    )
    streams_deadline_s: float = Field(
        default=60.0, gt=0,
        description="A day is predicted this long after its first bar even if some "
        "partitions' end-of-day markers are missing (the missing symbols are reported).",
    )
    strategy_account: str | None = Field(
        default=None,
        description="Account name the strategy trades (it must exist and be funded); unset: "
        "predictions only, no orders.",
    )
    strategy_fraction: float = Field(
        default=0.1, gt=0, le=1,
        description="The strategy holds this top fraction of the universe by median "
        "forecast, equal weight.",
    )

    # --- HTTP API -----------------------------------------------------------------
    api_host: str = Field(default="127.0.0.1", description="`tradecore serve` listen address.")
    api_port: int = Field(default=8000, description="`tradecore serve` port.")
    jwt_keys_path: Path = Field(
        default=PROJECT_ROOT / "var" / "jwt-keys.json",
        description="Signing keys (key id -> secret, the active one first); keep it secret.",
    )
    jwt_issuer: str = Field(default="tradecore", description="`iss` of issued tokens.")
    jwt_audience: str = Field(default="tradecore-api", description="`aud` tokens must carry.")
    token_ttl_s: int = Field(default=3600, description="Lifetime of issued tokens, seconds.")
    rate_limit: str = Field(
        default="600/second", description="Requests per principal (limits-library notation)."
    )
    max_request_bytes: int = Field(
        default=65536, description="Largest request body accepted (413 above it)."
    )
    auth_failure_limit: str = Field(
        default="30/minute",
        description=(
            "Failed authentications per client address (limits notation); beyond it the "
            "address gets 429 until the window frees, except for tokens that verified before."
        ),
    )
    refusal_delay_s: float = Field(
        default=1.0,
        description=(
            "Seconds a 429 (rate limit, refused address) waits before it is sent: a flood "
            "gets one request per connection per delay through."
        ),
    )
    max_inflight_per_principal: int = Field(
        default=4,
        description="Requests of one principal running at once; more wait their turn.",
    )
    api_trusted_proxies: str = Field(
        default="127.0.0.1",
        description=(
            "Proxies whose X-Forwarded-For gives the client address (comma-separated "
            "IPs or networks, `*` for any; uvicorn's forwarded_allow_ips)."
        ),
    )
    api_header_timeout_s: float = Field(
        default=10.0,
        description="A request's line and headers must arrive within this (408, then closed).",
    )
    api_body_timeout_s: float = Field(
        default=30.0,
        description="A request's body must arrive within this after its headers (408, closed).",
    )
    api_keep_alive_s: int = Field(
        default=5, description="An idle keep-alive connection is closed after this."
    )
    api_max_header_bytes: int = Field(
        default=16384, description="Largest request line plus headers (431, then closed)."
    )
    api_max_connections: int = Field(
        default=1000,
        description="Open connections and running requests per process; beyond it 503.",
    )
    user_lockout_failures: int = Field(
        default=5, ge=1,
        description="Failed console sign-ins in a row that lock a user (`POST /v1/session`).",
    )
    user_lockout_s: int = Field(
        default=900, ge=1,
        description="Seconds a locked user stays locked (423); `tradecore user enable` unlocks.",
    )
    read_wait_timeout_s: float = Field(
        default=5.0,
        description="Longest a query waits for its projection to reach `min_position`.",
    )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings read once per process from the environment."""
    return Settings()


def as_environment(settings: Settings, names: Iterable[str]) -> dict[str, str]:
    """The named fields of ``settings`` as the ``TRADECORE_*`` variables another process
    (a worker started by a test or a benchmark) reads them back from."""
    env = {}
    for name in names:
        value = getattr(settings, name)
        env[f"TRADECORE_{name.upper()}"] = (str(value).lower() if isinstance(value, bool)
                                           else str(value))
    return env


def markdown_table() -> str:
    """The configuration table in README.md, generated from the fields above."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = field.default
        if isinstance(default, Path):
            default = os.path.relpath(default, PROJECT_ROOT)
        rows.append(f"| `TRADECORE_{name.upper()}` | `{default}` | {field.description} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown_table())
