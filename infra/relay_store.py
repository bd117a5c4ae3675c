"""Where the relay keeps its position, and how it reads the event store's log fast.

This reaches inside the eventsourcing library's PostgreSQL recorder: it reads the
recorder's events table (``events_table_name``; columns ``notification_id``,
``originator_id``, ``originator_version``, ``topic``, ``state``) with one plain query
instead of ``select_notifications``, which builds a dict and a ``UUID`` per row that the
relay turns straight back into a string (about 40 % of the relay's time). The rows and
their order are the recorder's own: ``tests/infra/test_relay_store.py`` pins that
against ``select_notifications`` on a real store, so a library upgrade that changes the
table fails there first.
"""

from __future__ import annotations

Stored = tuple[int, str, int, str, bytes]
"""One notification as the relay reads it: (notification id, originator id, originator
version, event topic, stored bytes); a plain tuple, as the driver returns it."""


class RelayPositions:
    """The relay's position per topic prefix, in the event store's PostgreSQL schema, and
    its reads of the log (see the module docstring; ``events_table`` is the recorder's
    ``events_table_name``)."""

    def __init__(self, url: str, schema: str, events_table: str) -> None:
        import psycopg
        from psycopg import sql

        self._conn = psycopg.connect(url, autocommit=True)
        self._table = sql.Identifier(schema, "relay_positions")
        self._sql = sql
        self._conn.execute(sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} (stream text PRIMARY KEY, position bigint NOT NULL,"
            " updated_at timestamptz NOT NULL DEFAULT now())").format(self._table))
        events = sql.Identifier(schema, events_table)
        self._select = sql.SQL(
            "SELECT notification_id, originator_id::text, originator_version, topic, state "
            "FROM {} WHERE notification_id > %s ORDER BY notification_id LIMIT %s"
        ).format(events).as_string(self._conn)
        self._head = sql.SQL("SELECT max(notification_id) FROM {}").format(events
                                                                             ).as_string(self._conn)

    def get(self, stream: str) -> int:
        row = self._conn.execute(self._sql.SQL("SELECT position FROM {} WHERE stream = %s"
                                               ).format(self._table), (stream,)).fetchone()
        return int(row[0]) if row else 0

    def put(self, stream: str, position: int) -> None:
        self._conn.execute(self._sql.SQL(
            "INSERT INTO {} (stream, position) VALUES (%s, %s) ON CONFLICT (stream) DO "
            "UPDATE SET position = excluded.position, updated_at = now()"
        ).format(self._table), (stream, position))

    def read(self, after: int, limit: int) -> list[Stored]:
        """Up to ``limit`` notifications after ``after``, in log order."""
        with self._conn.cursor(binary=True) as cursor:
            cursor.execute(self._select, (after, limit), prepare=True)
            return cursor.fetchall()  # type: ignore[return-value]  # rows are Stored's fields

    def head(self) -> int:
        row = self._conn.execute(self._head).fetchone()
        return int(row[0] or 0) if row else 0

    def close(self) -> None:
        self._conn.close()
