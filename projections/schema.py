"""Read-model schema as numbered migrations, and the runner behind ``tradecore db upgrade``.

Why a small runner rather than Alembic: the read models are written with raw SQL through
two drivers (sqlite3, psycopg) and one migration must ask the database whether
TimescaleDB is there; a list of numbered functions, each applied in its own transaction
and recorded in ``schema_migrations``, is all that needs. PostgreSQL runs the upgrade
under an advisory lock so two processes starting together apply each step once.

Tables (``ts`` is the event's time):

- ``orders`` (current) and ``order_events`` (history), ``fills`` (hypertable);
- ``positions`` (current) and ``position_history`` (hypertable), ``marks`` (last price);
- ``balances`` (current) and ``cash_ledger`` (hypertable);
- ``pnl`` (hypertable: realised, unrealised and fees per account over time);
- ``bars`` (hypertable: one-minute bars from executions);
- ``halts`` (current): what is halted now, symbols and accounts, with reason, time and
  principal (a row leaves when the halt is lifted);
- ``projection_tracking``: the last notification each projection has applied;
- ``users``: the desk console's users (not a projection; see ``api.users``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from projections.store import ReadStore

HYPERTABLES = ("fills", "position_history", "cash_ledger", "pnl", "bars")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    apply: Callable[[ReadStore], str | None]  # returns a note for the record, if any


def _types(store: ReadStore) -> dict[str, str]:
    if store.dialect == "postgres":
        return {"ts": "TIMESTAMPTZ", "json": "JSONB", "bool": "BOOLEAN"}
    return {"ts": "INTEGER", "json": "TEXT", "bool": "INTEGER"}


INITIAL = """
CREATE TABLE projection_tracking (
    name TEXT PRIMARY KEY,
    position BIGINT NOT NULL,
    updated_at {ts} NOT NULL
);
CREATE TABLE orders (
    order_id TEXT PRIMARY KEY,
    seq BIGINT NOT NULL,
    account_id TEXT NOT NULL,
    client_order_id TEXT NOT NULL,
    symbol TEXT NOT NULL,
    side TEXT NOT NULL,
    order_type TEXT NOT NULL,
    tif TEXT NOT NULL,
    quantity BIGINT NOT NULL,
    price BIGINT NOT NULL,
    status TEXT NOT NULL,
    filled_quantity BIGINT NOT NULL,
    filled_notional BIGINT NOT NULL,
    fees BIGINT NOT NULL,
    reason TEXT NOT NULL,
    created_at {ts} NOT NULL,
    updated_at {ts} NOT NULL,
    version BIGINT NOT NULL
);
CREATE INDEX orders_account ON orders (account_id, seq);
CREATE INDEX orders_symbol ON orders (symbol, seq);
CREATE INDEX orders_status ON orders (status, seq);
CREATE UNIQUE INDEX orders_seq ON orders (seq);
CREATE TABLE order_events (
    order_id TEXT NOT NULL,
    version BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    ts {ts} NOT NULL,
    event TEXT NOT NULL,
    status TEXT NOT NULL,
    principal TEXT NOT NULL,
    correlation_id TEXT NOT NULL,
    detail {json} NOT NULL,
    PRIMARY KEY (order_id, version)
);
CREATE TABLE fills (
    ts {ts} NOT NULL,
    seq BIGINT NOT NULL,
    execution_id TEXT NOT NULL,
    order_id TEXT NOT NULL,
    account_id TEXT NOT NULL,
    symbol TEXT NOT NULL,
    side TEXT NOT NULL,
    price BIGINT NOT NULL,
    quantity BIGINT NOT NULL,
    notional BIGINT NOT NULL,
    fee BIGINT NOT NULL,
    liquidity TEXT NOT NULL
);
CREATE INDEX fills_account ON fills (account_id, seq);
CREATE INDEX fills_order ON fills (order_id, seq);
CREATE INDEX fills_symbol ON fills (symbol, seq);
CREATE TABLE positions (
    position_id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL,
    symbol TEXT NOT NULL,
    quantity BIGINT NOT NULL,
    cost BIGINT NOT NULL,
    realised_pnl BIGINT NOT NULL,
    reserved BIGINT NOT NULL,
    updated_at {ts} NOT NULL,
    version BIGINT NOT NULL
);
CREATE UNIQUE INDEX positions_account ON positions (account_id, symbol);
CREATE TABLE position_history (
    ts {ts} NOT NULL,
    seq BIGINT NOT NULL,
    account_id TEXT NOT NULL,
    symbol TEXT NOT NULL,
    execution_id TEXT NOT NULL,
    side TEXT NOT NULL,
    price BIGINT NOT NULL,
    quantity BIGINT NOT NULL,
    quantity_after BIGINT NOT NULL,
    cost_after BIGINT NOT NULL,
    realised BIGINT NOT NULL
);
CREATE INDEX position_history_account ON position_history (account_id, symbol, seq);
CREATE TABLE marks (
    symbol TEXT PRIMARY KEY,
    price BIGINT NOT NULL,
    ts {ts} NOT NULL
);
CREATE TABLE balances (
    account_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    owner TEXT NOT NULL,
    cash BIGINT NOT NULL,
    reserved BIGINT NOT NULL,
    deposited BIGINT NOT NULL,
    withdrawn BIGINT NOT NULL,
    bought BIGINT NOT NULL,
    sold BIGINT NOT NULL,
    fees BIGINT NOT NULL,
    halted {bool} NOT NULL,
    updated_at {ts} NOT NULL,
    version BIGINT NOT NULL
);
CREATE TABLE cash_ledger (
    ts {ts} NOT NULL,
    seq BIGINT NOT NULL,
    account_id TEXT NOT NULL,
    entry TEXT NOT NULL,
    amount BIGINT NOT NULL,
    fee BIGINT NOT NULL,
    cash_after BIGINT NOT NULL,
    order_id TEXT,
    execution_id TEXT
);
CREATE INDEX cash_ledger_account ON cash_ledger (account_id, seq);
CREATE TABLE pnl (
    ts {ts} NOT NULL,
    seq BIGINT NOT NULL,
    account_id TEXT NOT NULL,
    realised BIGINT NOT NULL,
    unrealised BIGINT NOT NULL,
    fees BIGINT NOT NULL
);
CREATE INDEX pnl_account ON pnl (account_id, ts, seq);
CREATE TABLE bars (
    ts {ts} NOT NULL,
    symbol TEXT NOT NULL,
    open BIGINT NOT NULL,
    high BIGINT NOT NULL,
    low BIGINT NOT NULL,
    close BIGINT NOT NULL,
    volume BIGINT NOT NULL,
    notional BIGINT NOT NULL,
    trades BIGINT NOT NULL,
    PRIMARY KEY (symbol, ts)
);
"""


def initial(store: ReadStore) -> None:
    for statement in INITIAL.format(**_types(store)).split(";"):
        if statement.strip():
            store.execute(statement)
    return None


def hypertables(store: ReadStore) -> str | None:
    """Time-series tables become hypertables where TimescaleDB is installed."""
    if not store.timescale:
        return f"skipped: no timescaledb ({store.dialect})"
    for table in HYPERTABLES:
        store.execute(
            "SELECT create_hypertable(%s::regclass, 'ts', chunk_time_interval => "
            "INTERVAL '1 day', migrate_data => true, if_not_exists => true)",
            (table,),
        )
    return None


def users(store: ReadStore) -> None:
    """The desk console's users (``api.users``). Not a projection: no event makes them and
    a rebuild leaves them alone; they live here because this is the one database every
    deployment already has beside its event store."""
    types = _types(store)
    store.execute(
        "CREATE TABLE users (name TEXT PRIMARY KEY, password_hash TEXT NOT NULL, "
        "role TEXT NOT NULL, accounts TEXT NOT NULL, disabled {bool} NOT NULL, "
        "failures INTEGER NOT NULL, locked_until {ts}, created_at {ts} NOT NULL, "
        "updated_at {ts} NOT NULL)".format(**types)
    )
    return None


def halts(store: ReadStore) -> None:
    """What is halted now (the ``halts`` projection). A table of its own rather than
    columns on ``balances``: symbol halts belong to no account, and a new projection
    starts from notification 0 on an existing database, so halts made before this
    migration are projected too (a column would stay empty until a rebuild)."""
    store.execute(
        "CREATE TABLE halts (kind TEXT NOT NULL, target TEXT NOT NULL, "
        "reason TEXT NOT NULL, principal TEXT NOT NULL, halted_at {ts} NOT NULL, "
        "seq BIGINT NOT NULL, PRIMARY KEY (kind, target))".format(**_types(store)))
    return None


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "read-model tables", initial),
    Migration(2, "hypertables", hypertables),
    Migration(3, "console users", users),
    Migration(4, "current halts", halts),
)


def applied(store: ReadStore) -> dict[int, str]:
    """Versions applied so far, with their names (empty before the first upgrade)."""
    _ensure_ledger(store)
    return {int(v): str(n) for v, n in store.fetchall(
        "SELECT version, name FROM schema_migrations ORDER BY version")}


def upgrade(store: ReadStore) -> list[str]:
    """Apply every pending migration in order; returns what was applied."""
    done: list[str] = []
    with store.transaction():
        if store.dialect == "postgres":
            store.execute("SELECT pg_advisory_xact_lock(hashtext(current_schema()))")
        _ensure_ledger(store)  # under the lock: two first upgrades would race to create it
        present = {int(v) for (v,) in store.fetchall("SELECT version FROM schema_migrations")}
        for migration in MIGRATIONS:
            if migration.version in present:
                continue
            note = migration.apply(store)
            name = migration.name + (f" ({note})" if note else "")
            store.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (%s, %s, %s)",
                (migration.version, name, store.ts(datetime.now(UTC))),
            )
            done.append(f"{migration.version}: {name}")
    return done


def _ensure_ledger(store: ReadStore) -> None:
    ts = _types(store)["ts"]
    store.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, "
        f"name TEXT NOT NULL, applied_at {ts} NOT NULL)"
    )

