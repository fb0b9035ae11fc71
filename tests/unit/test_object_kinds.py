"""Every list of Amazon object kinds agrees with core's table (`service.core.KINDS`).

The tables that cannot import core (the ledger, below it, whose SQL constraints list the kinds it
stores; the proto enum; the emulator, a stand-in for Amazon; the Python client) or that are
generated keep their own spelling; this holds them to the one table. The API derives its maps.
"""

from __future__ import annotations

from typing import get_args

from payments.amazonpay.v1 import ledger_pb2
from service.amazonpay import ENDPOINTS
from service.api import _servicers
from service.core import GETTERS, KINDS
from service.ledger import EVENT_KINDS, EVENT_SOURCES, OBJECT_KINDS
from service.ledger._tools import id_field
from service.workers import OBJECT_TYPES

NAMES = ("checkout_session", "charge_permission", "charge", "refund", "dispute")


def _camel_plural(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest) + "s"


def test_core_table_is_the_kinds_in_ledger_order() -> None:
    assert tuple(KINDS) == NAMES
    assert tuple(OBJECT_KINDS) == NAMES
    assert tuple(EVENT_KINDS) == (*NAMES, "settlement_line")


def test_proto_object_kind_enum_has_one_value_per_kind_of_event() -> None:
    values = {
        value.name.removeprefix("OBJECT_KIND_").lower()
        for value in ledger_pb2.DESCRIPTOR.enum_types_by_name["ObjectKind"].values
        if value.number != 0
    }
    assert values == set(EVENT_KINDS)
    assert dict(_servicers.EVENT_KIND_ENUM) == {
        name: ledger_pb2.ObjectKind.Value(f"OBJECT_KIND_{name.upper()}") for name in EVENT_KINDS
    }


def test_api_maps_every_kind_to_its_enum_value_and_back() -> None:
    assert set(_servicers.KIND_ENUM) == set(KINDS)
    assert {_servicers.KIND_NAME[value] for value in _servicers.KIND_ENUM.values()} == set(KINDS)
    assert _servicers.KIND_ENUM["charge_permission"] == ledger_pb2.OBJECT_KIND_CHARGE_PERMISSION


def test_transactions_and_events_carry_a_snapshot_field_named_after_every_kind() -> None:
    for message in (ledger_pb2.Transaction, ledger_pb2.LedgerEvent):
        fields = message.DESCRIPTOR.fields_by_name
        for kind in KINDS:
            snapshot = fields[kind].message_type
            assert snapshot is not None
            assert snapshot.name == "".join(part.capitalize() for part in kind.split("_"))


def test_api_maps_every_event_source_of_the_ledger() -> None:
    assert tuple(_servicers.SOURCE_ENUM) == EVENT_SOURCES
    values = {
        value.name.removeprefix("EVENT_SOURCE_").lower()
        for value in ledger_pb2.DESCRIPTOR.enum_types_by_name["EventSource"].values
        if value.number != 0
    }
    assert values == set(EVENT_SOURCES)


def test_every_kind_can_be_read_from_amazon() -> None:
    assert set(GETTERS) == set(KINDS)
    assert all(kind.getter in ENDPOINTS for kind in KINDS.values())


def test_the_ledger_tools_name_every_kinds_id_field_as_core_does() -> None:
    assert {name: id_field(name) for name in KINDS} == {
        name: kind.id_field for name, kind in KINDS.items()
    }


def test_ipn_object_types_come_from_the_table() -> None:
    assert OBJECT_TYPES == {
        "CHARGE_PERMISSION": "charge_permission",
        "CHARGE": "charge",
        "REFUND": "refund",
        "CHARGEBACK": "dispute",
    }
    assert all(KINDS[kind].ipn_object_type == ipn for ipn, kind in OBJECT_TYPES.items())


def test_emulator_control_plane_lists_every_kind() -> None:
    from emulator.control import KINDS as EMULATOR_KINDS

    # Disputes live in the emulator's settlement state, listed by its own `/_emulator/disputes`.
    assert {_camel_plural(name) for name in KINDS} <= {*EMULATOR_KINDS, "disputes"}


def test_the_python_client_names_every_kind_as_the_service_does() -> None:
    from amazonpay_client import _services as client

    assert dict(client.KINDS) == dict(_servicers.EVENT_KIND_ENUM)
    assert get_args(client.Kind) == tuple(EVENT_KINDS)
    assert dict(client._EVENT_SOURCES) == dict(_servicers.SOURCE_ENUM)
