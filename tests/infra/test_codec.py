"""The event contract: the stored JSON form, its types, versions and upcasting."""

from __future__ import annotations

import json
import typing
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from types import NoneType, UnionType
from typing import Any
from uuid import UUID, uuid4

import pytest
from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, Snapshot, event
from eventsourcing.persistence import (
    DatetimeAsISO,
    DecimalAsStr,
    JSONTranscoder,
    Mapper,
    UUIDAsHex,
)

from aggregates.account import Account
from aggregates.base import Meta
from aggregates.order import Order, OrderType, Side, TimeInForce
from aggregates.position import Position
from api.cli.catalogue import all_event_classes
from infra import codec as codec_module
from infra.codec import (
    SCHEMA_VERSION,
    CodecMapper,
    EventCodec,
    EventDecodingError,
    EventEncodingError,
    decode,
    encode,
)
from infra.eventstore import eventsourcing_env
from infra.settings import Settings

ISO_UTC = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$"


def placed(**changes: Any) -> Any:
    order = Order.place(
        uuid4(), account_id=uuid4(), client_order_id="c-1", symbol="7203", side=Side.BUY,
        order_type=OrderType.LIMIT, tif=TimeInForce.DAY, quantity=100, price=25_000,
        meta=Meta.command("trader-1"),
    )
    event_ = order.collect_events()[0]
    event_.__dict__.update(changes)
    return event_


def library_mapper() -> Mapper[UUID]:
    transcoder = JSONTranscoder()
    for transcoding in (UUIDAsHex(), DecimalAsStr(), DatetimeAsISO()):
        transcoder.register(transcoding)
    return Mapper(transcoder)


# -- the form ----------------------------------------------------------------------------


def test_stored_form_is_flat_json_with_schema_version_first_and_canonical_values() -> None:
    e = placed()
    data = encode(e)
    version = getattr(Order.Placed, "class_version", 1)
    assert data.startswith(b'{"schema_version":%d,' % version)
    obj = json.loads(data)
    assert obj["originator_id"] == str(e.originator_id)  # canonical, with dashes
    assert obj["account_id"] == str(e.account_id)
    assert obj["originator_version"] == 1
    assert obj["quantity"] == 100 and obj["price"] == 25_000
    assert obj["side"] == "buy" and obj["tif"] == "day"  # enums as their values
    assert obj["timestamp"] == e.timestamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert set(obj) == {SCHEMA_VERSION, *vars(e)}


def test_enums_are_stored_as_their_values() -> None:
    data = encode(placed(side=Side.SELL, tif=TimeInForce.IOC))
    assert b'"side":"sell"' in data and b'"tif":"ioc"' in data
    assert decode("aggregates.order:Order.Placed", data).side == "sell"


@pytest.mark.parametrize("when", [
    datetime(2026, 11, 20, 0, 1, 2, tzinfo=UTC),  # microsecond 0: still six digits
    datetime(2026, 11, 20, 9, 1, 2, 5, tzinfo=timezone(timedelta(hours=9))),  # JST
])
def test_times_are_utc_with_microseconds(when: datetime) -> None:
    data = encode(placed(timestamp=when))
    stamp = json.loads(data)["timestamp"]
    assert len(stamp) == 27 and stamp.endswith("Z")
    assert datetime.fromisoformat(stamp) == when
    back = decode("aggregates.order:Order.Placed", data)
    assert back.timestamp == when and back.timestamp.tzinfo is UTC


def test_every_event_type_round_trips_with_its_field_types() -> None:
    """Every event class the store can hold (the catalogue's list), Venue.Reported too."""
    classes = all_event_classes()
    assert any(c.__qualname__ == "Venue.Reported" for c in classes)
    for cls in classes:
        values = {name: _sample(name, hint)
                  for name, hint in codec_module.codec.schema(cls).fields.items()}
        original = cls(**values)
        back = decode(codec_module.codec.schema(cls).topic, encode(original))
        assert type(back) is cls
        assert vars(back) == vars(original), cls
        assert {k: type(v) for k, v in vars(back).items()} == \
            {k: type(v) for k, v in vars(original).items()}, cls


def test_venue_report_keeps_its_lists_and_depth_as_json() -> None:
    from aggregates.venue import Venue

    report = {"kind": "fill", "execution_id": "7203:12:0", "price": 25_000,
              "quantity": 100, "taker": str(uuid4()), "maker": str(uuid4())}
    depth = {"bids": [[24_990, 300, 2]], "asks": [[25_010, 100, 1]]}
    reported: Any = Venue.Reported  # a dataclass made by eventsourcing's metaclass
    e = reported(originator_id=uuid4(), originator_version=3, timestamp=datetime.now(UTC),
                 principal="venue", command_id="m", correlation_id="m", causation_id="m",
                 symbol="7203", sequence=12, command="new", order_id=uuid4(),
                 reports=[report], last_price=25_000, depth=depth)
    back = decode("aggregates.venue:Venue.Reported", encode(e))
    assert back.reports == [report] and back.depth == depth and back.order_id == e.order_id


# -- types are checked both ways ---------------------------------------------------------


@pytest.mark.parametrize(("field", "value", "rule"), [
    ("price", 25_000.5, "price: expected `int`, got `float`"),
    ("quantity", True, "quantity: expected `int`, got `bool`"),
    ("quantity", "100", "quantity: expected `int`, got `str`"),
    ("account_id", 12, "account_id: expected `uuid`, got `int`"),
    ("timestamp", datetime(2026, 11, 20), "timestamp: a timezone-aware datetime"),
])
def test_an_event_with_a_wrong_type_is_refused_before_it_is_stored(
    field: str, value: Any, rule: str
) -> None:
    with pytest.raises(EventEncodingError, match=f"Order.Placed: {rule}"):
        encode(placed(**{field: value}))


def test_bytes_of_the_wrong_shape_name_the_field() -> None:
    obj = json.loads(encode(placed()))
    obj["quantity"] = "100"
    with pytest.raises(EventDecodingError, match="quantity: expected `int`, got `str`"):
        decode("aggregates.order:Order.Placed", json.dumps(obj).encode())
    del obj["quantity"]
    with pytest.raises(EventDecodingError, match="quantity"):
        decode("aggregates.order:Order.Placed", json.dumps(obj).encode())
    with pytest.raises(EventDecodingError, match="no event class"):
        decode("aggregates.order:Order.Nothing", encode(placed()))


# -- versions and upcasting (test-only event classes) ------------------------------------


class Parcel(Aggregate):
    """Version 1 of a test-only aggregate: what old code stored."""

    class Weighed(Aggregate.Event):
        grams: int

    @event(Weighed)
    def weigh(self, grams: int) -> None:
        self.grams = grams


class ParcelNow(Aggregate):
    """The same event two versions later: v2 added ``tare``, v3 renamed grams."""

    class Weighed(Aggregate.Event):
        class_version = 3
        net_grams: int
        tare: int | None

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["tare"] = None

        @staticmethod
        def upcast_v2_v3(state: dict[str, Any]) -> None:
            state["net_grams"] = state.pop("grams")


NOW = "tests.infra.test_codec:ParcelNow.Weighed"


def _weighed_v1() -> Any:
    parcel = Parcel()
    parcel.weigh(1_200)
    return parcel.collect_events()[1]


def test_schema_version_is_the_class_version() -> None:
    assert encode(_weighed_v1()).startswith(b'{"schema_version":1,')
    weighed: Any = ParcelNow.Weighed
    now = weighed(originator_id=uuid4(), originator_version=2,
                  timestamp=datetime.now(UTC), net_grams=5, tare=1)
    assert encode(now).startswith(b'{"schema_version":3,')
    assert decode(NOW, encode(now)).__dict__ == now.__dict__


def test_events_stored_at_older_versions_are_upcast_through_every_step() -> None:
    old = _weighed_v1()
    back = decode(NOW, encode(old))  # stored by the v1 code in the contract's form
    assert type(back) is ParcelNow.Weighed
    assert (back.net_grams, back.tare) == (1_200, None)
    assert back.originator_id == old.originator_id and back.timestamp == old.timestamp


def test_events_stored_by_the_library_default_form_are_upcast_too() -> None:
    old = _weighed_v1()
    stored = library_mapper().to_stored_event(old)  # no schema_version: d07d3ea's form
    assert SCHEMA_VERSION.encode() not in stored.state
    back = CodecMapper(JSONTranscoder()).codec.decode(
        NOW, stored.state, originator_id=stored.originator_id,
        originator_version=stored.originator_version)
    assert (back.net_grams, back.tare, back.originator_id) == (1_200, None, old.originator_id)


def test_a_version_newer_than_the_code_is_refused_clearly() -> None:
    obj = json.loads(encode(_weighed_v1()))
    obj[SCHEMA_VERSION] = 4
    data = b'{"schema_version":4,' + json.dumps(obj).encode()[len('{"schema_version": 4,'):]
    with pytest.raises(EventDecodingError, match="stored schema_version 4 is newer than"):
        decode(NOW, data)


def test_a_version_without_its_upcasters_is_refused_when_first_used() -> None:
    class Broken(Aggregate):
        class Happened(Aggregate.Event):
            class_version = 2

    with pytest.raises(TypeError, match=r"needs static methods \['upcast_v1_v2'\]"):
        EventCodec().schema(Broken.Happened)


def test_order_placed_v2_when_present_reads_v1_with_no_reservation() -> None:
    """Active once Order.Placed is at version 2 (reserved_funds / reserved_shares)."""
    if getattr(Order.Placed, "class_version", 1) < 2:
        pytest.skip("Order.Placed is still at version 1")
    v1 = {k: v for k, v in json.loads(encode(placed())).items()
          if k not in ("reserved_funds", "reserved_shares")}
    v1[SCHEMA_VERSION] = 1
    back = decode("aggregates.order:Order.Placed", json.dumps(v1).encode())
    assert (back.reserved_funds, back.reserved_shares) == (None, None)


# -- snapshots ---------------------------------------------------------------------------


class Colour(StrEnum):
    RED = "red"


def test_snapshot_state_keeps_python_types() -> None:
    state = {"_created_on": datetime.now(UTC), "naive": datetime(2026, 1, 2, 3, 4, 5),
             "jst": datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=timezone(timedelta(hours=9))),
             "account_id": uuid4(), "fee": Decimal("1.25"), "colour": Colour.RED,
             "executions": {"a", "b"}, "reservations": {"k": 3}, "levels": [[1, 2]],
             "name": "x", "n": None}
    snap = Snapshot(originator_id=uuid4(), originator_version=7, timestamp=datetime.now(UTC),
                    topic="aggregates.account:Account", state=state)
    back = decode("eventsourcing.domain:Snapshot", encode(snap))
    assert back.state == state
    assert {k: type(v) for k, v in back.state.items()} == {k: type(v) for k, v in state.items()}
    assert back.state["jst"].utcoffset() == timedelta(hours=9)


# -- the event store ---------------------------------------------------------------------


def test_applications_built_from_settings_store_the_contract_form(
    store_env: dict[str, str],
) -> None:
    app: Application[UUID] = Application(env={**store_env, "IS_SNAPSHOTTING_ENABLED": "y"})
    try:
        assert isinstance(app.mapper, CodecMapper)
        account = Account.open(uuid4(), name="a", owner="a", allow_short=False,
                               meta=Meta.command("ops"))
        account.deposit(1_000, Meta.command("ops"))
        account.reserve(uuid4(), 300, Meta.command("ops"))
        app.save(account)
        app.take_snapshot(account.id)
        rows = app.recorder.select_events(account.id)
        assert [r.state[:20] for r in rows] == [b'{"schema_version":1,'] * 3
        assert vars(app.repository.get(account.id)) == vars(account)
        position = Position.open(uuid4(), account_id=uuid4(), symbol="7203",
                                 meta=Meta.command("ops"))
        app.save(position)
        app.take_snapshot(position.id)
        assert app.repository.get(position.id).account_id == position.account_id
    finally:
        app.close()


def test_a_configured_compressor_still_applies(tmp_path: Path) -> None:
    env = eventsourcing_env(Settings(persistence="sqlite", sqlite_path=tmp_path / "e.sqlite"))
    env["COMPRESSOR_TOPIC"] = "eventsourcing.compressor:ZlibCompressor"
    app: Application[UUID] = Application(env=env)
    try:
        account = Account.open(uuid4(), name="a", owner="a", allow_short=False,
                               meta=Meta.command("ops"))
        app.save(account)
        assert not app.recorder.select_events(account.id)[0].state.startswith(b"{")
        assert vars(app.repository.get(account.id)) == vars(account)
    finally:
        app.close()


def _sample(name: str, hint: Any) -> Any:
    """A value of the annotated type (not None for optionals: the type is what counts)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, UnionType):
        return _sample(name, next(a for a in typing.get_args(hint) if a is not NoneType))
    if hint is UUID:
        return uuid4()
    if hint is datetime:
        return datetime.now(UTC)
    if hint is bool:
        return True
    if hint is int:
        return 1_234_567
    if hint is str:
        return f"{name}-value"
    if origin is list:
        return [{"kind": "fill", "quantity": 100, "order_id": str(uuid4())}]
    if origin is dict or hint is Any:
        return {"bids": [[24_990, 300, 2]], "asks": []}
    raise AssertionError(f"no sample for {name}: {hint}")
