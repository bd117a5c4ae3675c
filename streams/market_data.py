"""Daily bars on the stream: the messages, the rules for bad input, and the rolling
window of bars per symbol that a day's features are computed from.

One implementation serves both deployments: the Faust worker keeps a :class:`BarWindow`
over a Faust table (changelog-backed, so it is recovered on restart), the embedded loop
over a dict. Everything the window holds lives in that mapping under three kinds of
key, so a recovered mapping is the whole state:

* ``b|<code>|<first date>``: a chunk of one symbol's accepted bars (a live day carries
  one bar per symbol, a backfill many), MessagePack;
* ``c|<date>|<partition>``: the ingest's end-of-day marker for one partition (whether
  the day is to be predicted, or only warms the features up); ``r|<partition>|<first>|
  <last>``: a backfill's marker, closing a range of days;
* ``p|<date>``: the day's cross-section was published (its missing symbols in the value).

**Bad input** (docs/streams.md): a bar is either *dropped* with a counted reason, or
*kept* (counted where it is unusual); nothing raises, nothing is silently changed.

======================  =========================================================
late                    dropped: its day was already published
duplicate               dropped: the same (code, date) is held with the same values
conflicting_duplicate   dropped: the same (code, date) is held with other values
                        (the first one stands)
bad_close               dropped: AdjustmentClose null, NaN, infinite or <= 0 (the
                        offline rule: the stock's next return spans the gap)
bad_code                dropped: not a TSE code (inference.data.schema.CODE_RULE)
out_of_order            kept: older than a bar already held for the symbol, its day
                        still open: it takes its place by date
repaired_price          kept: open/high/low missing or <= 0; the offline cleaning
                        repairs it the same way in both deployments
repaired_volume         kept: volume missing or < 0; set to 0 by the offline cleaning
zero_volume             kept: a valid bar without trades
split                   kept: AdjustmentFactor != 1; from a live source
                        (``rebase_splits``) the symbol's held bars are re-based by the
                        factor so the split is not a return
missing                 a symbol that traded the previous session has no bar on a
                        published day: reported with the day, state kept
bad_partition           an end-of-day marker for a partition outside
                        ``0..partitions-1``: dropped (it would close the day early)
======================  =========================================================
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable, Iterable, MutableMapping
from datetime import date
from typing import Any

import msgspec

from inference.data.schema import normal_code

DROPPED = ("late", "duplicate", "conflicting_duplicate", "bad_close", "bad_code")
KEPT = ("out_of_order", "repaired_price", "repaired_volume", "zero_volume", "split")


class Bar(msgspec.Struct, array_like=True, frozen=True):
    """One J-Quants ``daily_quotes`` row, its columns in order (None where absent)."""

    Date: date
    Code: str
    Open: float | None = None
    High: float | None = None
    Low: float | None = None
    Close: float | None = None
    Volume: float | None = None
    TurnoverValue: float | None = None
    AdjustmentFactor: float | None = None
    AdjustmentOpen: float | None = None
    AdjustmentHigh: float | None = None
    AdjustmentLow: float | None = None
    AdjustmentClose: float | None = None
    AdjustmentVolume: float | None = None


class Bars(msgspec.Struct, tag="bars", frozen=True):
    """Bars of one symbol, one per date: a live day carries one, a backfill many."""

    code: str
    bars: list[Bar]
    #: True from a live source (API polling): a split re-bases the held history. False
    #: from files, whose Adjustment* columns are already on one scale.
    rebase_splits: bool = False


class DayClose(msgspec.Struct, tag="close", frozen=True):
    """The ingest has sent every bar of ``day`` it had for ``partition`` (``bars`` of them)."""

    day: date
    partition: int
    bars: int
    #: False for a backfilled (warm-up) day: it is closed without predictions.
    predict: bool = True
    #: Set on a backfill's marker: it closes every day from ``first`` to ``day`` for the
    #: partition (``bars`` counts them all), one message instead of one per day.
    first: date | None = None


Message = Bars | DayClose
_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(Message).decode
# the window's own chunks (a table's values, never on md.bars): MessagePack, half JSON's
# size in the changelog and faster both ways
_store_chunk = msgspec.msgpack.Encoder().encode
_chunk = msgspec.msgpack.Decoder(list[Bar]).decode


class BadMessage(ValueError):
    """A md.bars message that is not a Bars or DayClose; the message says which field."""


def encode(message: Message) -> bytes:
    return _encode(message)


def decode(raw: bytes | None) -> Message:
    try:
        return _decode(raw or b"")
    except msgspec.ValidationError as exc:
        raise BadMessage(f"md.bars: {exc}") from None
    except msgspec.DecodeError as exc:
        raise BadMessage(f"md.bars: not JSON: {exc}") from None


def bars_from_rows(rows: Iterable[dict[str, Any]]) -> list[Bar]:
    """Bars from J-Quants rows (``polars.DataFrame.iter_rows(named=True)``); NaN -> None."""
    fields = Bar.__struct_fields__
    out = []
    for row in rows:
        values = [row.get(name) for name in fields]
        clean: list[Any] = [None if isinstance(v, float) and math.isnan(v) else v
                            for v in values]
        out.append(Bar(*clean))
    return out


def _finite_positive(x: float | None) -> bool:
    return x is not None and math.isfinite(x) and x > 0


def _same(a: Bar, b: Bar) -> bool:
    """Equal field by field (NaN equals NaN)."""
    return all(x == y or (isinstance(x, float) and isinstance(y, float)
                          and math.isnan(x) and math.isnan(y))
               for x, y in zip(msgspec.structs.astuple(a), msgspec.structs.astuple(b),
                               strict=True))


def _rebased(bar: Bar, factor: float) -> Bar:
    """``bar`` on the scale after a split of ``factor`` (prices x factor, volume / factor)."""
    def scaled(x: float | None, f: float) -> float | None:
        return None if x is None else x * f

    return msgspec.structs.replace(
        bar, AdjustmentOpen=scaled(bar.AdjustmentOpen, factor),
        AdjustmentHigh=scaled(bar.AdjustmentHigh, factor),
        AdjustmentLow=scaled(bar.AdjustmentLow, factor),
        AdjustmentClose=scaled(bar.AdjustmentClose, factor),
        AdjustmentVolume=scaled(bar.AdjustmentVolume, 1.0 / factor))


def _close_key(day: date, partition: int) -> bytes:
    return f"c|{day.isoformat()}|{partition}".encode()


def _range_key(partition: int, first: date, last: date) -> bytes:
    return f"r|{partition}|{first.isoformat()}|{last.isoformat()}".encode()


def _published_key(day: date) -> bytes:
    return f"p|{day.isoformat()}".encode()


class BarWindow:
    """The last ``sessions`` trading dates of bars per symbol, and which days are done.

    ``store`` is the persistent mapping (a Faust table, or a dict); everything else here
    is derived from it by :meth:`reindex`, which a restart runs after recovery.
    ``partitions`` is how many end-of-day markers complete a day; ``deadline_s`` how long
    a day waits for them once it is the oldest open day (from its first bar, or from the
    publishing of the day before if that came later) before it is published without
    them (its missing symbols reported). Counted from its first bar alone, a backlog (a
    restarted worker re-reading its partitions, a replay sent faster than it is taken)
    used the deadline up while the day's bars were still queued behind older days on a
    slower partition, and published it with their symbols missing.
    """

    def __init__(self, store: MutableMapping[bytes, bytes], *, sessions: int,
                 partitions: int = 1, deadline_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if sessions < 2:
            raise ValueError(f"sessions={sessions} breaks rule 'at least 2'")
        self.store = store
        self.sessions = sessions
        self.partitions = partitions
        self.deadline_s = deadline_s
        self.clock = clock
        self.counts: Counter[str] = Counter()  # outcome -> bars (metrics)
        self.reindex()

    # -- derived state ------------------------------------------------------------------
    def reindex(self) -> None:
        """Rebuild what is derived from the store (after recovery, or a rebalance)."""
        self._bars: dict[str, dict[date, Bar]] = {}
        self._chunks: dict[str, list[tuple[date, bytes]]] = {}  # code -> (last date, key)
        self._closed: dict[date, dict[int, bool]] = {}  # day -> partition -> predict
        self._ranges: list[tuple[date, date, int, bool]] = []  # first, last, partition
        self._published: dict[date, list[str]] = {}
        self._first_seen: dict[date, float] = {}
        self._per_date: Counter[date] = Counter()  # bars held per date
        self._open: list[date] | None = None  # open_days(), until something changes it
        self._newest: dict[str, date] = {}  # code -> its newest bar's date
        chunks: list[tuple[bytes, str, list[Bar]]] = []
        for key, value in list(self.store.items()):
            kind, _, rest = bytes(key).decode().partition("|")
            if kind == "b":
                chunks.append((bytes(key), rest.partition("|")[0], _chunk(value)))
            elif kind == "c":
                text, _, partition = rest.partition("|")
                self._closed.setdefault(date.fromisoformat(text), {})[int(partition)] = \
                    value == b"predict"
            elif kind == "r":
                partition, first, last = rest.split("|")
                self._ranges.append((date.fromisoformat(first), date.fromisoformat(last),
                                     int(partition), value == b"predict"))
            elif kind == "p":
                self._published[date.fromisoformat(rest)] = msgspec.json.decode(value)
        # A symbol's chunks hold disjoint dates, except after a worker died in the middle
        # of a split's re-base (see _rebase): then the re-based chunk, which ends on the
        # split day or later and holds every date the stale ones do, is applied last.
        for key, code, chunk in sorted(chunks, key=lambda c: (c[2][-1].Date, len(c[2]))):
            self._hold(code, key, chunk)
        now = self.clock()
        for day in self.open_days():
            self._first_seen[day] = now
        self._head_since = now  # when the oldest open day became the oldest
        self._prune()

    @property
    def last_published(self) -> date | None:
        return max(self._published) if self._published else None

    def published(self, day: date) -> list[str] | None:
        """The missing symbols reported when ``day`` was published, or None if it was not."""
        return self._published.get(day)

    def dates(self) -> list[date]:
        """The dates bars are held for, oldest first."""
        return sorted(self._per_date)

    def open_days(self) -> list[date]:
        """Days with bars or markers that are not published yet, oldest first (kept until
        a new date, a marker or a publication changes them: it is asked after every
        message)."""
        if self._open is None:
            last = self.last_published
            days = set(self._per_date) | set(self._closed)
            self._open = sorted(d for d in days if last is None or d > last)
        return self._open

    # -- input ----------------------------------------------------------------------------
    def accept(self, message: Bars) -> Counter[str]:
        """Apply the rules to a symbol's bars and store the accepted ones (one chunk)."""
        outcome: Counter[str] = Counter()
        code = normal_code(message.code) if isinstance(message.code, str) else None
        if code is None:
            outcome["bad_code"] += len(message.bars) or 1
            self.counts.update(outcome)
            return outcome
        held = self._bars.setdefault(code, {})
        last = self.last_published
        accepted: dict[date, Bar] = {}
        rebase: list[tuple[date, float]] = []
        for bar in sorted(message.bars, key=lambda b: b.Date):
            if normal_code(bar.Code) != code:
                outcome["bad_code"] += 1
                continue
            bar = msgspec.structs.replace(bar, Code=code) if bar.Code != code else bar
            if last is not None and bar.Date <= last:
                outcome["late"] += 1
                continue
            known = held.get(bar.Date) or accepted.get(bar.Date)
            if known is not None:
                outcome["duplicate" if _same(known, bar) else "conflicting_duplicate"] += 1
                continue
            if not _finite_positive(bar.AdjustmentClose):
                outcome["bad_close"] += 1
                continue
            newest = self._newest.get(code)
            if newest is not None and bar.Date < newest:
                outcome["out_of_order"] += 1
            if not all(_finite_positive(x) for x in
                       (bar.AdjustmentOpen, bar.AdjustmentHigh, bar.AdjustmentLow)):
                outcome["repaired_price"] += 1
            volume = bar.AdjustmentVolume
            if volume is None or not math.isfinite(volume) or volume < 0:
                outcome["repaired_volume"] += 1
            elif volume == 0:
                outcome["zero_volume"] += 1
            factor = bar.AdjustmentFactor
            if factor is not None and math.isfinite(factor) and factor > 0 and factor != 1.0:
                outcome["split"] += 1
                if message.rebase_splits:
                    rebase.append((bar.Date, factor))
            accepted[bar.Date] = bar
            outcome["accepted"] += 1
        if accepted:
            for day in accepted:
                self._first_seen.setdefault(day, self.clock())
            if rebase:
                self._rebase(code, accepted, rebase)
            else:
                self._put(code, sorted(accepted.values(), key=lambda b: b.Date))
        self.counts.update(outcome)
        return outcome

    def _put(self, code: str, bars: list[Bar]) -> bytes:
        """Store ``bars`` as one chunk of ``code`` and hold them; the chunk's key."""
        key = f"b|{code}|{bars[0].Date.isoformat()}".encode()
        self.store[key] = _store_chunk(bars)
        self._hold(code, key, bars)
        return key

    def _hold(self, code: str, key: bytes, bars: list[Bar]) -> None:
        """What a stored chunk adds to the derived state (on input, and on reindex)."""
        held = self._bars.setdefault(code, {})
        for bar in bars:
            if bar.Date not in self._per_date:
                self._open = None
            self._per_date[bar.Date] += bar.Date not in held
            held[bar.Date] = bar
        self._chunks.setdefault(code, []).append((bars[-1].Date, key))
        self._newest[code] = max(self._newest.get(code, bars[-1].Date), bars[-1].Date)

    def _rebase(self, code: str, new: dict[date, Bar], splits: list[tuple[date, float]]
                ) -> None:
        """Re-base everything held for ``code`` before each split, then store it as one chunk.

        The new chunk is written before the old ones are deleted: a worker killed in
        between leaves both in the table, and :meth:`reindex` lets the new one win (the
        other way round it would recover the symbol without the history it deleted)."""
        every = {**self._bars.get(code, {}), **new}
        for split_day, factor in splits:
            every = {d: (_rebased(b, factor) if d < split_day else b) for d, b in every.items()}
        stale = [key for _, key in self._chunks.pop(code, [])]
        self._per_date.subtract(self._bars.get(code, {}).keys())
        self._bars[code] = {}
        kept = self._put(code, sorted(every.values(), key=lambda b: b.Date))
        for key in stale:
            if key != kept:
                self.store.pop(key, None)

    def close(self, marker: DayClose) -> None:
        """Record a partition's end-of-day marker (a late one for a published day is ignored,
        one for a partition this window does not have is dropped: counted towards the
        ``partitions`` it would complete a day whose bars are not all in)."""
        if not 0 <= marker.partition < self.partitions:
            self.counts["bad_partition"] += 1
            return
        last = self.last_published
        if last is not None and marker.day <= last:
            self.counts["late_close"] += 1
            return
        flag = b"predict" if marker.predict else b"warm-up"
        if marker.first is not None and marker.first < marker.day:
            self.store[_range_key(marker.partition, marker.first, marker.day)] = flag
            self._ranges.append((marker.first, marker.day, marker.partition, marker.predict))
        else:
            self.store[_close_key(marker.day, marker.partition)] = flag
            self._closed.setdefault(marker.day, {})[marker.partition] = marker.predict
        self._open = None
        self._first_seen.setdefault(marker.day, self.clock())

    # -- days -----------------------------------------------------------------------------
    def ready(self) -> list[tuple[date, str]]:
        """Days to publish now, oldest first, each with why: ``complete`` (every partition
        sent its marker) or ``deadline`` (``deadline_s`` passed since it became the oldest
        open day, and since its first bar). A day waits for the days before it."""
        out = []
        now = self.clock()
        since = self._head_since
        for day in self.open_days():
            closed = self._closes(day)
            if len(closed) >= self.partitions:
                out.append((day, "complete"))
            elif now - max(self._first_seen.get(day, now), since) >= self.deadline_s:
                out.append((day, "deadline"))
            else:
                break
            since = now  # the next day is the oldest from now on
        return out

    def predicts(self, day: date) -> bool:
        """Whether ``day`` is to be predicted (False: a backfilled warm-up day)."""
        closed = self._closes(day)
        return not closed or any(closed.values())

    def _closes(self, day: date) -> dict[int, bool]:
        """The partitions whose markers closed ``day`` (its own, or a backfill's range)."""
        closed = self._closed.get(day, {})
        if not self._ranges:
            return closed
        closed = dict(closed)
        for first, last, partition, predict in self._ranges:
            if first <= day <= last:
                closed.setdefault(partition, predict)
        return closed

    def window(self, day: date) -> tuple[list[Bar], list[str]]:
        """The bars of the last ``sessions`` dates up to ``day`` (what the offline pipeline
        would read from files), and the symbols missing on ``day``: those with a bar on the
        session before it but none on it."""
        dates = [d for d in self.dates() if d <= day][-self.sessions:]
        keep = set(dates)
        rows = [bar for code in sorted(self._bars) for d, bar in sorted(self._bars[code].items())
                if d in keep]
        missing: list[str] = []
        if len(dates) >= 2 and dates[-1] == day:
            before = dates[-2]
            missing = sorted(code for code, held in self._bars.items()
                             if before in held and day not in held)
        return rows, missing

    def publish(self, day: date, missing: list[str]) -> None:
        """Mark ``day`` published (with its missing symbols) and drop what no later day needs."""
        self.store[_published_key(day)] = msgspec.json.encode(sorted(missing))
        self._published[day] = sorted(missing)
        self._open = None
        self.counts["missing"] += len(missing)
        self._head_since = self.clock()
        self._prune()

    def _prune(self) -> None:
        """Keep the last ``sessions`` dates up to the last published day, and what is newer."""
        last = self.last_published
        if last is None:
            return
        dates = [d for d in self.dates() if d <= last]
        if len(dates) <= self.sessions:
            return
        oldest = dates[-self.sessions]
        old = [d for d in dates if d < oldest]
        for code in list(self._bars):
            held = self._bars[code]
            for d in old:
                held.pop(d, None)
            chunks = self._chunks.get(code, [])
            if any(end < oldest for end, _ in chunks):
                for end, key in chunks:
                    if end < oldest:
                        self.store.pop(key, None)
                self._chunks[code] = [c for c in chunks if c[0] >= oldest]
            if not held:
                del self._bars[code]
                self._chunks.pop(code, None)
                self._newest.pop(code, None)
        for day in old:
            del self._per_date[day]
        for expired in [r for r in self._ranges if r[1] < oldest]:
            self._ranges.remove(expired)
            self.store.pop(_range_key(expired[2], expired[0], expired[1]), None)
        for day in [d for d in self._closed if d < oldest]:
            del self._closed[day]
            for partition in range(self.partitions):
                self.store.pop(_close_key(day, partition), None)
        for day in [d for d in self._published if d < oldest]:
            del self._published[day]
            self.store.pop(_published_key(day), None)
        for day in [d for d in self._first_seen if d <= last]:
            del self._first_seen[day]
        self._open = None
