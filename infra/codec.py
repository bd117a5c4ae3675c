"""The event codec: one versioned JSON form for every stored event, fast both ways.

The same bytes are stored in the event store (SQLite or PostgreSQL) and sent on
Kafka; ``encode`` and ``decode`` are usable outside the event store for that. The form
is a flat JSON object, ``schema_version`` first, then the event's fields:

    {"schema_version":1,"originator_id":"0f6c…-…","originator_version":3,
     "timestamp":"2026-11-20T00:01:02.000000Z","principal":"trader-1",…,"quantity":100}

- ``schema_version``: the event class's ``class_version`` (1 when it has none);
- UUIDs as canonical strings (``"0f6c9c8e-1b2a-4c3d-9e8f-0a1b2c3d4e5f"``);
- datetimes ISO 8601 in UTC with microseconds and ``Z`` (always 27 characters);
- ints as JSON ints (money and quantities are ints), enums as their values, ``None``
  as ``null``; fields typed ``Any`` (``dict[str, Any]``, ``list[dict]``) hold plain JSON.

Why a mapper, not a transcoder: eventsourcing's ``Transcoder`` sees the event's state
dict but not its class, so it can neither write the ``schema_version`` of a version-1
event nor decode with the field types. :class:`CodecMapper` (a public ``Mapper``
subclass overriding only its public ``to_stored_event``/``to_domain_event``) is set by
the factory env ``MAPPER_TOPIC`` (see :func:`infra.eventstore.eventsourcing_env`).

Decoding is typed: msgspec parses the bytes straight into the field types derived from
the event class's annotations (UUID, datetime, int, str, …), in C, and rejects a value
of the wrong type with the field's path. Encoding checks the values against the same
types before anything is stored, so an event that was stored can be read back.

Versions and upcasting use eventsourcing's own convention: an event class sets
``class_version = N`` and defines ``upcast_v1_v2(state)``, …, ``upcast_vN-1_vN(state)``
static methods that change the stored JSON object of the older version in place (add
a field with its default, rename, …). Upcasters see plain JSON values (UUIDs and
datetimes as strings), whichever stored form the event came from.

Old forms still load: events stored by the library's default transcoder (commit
d07d3ea and before: tagged ``{"_type_": "uuid_hex", "_data_": …}`` values, no
``schema_version``, ``class_version`` only when above 1) are decoded by that
transcoder, then upcast and typed like the rest.

Snapshots (``eventsourcing.domain.Snapshot``, the snapshot store, never published)
carry an aggregate's whole ``__dict__`` in ``state``: there UUIDs, datetimes,
decimals, enums and sets keep their Python types through ``{"_type_", "_data_"}``
tags, since no annotation says what they are.

In the event store, :class:`CodecMapper` also seals every event (not snapshots) into
its aggregate's hash chain (:mod:`infra.chain`: two keys appended to the object,
``prev_digest`` and ``digest``), in the same transaction as the event, and hands the
digest of an event it reads back to the aggregate (``_chain``) as its chain head.

This module knows no domain: event classes are looked up by topic
(``module:Qualname``) with eventsourcing's ``resolve_topic``.
"""

from __future__ import annotations

import typing
from collections.abc import Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from enum import Enum
from types import NoneType, UnionType
from typing import Annotated, Any, ClassVar, TypeVar, cast
from uuid import UUID

import msgspec
from eventsourcing.domain import CanSnapshotAggregate, EventSourcingError
from eventsourcing.persistence import (
    Cipher,
    Compressor,
    DatetimeAsISO,
    DecimalAsStr,
    JSONTranscoder,
    Mapper,
    MapperDeserialisationError,
    StoredEvent,
    Transcoder,
    Transcoding,
    UUIDAsHex,
)
from eventsourcing.utils import get_topic, resolve_topic

from infra.chain import GENESIS, head_of, seal

__all__ = [
    "MAPPER_TOPIC",
    "SCHEMA_VERSION",
    "CodecMapper",
    "EventCodec",
    "EventDecodingError",
    "EventEncodingError",
    "EventSchema",
    "codec",
    "decode",
    "encode",
]

SCHEMA_VERSION = "schema_version"
"""The key of the event type's version in every stored JSON object (always first)."""

MAPPER_TOPIC = "infra.codec:CodecMapper"
"""The value of eventsourcing's ``MAPPER_TOPIC`` env that stores events in this form."""

_PREFIX = b'{"' + SCHEMA_VERSION.encode() + b'":'
_AwareDatetime = Annotated[datetime, msgspec.Meta(tz=True)]
_asdict = msgspec.structs.asdict
_convert = msgspec.convert
_new = object.__new__
_setattr = object.__setattr__


class EventEncodingError(EventSourcingError, ValueError):
    """An event that cannot be stored in the contract's form; names the field and rule."""


class EventDecodingError(MapperDeserialisationError):
    """Stored bytes that do not decode to their event type; names the field and rule."""


@dataclass(frozen=True, slots=True)
class EventSchema:
    """What the codec knows of one event class, derived from its annotations."""

    cls: type[Any]
    topic: str
    version: int
    fields: Mapping[str, Any]  # field name -> annotation (resolved; originator_id concrete)
    datetime_fields: tuple[str, ...]
    tagged_fields: tuple[str, ...]  # values that keep their Python types (snapshot state)
    struct: type[msgspec.Struct]
    decoder: msgspec.json.Decoder[Any]
    prefix: bytes  # how its current version's bytes start: b'{"schema_version":N,'

    @property
    def name(self) -> str:
        """``Order.Placed`` for ``aggregates.order:Order.Placed``."""
        return self.topic.rpartition(":")[2]


class EventCodec:
    """Encodes domain events to the contract's JSON bytes and back.

    One instance caches a schema per event class; it is safe to share between threads
    (a schema is built at most a few times on a race, each build the same).
    ``validate=False`` skips the check of the values against the field types (what
    decoding will insist on; a sixth of the encode time): keep it on wherever events
    are stored, or a wrongly typed event could be stored and never read back.
    """

    def __init__(self, *, legacy: JSONTranscoder | None = None, validate: bool = True) -> None:
        self.validate = validate
        self._by_class: dict[type[Any], EventSchema] = {}
        self._by_topic: dict[str, EventSchema] = {}
        self._encoder = msgspec.json.Encoder()
        self._plain = msgspec.json.Decoder()
        self._legacy = _legacy_transcoder(legacy)

    # -- public ------------------------------------------------------------------------
    def schema(self, cls: type[Any]) -> EventSchema:
        """The schema of an event class (built on first use; raises ``TypeError`` when an
        annotation has no JSON form or an upcaster of its version chain is missing)."""
        schema = self._by_class.get(cls)
        if schema is None:
            schema = _build_schema(cls)
            self._by_class[cls] = schema
            self._by_topic.setdefault(schema.topic, schema)
        return schema

    def schema_for_topic(self, topic: str) -> EventSchema:
        schema = self._by_topic.get(topic)
        if schema is None:
            try:
                cls = resolve_topic(topic)
            except Exception as exc:
                raise EventDecodingError(f"{topic}: no event class for this topic ({exc})"
                                         ) from exc
            schema = self.schema(cls)
            self._by_topic[topic] = schema  # a renamed topic (register_topic) maps here too
        return schema

    def encode(self, event: Any) -> bytes:
        """The event as the contract's JSON bytes (``schema_version`` first)."""
        cls = type(event)
        schema = self._by_class.get(cls) or self.schema(cls)
        state: dict[str, Any] = {SCHEMA_VERSION: schema.version}
        state.update(event.__dict__)
        if "_chain" in state:  # an event read from the store: its digest, not a field
            state.pop("_chain")
        for name in schema.datetime_fields:
            value = state.get(name)
            # msgspec writes an aware UTC datetime as we want unless its microsecond is 0
            # (it drops the fraction then): format only what it would not.
            if value is not None and not (
                value.__class__ is datetime and value.tzinfo is UTC and value.microsecond
            ):
                state[name] = _iso(value, f"{schema.name}: {name}")
        for name in schema.tagged_fields:
            if name in state:
                state[name] = _tag(state[name], schema, name)
        if self.validate:  # the field types, as decode will read them back
            try:
                _convert(state, schema.struct)
            except msgspec.ValidationError as exc:
                raise EventEncodingError(f"cannot store {schema.name}: {_explain(exc)}"
                                         ) from None
        try:
            return self._encoder.encode(state)
        except (TypeError, ValueError, OverflowError) as exc:
            raise EventEncodingError(f"cannot store {schema.name}: {exc}") from exc

    def decode(
        self,
        topic: str,
        data: bytes,
        *,
        originator_id: UUID | str | None = None,
        originator_version: int | None = None,
    ) -> Any:
        """The event of type ``topic`` stored as ``data``, upcast to the current version.

        ``originator_id``/``originator_version`` (the store's columns) are needed only
        for the old form, whose bytes do not carry them; the contract's form does.
        """
        schema = self._by_topic.get(topic) or self.schema_for_topic(topic)
        try:
            if data.__class__ is bytes and data.startswith(schema.prefix):  # the common case
                state = _asdict(schema.decoder.decode(data))
            else:
                state = self._decode_other(schema, bytes(data), originator_id,
                                           originator_version)
            for name in schema.tagged_fields:
                state[name] = _untag(state[name])
        except EventDecodingError:
            raise
        except (msgspec.ValidationError, msgspec.DecodeError, ValueError, TypeError,
                KeyError, AttributeError) as exc:
            where = "" if originator_id is None else f" ({originator_id} v{originator_version})"
            raise EventDecodingError(
                f"cannot read {schema.name}{where}: {_explain(exc)}"
            ) from exc
        event = _new(schema.cls)
        _setattr(event, "__dict__", state)
        return event

    # -- internals -----------------------------------------------------------------------
    def _decode_other(
        self, schema: EventSchema, data: bytes, originator_id: UUID | str | None,
        originator_version: int | None,
    ) -> dict[str, Any]:
        """Another version of the contract's form, or the old form."""
        if data.startswith(schema.prefix):
            return _asdict(schema.decoder.decode(data))
        if data.startswith(_PREFIX):
            state = self._plain.decode(data)
            return self._upgrade(schema, state, state.pop(SCHEMA_VERSION))
        return self._decode_legacy(schema, data, originator_id, originator_version)

    def _decode_legacy(
        self, schema: EventSchema, data: bytes, originator_id: UUID | str | None,
        originator_version: int | None,
    ) -> dict[str, Any]:
        """The library default transcoder's form (no ``schema_version``)."""
        state = self._legacy.decode(data)
        if not isinstance(state, dict):
            raise ValueError("expected a JSON object")
        version = state.pop("class_version", 1)
        if SCHEMA_VERSION in state:  # the contract's form, keys reordered by another writer
            version = state.pop(SCHEMA_VERSION)
        tagged = {name: _tag(state.pop(name), schema, name)
                  for name in schema.tagged_fields if name in state}
        state = msgspec.to_builtins(state)  # upcasters see JSON values, whatever the form
        state.update(tagged)
        if "originator_id" not in state:
            if originator_id is None or originator_version is None:
                raise ValueError("the old stored form needs originator_id and "
                                 "originator_version (the store's columns)")
            state["originator_id"] = str(originator_id)
            state["originator_version"] = originator_version
        return self._upgrade(schema, state, version)

    def _upgrade(self, schema: EventSchema, state: dict[str, Any], version: Any
                 ) -> dict[str, Any]:
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise ValueError(f"{SCHEMA_VERSION}: a positive integer, got {version!r}")
        if version > schema.version:
            raise EventDecodingError(
                f"cannot read {schema.name}: stored {SCHEMA_VERSION} {version} is newer "
                f"than this code's {schema.version} (deploy the newer code to read it)"
            )
        while version < schema.version:
            upcast: Callable[[dict[str, Any]], None] = getattr(
                schema.cls, f"upcast_v{version}_v{version + 1}"
            )
            upcast(state)
            version += 1
        return _asdict(msgspec.convert(state, schema.struct))


# -- the eventsourcing seam --------------------------------------------------------------


class CodecMapper(Mapper[UUID]):
    """eventsourcing's mapper storing events in the codec's form; set it with the factory
    env ``MAPPER_TOPIC=infra.codec:CodecMapper``. A cipher and a compressor configured
    in the env (``CIPHER_TOPIC``, ``COMPRESSOR_TOPIC``) still apply, as in the library.

    The transcoder the factory passes is used only for events in the old stored form
    (its registered transcodings are added to the library's standard ones).
    """

    def __init__(
        self,
        transcoder: Transcoder,
        compressor: Compressor | None = None,
        cipher: Cipher | None = None,
    ) -> None:
        super().__init__(transcoder, compressor=compressor, cipher=cipher)
        self.codec = EventCodec(
            legacy=transcoder if isinstance(transcoder, JSONTranscoder) else None
        )
        # aggregate id -> (version, digest) of events sealed without a chain holder
        self._loose: dict[Any, tuple[int, str]] = {}

    def to_stored_event(self, domain_event: Any) -> StoredEvent:
        state = self.codec.encode(domain_event)
        topic = self.codec.schema(type(domain_event)).topic
        if not isinstance(domain_event, CanSnapshotAggregate):  # snapshots: a cache
            state = self._chained(domain_event, topic, state)
        if self.compressor:
            state = self.compressor.compress(state)
        if self.cipher:
            state = self.cipher.encrypt(state)
        return StoredEvent(
            originator_id=domain_event.originator_id,
            originator_version=domain_event.originator_version,
            topic=topic,
            state=state,
        )

    def _chained(self, domain_event: Any, topic: str, body: bytes) -> bytes:
        """``body`` sealed into its aggregate's hash chain (see :mod:`infra.chain`).

        The predecessor's digest is the head kept by what the event class's
        ``_chain_holders`` names for the event's (aggregate id, version): the aggregate
        that collected it, or a stage's per-stream head; absent for a stream's
        first chained event; the new digest is written back there, so the next event of
        the stream follows it without a read. An event pointing at nothing (events
        copied from another store through this mapper) follows the last one this mapper
        sealed for the same aggregate, when that was its previous version."""
        key, version = domain_event.originator_id, domain_event.originator_version
        holders = getattr(domain_event, "_chain_holders", None)
        holder = None if holders is None else holders.pop((key, version), None)
        if holder is not None:
            prev = holder.__dict__.get("_chain")
            sealed, own = seal(topic, body, prev or GENESIS)
            holder.__dict__["_chain"] = own
            return sealed
        last = self._loose.get(key)
        prev = last[1] if last is not None and last[0] == version - 1 else GENESIS
        sealed, own = seal(topic, body, prev)
        if len(self._loose) >= 100_000:
            self._loose.clear()
        self._loose[key] = (version, own)
        return sealed

    def to_domain_event(self, stored_event: StoredEvent) -> Any:
        state = stored_event.state
        if self.cipher:
            state = self.cipher.decrypt(state)
        if self.compressor:
            state = self.compressor.decompress(state)
        event = self.codec.decode(
            stored_event.topic,
            state,
            originator_id=stored_event.originator_id,
            originator_version=stored_event.originator_version,
        )
        head = head_of(state)
        if head is not None:  # the aggregate's chain head once applied (TradingAggregate)
            event.__dict__["_chain"] = head
        return event


# -- schemas -----------------------------------------------------------------------------


def _build_schema(cls: type[Any]) -> EventSchema:
    topic = get_topic(cls)
    version = getattr(cls, "class_version", 1)
    if not isinstance(version, int) or version < 1:
        raise TypeError(f"{topic}: class_version must be a positive int, got {version!r}")
    missing = [f"upcast_v{v}_v{v + 1}" for v in range(1, version)
               if not callable(getattr(cls, f"upcast_v{v}_v{v + 1}", None))]
    if missing:
        raise TypeError(f"{topic}: class_version {version} needs static methods {missing}")
    try:
        hints = typing.get_type_hints(cls)
    except Exception as exc:
        raise TypeError(f"{topic}: cannot resolve the field annotations ({exc})") from exc
    fields: dict[str, Any] = {}
    for name, hint in hints.items():
        if typing.get_origin(hint) is ClassVar or hint is ClassVar or name.startswith("_"):
            continue
        if name == SCHEMA_VERSION:
            raise TypeError(f"{topic}: {SCHEMA_VERSION!r} is the codec's key, not a field")
        if isinstance(hint, TypeVar):  # eventsourcing's generic originator_id
            hint = getattr(cls, "originator_id_type", None) or UUID
        fields[name] = hint
    tagged = ("state",) if issubclass(cls, CanSnapshotAggregate) else ()
    datetimes = tuple(name for name, hint in fields.items() if _is_datetime(hint))
    members = [
        (name, Any if name in tagged else _AwareDatetime if name in datetimes else hint)
        for name, hint in fields.items()
    ]
    try:
        struct = msgspec.defstruct(cls.__qualname__, members, gc=False)
        decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(struct)
    except TypeError as exc:
        raise TypeError(f"{topic}: a field's annotation has no JSON form ({exc})") from exc
    prefix = _PREFIX + b"%d," % version
    return EventSchema(cls, topic, version, fields, datetimes, tagged, struct, decoder, prefix)


def _is_datetime(hint: Any) -> bool:
    if hint is datetime:
        return True
    if typing.get_origin(hint) in (typing.Union, UnionType):
        args = typing.get_args(hint)
        return datetime in args and all(a in (datetime, NoneType) for a in args)
    return False


def _iso(value: Any, where: str) -> str:
    """ISO 8601 in UTC with microseconds and ``Z``; ``where`` names the field in errors."""
    if not isinstance(value, datetime):
        raise EventEncodingError(f"cannot store {where}: expected a datetime, "
                                 f"got {type(value).__name__}")
    offset = value.utcoffset()
    if offset is None:
        raise EventEncodingError(f"cannot store {where}: a timezone-aware datetime (UTC), "
                                 f"got naive {value.isoformat()}")
    if offset or value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    return value.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def _explain(exc: BaseException) -> str:
    """msgspec's "Expected `int`, got `float` - at `$.price`" as "price: expected …"."""
    text = str(exc)
    message, sep, path = text.rpartition(" - at `$")
    if sep:
        field = path.rstrip("`").lstrip(".")
        return f"{field}: {message[:1].lower()}{message[1:]}"
    return text


def _legacy_transcoder(given: JSONTranscoder | None) -> JSONTranscoder:
    """The library default transcoder as ``Application`` sets it up, plus ``given``'s."""
    transcoder = JSONTranscoder()
    standard: list[Transcoding] = [UUIDAsHex(), DecimalAsStr(), DatetimeAsISO()]
    for transcoding in [*standard, *(given.types.values() if given is not None else ())]:
        transcoder.register(transcoding)
    return transcoder


# -- tagged values (snapshot state) ------------------------------------------------------

_PLAIN = (str, int, float, bool, NoneType)


def _tag(value: Any, schema: EventSchema | None = None, field: str = "state") -> Any:
    """``value`` as JSON, non-JSON types as ``{"_type_": kind, "_data_": …}``."""
    kind = value.__class__
    if kind in _PLAIN:
        return value
    if kind is dict:
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                name = schema.name if schema else "snapshot"
                raise EventEncodingError(f"cannot store {name}: {field}: keys must be "
                                         f"strings, got {type(key).__name__} {key!r}")
            out[key] = _tag(item, schema, f"{field}.{key}")
        return out
    if kind is list or kind is tuple:
        return [_tag(item, schema, field) for item in value]
    if isinstance(value, UUID):
        return {"_type_": "uuid", "_data_": str(value)}
    if isinstance(value, datetime):
        # as it is (offset or naive): an aggregate's state comes back exactly
        return {"_type_": "datetime", "_data_": value.isoformat(timespec="microseconds")}
    if isinstance(value, Enum):
        return {"_type_": "enum", "_data_": {"topic": get_topic(type(value)),
                                               "value": _tag(value.value, schema, field)}}
    if isinstance(value, Decimal):
        return {"_type_": "decimal", "_data_": str(value)}
    if isinstance(value, set | frozenset):
        items = [_tag(item, schema, field) for item in value]
        with suppress(TypeError):  # sorted when comparable: the same set, the same bytes
            items.sort()
        return {"_type_": "set", "_data_": items}
    if isinstance(value, _PLAIN):  # a subclass of str/int (not an enum)
        return value
    name = schema.name if schema else "snapshot"
    raise EventEncodingError(f"cannot store {name}: {field}: no JSON form for "
                             f"{type(value).__name__}")


def _untag(value: Any) -> Any:
    kind = value.__class__
    if kind is dict:
        if len(value) == 2 and "_type_" in value and "_data_" in value:
            return _UNTAG[value["_type_"]](value["_data_"])
        return {key: _untag(item) for key, item in value.items()}
    if kind is list:
        return [_untag(item) for item in value]
    return value


def _enum(data: dict[str, Any]) -> Enum:
    return cast(Enum, resolve_topic(data["topic"])(_untag(data["value"])))


_UNTAG: dict[str, Callable[[Any], Any]] = {
    "uuid": UUID,
    "datetime": datetime.fromisoformat,
    "decimal": Decimal,
    "set": lambda items: {_untag(item) for item in items},
    "enum": _enum,
}


# -- the process-wide codec -------------------------------------------------------------

codec = EventCodec()
"""The process-wide codec for use outside the event store (Kafka, fixtures, tools)."""


def encode(event: Any) -> bytes:
    """``event`` in the contract's JSON form: the bytes the store and Kafka carry."""
    return codec.encode(event)


def decode(topic: str, data: bytes) -> Any:
    """The event of type ``topic`` (``module:Qualname``) from the contract's bytes."""
    return codec.decode(topic, data)
