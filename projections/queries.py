"""Read-model queries: what the query API and the CLI ask of the projected tables.

Every list is newest first with keyset pagination on the notification sequence
(``seq``): a page returns ``next_cursor`` (the last row's seq) and the next page asks
for rows before it, so pages stay stable while new rows arrive. Account scope is
applied here (``accounts``: the set a caller may see, ``None`` for all) so no route can
forget it.

Time series are bucketed in the database: ``time_bucket`` (and TimescaleDB's
``first``/``last``) when the extension is there, ``date_bin``/``array_agg`` in plain
PostgreSQL, and integer arithmetic on microseconds in SQLite.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from projections.store import MICROSECOND, ReadStore

BUCKETS: dict[str, timedelta] = {
    "1m": timedelta(minutes=1), "5m": timedelta(minutes=5), "15m": timedelta(minutes=15),
    "30m": timedelta(minutes=30), "1h": timedelta(hours=1), "4h": timedelta(hours=4),
    "1d": timedelta(days=1),
}

ORDER_COLUMNS = ("order_id", "seq", "account_id", "client_order_id", "symbol", "side",
                 "order_type", "tif", "quantity", "price", "status", "filled_quantity",
                 "filled_notional", "fees", "reason", "created_at", "updated_at", "version")
FILL_COLUMNS = ("ts", "seq", "execution_id", "order_id", "account_id", "symbol", "side",
                "price", "quantity", "notional", "fee", "liquidity")
POSITION_COLUMNS = ("account_id", "symbol", "quantity", "cost", "realised_pnl", "reserved",
                    "updated_at", "version")
BALANCE_COLUMNS = ("account_id", "name", "owner", "cash", "reserved", "deposited",
                   "withdrawn", "bought", "sold", "fees", "halted", "updated_at", "version")
LEDGER_COLUMNS = ("ts", "seq", "account_id", "entry", "amount", "fee", "cash_after",
                  "order_id", "execution_id")
EVENT_COLUMNS = ("version", "seq", "ts", "event", "status", "principal", "correlation_id",
                 "detail")
HALT_COLUMNS = ("kind", "target", "reason", "principal", "halted_at", "seq", "name")
TIME_COLUMNS = {"ts", "created_at", "updated_at", "halted_at"}


@dataclass(frozen=True)
class Page:
    items: list[dict[str, Any]]
    next_cursor: int | None


class ReadModels:
    """Queries over one store, or over a per-thread store (``StorePool.get``) so API
    worker threads never share a connection."""

    def __init__(self, store: ReadStore | Callable[[], ReadStore]) -> None:
        self._store = store

    @property
    def store(self) -> ReadStore:
        store = self._store
        return store if isinstance(store, ReadStore) else store()

    # -- helpers ---------------------------------------------------------------------
    def _rows(self, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[dict[str, Any]]:
        out = []
        for row in rows:
            item = dict(zip(columns, row, strict=True))
            for name in TIME_COLUMNS & item.keys():
                item[name] = self.store.moment(item[name])
            if "halted" in item:
                item["halted"] = bool(item["halted"])
            if isinstance(item.get("detail"), str):
                item["detail"] = json.loads(item["detail"])
            out.append(item)
        return out

    def _page(self, table: str, columns: Sequence[str], where: list[str], params: list[Any],
              cursor: int | None, limit: int) -> Page:
        if cursor is not None:
            where.append("seq < %s")
            params.append(cursor)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = self._rows(columns, self.store.fetchall(
            f"SELECT {', '.join(columns)} FROM {table} {clause} ORDER BY seq DESC LIMIT %s",
            [*params, limit + 1]))
        more = len(rows) > limit
        rows = rows[:limit]
        return Page(rows, rows[-1]["seq"] if more and rows else None)

    def _scope(self, where: list[str], params: list[Any], column: str,
               accounts: set[str] | None, account_id: str | None) -> bool:
        """Restrict to the caller's accounts; False when nothing can match."""
        if account_id is not None:
            if accounts is not None and account_id not in accounts:
                return False
            where.append(f"{column} = %s")
            params.append(account_id)
        elif accounts is not None:
            if not accounts:
                return False
            where.append(f"{column} IN ({', '.join('%s' for _ in accounts)})")
            params.extend(sorted(accounts))
        return True

    def _range(self, where: list[str], params: list[Any], column: str,
               since: datetime | None, until: datetime | None) -> None:
        if since is not None:
            where.append(f"{column} >= %s")
            params.append(self.store.ts(since))
        if until is not None:
            where.append(f"{column} < %s")
            params.append(self.store.ts(until))

    # -- orders and fills --------------------------------------------------------------
    def _listing(self, table: str, columns: Sequence[str], time_column: str, *,
                 accounts: set[str] | None, account_id: str | None,
                 equal: dict[str, str | None], since: datetime | None,
                 until: datetime | None, cursor: int | None, limit: int) -> Page:
        """A scoped, filtered, time-ranged page of an account's rows, newest first."""
        where: list[str] = []
        params: list[Any] = []
        if not self._scope(where, params, "account_id", accounts, account_id):
            return Page([], None)
        for column, value in equal.items():
            if value is not None:
                where.append(f"{column} = %s")
                params.append(value)
        self._range(where, params, time_column, since, until)
        return self._page(table, columns, where, params, cursor, limit)

    def orders(self, *, accounts: set[str] | None, account_id: str | None = None,
               symbol: str | None = None, status: str | None = None,
               since: datetime | None = None, until: datetime | None = None,
               cursor: int | None = None, limit: int = 100) -> Page:
        return self._listing("orders", ORDER_COLUMNS, "created_at", accounts=accounts,
                             account_id=account_id, equal={"symbol": symbol, "status": status},
                             since=since, until=until, cursor=cursor, limit=limit)

    def order(self, order_id: str) -> dict[str, Any] | None:
        rows = self._rows(ORDER_COLUMNS, self.store.fetchall(
            f"SELECT {', '.join(ORDER_COLUMNS)} FROM orders WHERE order_id = %s", (order_id,)))
        return rows[0] if rows else None

    def tracked(self, names: Sequence[str]) -> dict[str, int]:
        """Each of these projections' log position (0: not begun)."""
        found = dict(self.store.fetchall("SELECT name, position FROM projection_tracking"))
        return {name: int(found.get(name, 0)) for name in names}

    def projected(self, names: Sequence[str]) -> int:
        """The log position every one of these projections has reached (0: not begun)."""
        return min(self.tracked(names).values(), default=0)

    def changes(self, after: int, upto: int) -> list[tuple[str, str, dict[str, Any]]]:
        """What changed in the log positions (after, upto], as the stream tells clients:
        ``(account_id, "order", the order's row)`` for every order with a new event, then
        ``(account_id, "fill", the fill's row)`` per fill, rows as stored (the same
        shape the projector sends when it runs in this process)."""
        store = self.store
        orders = store.fetchall(
            f"SELECT {', '.join('o.' + c for c in ORDER_COLUMNS)} FROM orders o WHERE "
            "o.order_id IN (SELECT order_id FROM order_events WHERE seq > %s AND seq <= %s) "
            "ORDER BY o.updated_at", (after, upto))
        fills = store.fetchall(
            f"SELECT {', '.join(FILL_COLUMNS)} FROM fills WHERE seq > %s AND seq <= %s "
            "ORDER BY seq", (after, upto))
        out = [(str(row[2]), "order", dict(zip(ORDER_COLUMNS, row, strict=True)))
               for row in orders]
        out += [(str(row[4]), "fill", dict(zip(FILL_COLUMNS, row, strict=True)))
                for row in fills]
        return out

    def order_events(self, order_id: str) -> list[dict[str, Any]]:
        return self._rows(EVENT_COLUMNS, self.store.fetchall(
            f"SELECT {', '.join(EVENT_COLUMNS)} FROM order_events WHERE order_id = %s "
            "ORDER BY version", (order_id,)))

    def fills(self, *, accounts: set[str] | None, account_id: str | None = None,
              order_id: str | None = None, symbol: str | None = None,
              since: datetime | None = None, until: datetime | None = None,
              cursor: int | None = None, limit: int = 100) -> Page:
        return self._listing("fills", FILL_COLUMNS, "ts", accounts=accounts,
                             account_id=account_id,
                             equal={"order_id": order_id, "symbol": symbol},
                             since=since, until=until, cursor=cursor, limit=limit)

    # -- positions, balances, PnL ---------------------------------------------------------
    def positions(self, account_id: str) -> list[dict[str, Any]]:
        return self._rows(POSITION_COLUMNS, self.store.fetchall(
            f"SELECT {', '.join(POSITION_COLUMNS)} FROM positions WHERE account_id = %s "
            "ORDER BY symbol", (account_id,)))

    def balance(self, account_id: str) -> dict[str, Any] | None:
        rows = self._rows(BALANCE_COLUMNS, self.store.fetchall(
            f"SELECT {', '.join(BALANCE_COLUMNS)} FROM balances WHERE account_id = %s",
            (account_id,)))
        return rows[0] if rows else None

    def balances(self, accounts: set[str] | None) -> list[dict[str, Any]]:
        """Every account's balance row the caller may see (``None``: all), by name."""
        where: list[str] = []
        params: list[Any] = []
        if not self._scope(where, params, "account_id", accounts, None):
            return []
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        return self._rows(BALANCE_COLUMNS, self.store.fetchall(
            f"SELECT {', '.join(BALANCE_COLUMNS)} FROM balances{clause} ORDER BY name",
            params))

    def ledger(self, account_id: str, *, since: datetime | None = None,
               until: datetime | None = None, cursor: int | None = None,
               limit: int = 100) -> Page:
        where, params = ["account_id = %s"], [account_id]
        self._range(where, params, "ts", since, until)
        return self._page("cash_ledger", LEDGER_COLUMNS, where, params, cursor, limit)

    def pnl(self, account_id: str, bucket: timedelta, *, since: datetime | None = None,
            until: datetime | None = None) -> list[dict[str, Any]]:
        """The account's PnL at the end of each bucket (its last snapshot in the bucket)."""
        where, params = ["account_id = %s"], [account_id]
        self._range(where, params, "ts", since, until)
        clause = " AND ".join(where)
        store = self.store
        if store.dialect == "postgres":
            fn = ("time_bucket(%s, ts)" if store.timescale
                  else "date_bin(%s, ts, TIMESTAMPTZ '2000-01-03')")
            rows = store.fetchall(
                f"SELECT DISTINCT ON (bucket) {fn} AS bucket, realised, unrealised, fees "
                f"FROM pnl WHERE {clause} ORDER BY bucket, seq DESC", [bucket, *params])
        else:
            width = bucket // MICROSECOND
            rows = store.fetchall(
                "SELECT bucket, realised, unrealised, fees FROM ("
                f"SELECT (ts / {width}) * {width} AS bucket, realised, unrealised, fees, "
                f"ROW_NUMBER() OVER (PARTITION BY ts / {width} ORDER BY seq DESC) AS n "
                f"FROM pnl WHERE {clause}) WHERE n = 1 ORDER BY bucket", params)
        return [{"bucket": store.moment(b), "realised": r, "unrealised": u, "fees": f,
                 "net": r + u - f} for b, r, u, f in rows]

    # -- halts -----------------------------------------------------------------------
    def halts(self, accounts: set[str] | None) -> list[dict[str, Any]]:
        """What is halted now, newest first: every symbol halt (they concern everyone who
        trades the symbol) and the account halts of the caller's accounts (``None``:
        all), each account's with its name from ``balances``."""
        where: list[str] = []
        params: list[Any] = []
        scoped = self._scope(where, params, "h.target", accounts, None)
        account_clause = ("h.kind = 'account'" + (f" AND {where[0]}" if where else "")
                          if scoped else "1 = 0")
        return self._rows(HALT_COLUMNS, self.store.fetchall(
            "SELECT h.kind, h.target, h.reason, h.principal, h.halted_at, h.seq, b.name "
            "FROM halts h LEFT JOIN balances b ON h.kind = 'account' AND "
            f"b.account_id = h.target WHERE h.kind = 'symbol' OR ({account_clause}) "
            "ORDER BY h.seq DESC", params))

    # -- market ----------------------------------------------------------------------
    def bars(self, symbol: str, bucket: timedelta, *, since: datetime | None = None,
             until: datetime | None = None) -> list[dict[str, Any]]:
        """OHLCV of executions per bucket, rolled up from the one-minute bars."""
        where, params = ["symbol = %s"], [symbol]
        self._range(where, params, "ts", since, until)
        clause = " AND ".join(where)
        store = self.store
        if store.dialect == "postgres":
            if store.timescale:
                fn, first, last = ("time_bucket(%s, ts)", "first(open, ts)",
                                   "last(close, ts)")
            else:
                fn = "date_bin(%s, ts, TIMESTAMPTZ '2000-01-03')"
                first = "(array_agg(open ORDER BY ts))[1]"
                last = "(array_agg(close ORDER BY ts DESC))[1]"
            rows = store.fetchall(
                f"SELECT {fn} AS bucket, {first}, max(high), min(low), {last}, sum(volume), "
                f"sum(notional), sum(trades) FROM bars WHERE {clause} "
                "GROUP BY bucket ORDER BY bucket", [bucket, *params])
        else:
            width = bucket // MICROSECOND
            rows = []
            for ts, o, h, lo, c, v, n, t in store.fetchall(
                "SELECT ts, open, high, low, close, volume, notional, trades FROM bars "
                f"WHERE {clause} ORDER BY ts", params
            ):
                b = ts // width * width
                if rows and rows[-1][0] == b:
                    _, o0, h0, l0, _, v0, n0, t0 = rows[-1]
                    rows[-1] = (b, o0, max(h0, h), min(l0, lo), c, v0 + v, n0 + n, t0 + t)
                else:
                    rows.append((b, o, h, lo, c, v, n, t))
        return [{"bucket": store.moment(b), "open": o, "high": h, "low": lo, "close": c,
                 "volume": int(v), "notional": int(n), "trades": int(t)}
                for b, o, h, lo, c, v, n, t in rows]
