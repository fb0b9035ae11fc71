"""Every list of Amazon object kinds agrees with core's table (`service.core.KINDS`).

The tables that cannot import core (the ledger, below it; the proto enum; the emulator, a stand-in
for Amazon) or that are generated keep their own spelling; this holds them to the one table.
"""

from __future__ import annotations

from payments.amazonpay.v1 import ledger_pb2
from service.api import _servicers
from service.core import GETTERS, KINDS
from service.ledger import EVENT_KINDS, OBJECT_KINDS
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


def test_api_maps_every_kind_to_its_enum_value_and_snapshot_message() -> None:
    assert {
        name: ledger_pb2.ObjectKind.Value(f"OBJECT_KIND_{name.upper()}") for name in KINDS
    } == dict(_servicers.KIND_ENUM)
    assert set(_servicers._SNAPSHOT_TYPES) == set(KINDS)


def test_every_kind_can_be_read_from_amazon() -> None:
    assert set(GETTERS) == set(KINDS)


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
