"""The per-aggregate hash chain of the event store: its stored form and its verification.

Every event stored by :class:`infra.codec.CodecMapper` ends its JSON object with two
more keys, always last and always of the same length::

    {"schema_version":1,…,"prev_digest":"<64 hex>","digest":"<64 hex>"}

- ``prev_digest``: the ``digest`` of the aggregate's previous event (version - 1), or 64
  zeros for the first chained event of an aggregate (its version 1, or the first event
  written after an unchained prefix of events stored before the chain existed);
- ``digest``: BLAKE2b-256 of the topic, a newline, and the stored bytes up to (not
  including) ``,"digest":`` — so it covers the event's every field, its
  ``originator_id`` and ``originator_version`` (in the JSON), its topic (a column) and
  ``prev_digest``: changing any stored byte of an event, or the order of an aggregate's
  events, breaks the chain at that event.

The keys sit inside the JSON object, so the decoder (which knows the event's fields)
skips them and the bytes stay one JSON object on Kafka too. Verifying needs no JSON
parsing: the trailer has a fixed length and is sliced off.

This module knows bytes and digests only, no domain and no store: the store's walk is
:mod:`api.audit`'s.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from hashlib import blake2b
from typing import Any
from uuid import UUID

DIGEST_HEX = 64
GENESIS = "0" * DIGEST_HEX
"""``prev_digest`` of an aggregate's first chained event."""

_PREV_KEY = b',"prev_digest":"'
_DIGEST_KEY = b'","digest":"'
_END = b'"}'
TRAILER_LENGTH = len(_PREV_KEY) + DIGEST_HEX + len(_DIGEST_KEY) + DIGEST_HEX + len(_END)
_COVERED_TAIL = len(_DIGEST_KEY) - 1 + DIGEST_HEX + len(_END)  # bytes after the covered part
_OWN_AT = -(DIGEST_HEX + len(_END))  # where the digest starts, from the end
_DIGEST_AT = _OWN_AT - len(_DIGEST_KEY)


def digest_of(topic: str, covered: bytes) -> str:
    """The ``digest`` of an event whose stored bytes up to ``,"digest":`` are ``covered``."""
    return blake2b(topic.encode() + b"\n" + covered, digest_size=32).hexdigest()


def seal(topic: str, body: bytes, prev: str) -> tuple[bytes, str]:
    """``body`` (a JSON object's bytes, ending in ``}``) with the chain keys appended,
    chained after ``prev``; and the new event's digest.

    On the write path of every event. BLAKE2b (hashlib's own, not OpenSSL's): in the
    write path's own measurement SHA-256 through OpenSSL 3 cost about 5 us an event
    (context set-up), BLAKE2b too little to tell from the run-to-run noise."""
    covered = body[:-1] + _PREV_KEY + prev.encode() + b'"'
    own = blake2b(topic.encode() + b"\n" + covered, digest_size=32).hexdigest()
    return covered + _DIGEST_KEY[1:] + own.encode() + _END, own


def head_of(state: bytes) -> str | None:
    """The ``digest`` of stored bytes, or None when they carry no chain: what an event
    read from the store hands its aggregate as the chain head (the read path's check is
    only where the keys are; :func:`verify_rows` checks the digests)."""
    if state[_DIGEST_AT:_OWN_AT] == _DIGEST_KEY:
        return state[_OWN_AT:-2].decode("ascii", "replace")
    return None


def links(state: bytes) -> tuple[str, str] | None:
    """(``prev_digest``, ``digest``) of stored bytes, or None when they carry no chain
    (an event stored before the chain existed). Only the keys' places are checked: a
    digest that is not what it should be is for :func:`verify_rows` to find."""
    n = len(state)
    if n <= TRAILER_LENGTH or not state.endswith(_END):
        return None
    start = n - TRAILER_LENGTH
    prev_at = start + len(_PREV_KEY)
    own_at = prev_at + DIGEST_HEX + len(_DIGEST_KEY)
    if (state[start:prev_at] != _PREV_KEY
            or state[prev_at + DIGEST_HEX:own_at] != _DIGEST_KEY):
        return None
    return (bytes(state[prev_at:prev_at + DIGEST_HEX]).decode("latin-1"),
            bytes(state[own_at:own_at + DIGEST_HEX]).decode("latin-1"))


def strip(state: bytes) -> bytes:
    """The JSON object without its chain keys (the bytes as before the chain)."""
    return state[:-TRAILER_LENGTH] + b"}" if links(state) is not None else state


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong in the store: what, which aggregate, where."""

    kind: str  # "tampered" | "missing" | "reordered"
    aggregate_id: str
    version: int
    position: int | None  # the notification id (None for versions that are missing)
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "aggregate_id": self.aggregate_id,
                "version": self.version, "position": self.position, "detail": self.detail}


@dataclass(slots=True)
class _Trail:
    version: int = 0
    digest: bytes | None = None  # None: no chained event yet (genesis or unchained prefix)
    missing: set[int] = field(default_factory=set)


@dataclass
class ChainReport:
    """What :func:`verify_rows` found."""

    events: int = 0
    aggregates: int = 0
    chained: int = 0
    unchained_prefix: int = 0  # events stored before the chain existed, each at its start
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "events": self.events, "aggregates": self.aggregates,
                "chained": self.chained, "unchained_prefix": self.unchained_prefix,
                "problems": [p.as_dict() for p in self.problems]}


Row = tuple[int | None, UUID | str, int, str, bytes]
"""(notification id or None, aggregate id, version, topic, stored state)."""


def verify_rows(rows: Iterable[Row]) -> ChainReport:
    """Check the chain of every aggregate in ``rows`` (in notification order, or one
    aggregate's rows in version order).

    Per aggregate: versions must follow each other (a version that never shows is
    *missing*; one that comes after a higher one is *reordered*), every chained event's
    digest must match its bytes (else *tampered*) and name its predecessor's digest
    (else *reordered*: intact, but not stored after the event it was written after),
    and once an aggregate's events are chained they stay chained (an unchained event
    after a chained one had its chain stripped: *tampered*). Events without a chain
    before the first chained one are the unchained prefix: counted, not a problem.

    The loop is the verifier's whole cost beside reading the rows, so it slices the
    fixed-length trailer in place and hashes through a per-topic prefix copy.
    """
    report = ChainReport()
    trails: dict[UUID | str, _Trail] = {}
    problems = report.problems
    genesis = GENESIS.encode()
    prefixes: dict[str, Any] = {}
    events = unchained = 0
    digest_key, end, tail = _DIGEST_KEY, _END, _COVERED_TAIL
    prev_from = len(_PREV_KEY) - TRAILER_LENGTH
    prev_end = prev_from + DIGEST_HEX
    own_from = prev_end + len(_DIGEST_KEY)
    own_end = own_from + DIGEST_HEX
    for position, aggregate_id, version, topic, state in rows:
        events += 1
        trail = trails.get(aggregate_id)
        if trail is None:
            trail = trails[aggregate_id] = _Trail()
        in_order = version == trail.version + 1
        if in_order:
            trail.version = version
        else:
            _out_of_order(trail, aggregate_id, version, position, problems)
        if state[prev_end:own_from] != digest_key or not state.endswith(end):
            if trail.digest is not None:
                problems.append(Problem("tampered", _canonical(aggregate_id), version,
                                        position, "no chain keys after chained events "
                                        "(stripped)"))
            else:
                unchained += 1
            continue
        prefix = prefixes.get(topic)
        if prefix is None:
            prefix = prefixes[topic] = blake2b(topic.encode() + b"\n", digest_size=32)
        h = prefix.copy()
        h.update(state[:-tail])
        own = state[own_from:own_end]
        if h.hexdigest().encode() != own:
            problems.append(Problem("tampered", _canonical(aggregate_id), version, position,
                                    "digest does not match the stored bytes"))
        elif in_order and state[prev_from:prev_end] != (trail.digest or genesis):
            problems.append(Problem("reordered", _canonical(aggregate_id), version, position,
                                    f"does not chain to version {version - 1} "
                                    "(prev_digest differs)"))
        trail.digest = own
    chained = events - unchained - sum(1 for p in problems if p.detail.startswith("no chain"))
    report.events, report.chained, report.unchained_prefix = events, chained, unchained
    report.aggregates = len(trails)
    for aggregate_id, trail in trails.items():
        for version in sorted(trail.missing):
            problems.append(Problem("missing", _canonical(aggregate_id), version, None,
                                    f"version {version} is not stored (the aggregate has "
                                    f"versions up to {trail.version})"))
    return report


def _out_of_order(trail: _Trail, aggregate_id: UUID | str, version: int,
                  position: int | None, problems: list[Problem]) -> None:
    """A version that is not the next one: note the gap, or report it reordered."""
    expected = trail.version + 1
    if version > expected:
        trail.missing.update(range(expected, version))
        trail.version = version
        return
    again = version not in trail.missing
    trail.missing.discard(version)
    problems.append(Problem(
        "reordered", _canonical(aggregate_id), version, position,
        f"version {version} {'again' if again else 'stored'} after version {trail.version}"))


def _canonical(aggregate_id: UUID | str) -> str:
    """The id as a canonical UUID string (stores differ: SQLite keeps hex)."""
    try:
        return str(UUID(str(aggregate_id)))
    except ValueError:
        return str(aggregate_id)
