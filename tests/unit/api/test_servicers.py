"""The servicers' tables agree with the protos, and every RPC of every service is served."""

from __future__ import annotations

import pytest
from google.protobuf import descriptor_pool
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message_factory import GetMessageClass

from service.api import PROTO_PACKAGE, discover_services
from service.api._servicers import (
    ADDRESSED,
    ANSWERS,
    FETCHES,
    MUTATIONS,
    READS,
    SERVICERS,
    ChargeService,
    _row,
    _Servicer,
)
from service.api._validation import Violation, validate


def _rpc(name: str) -> MethodDescriptor:
    pool = descriptor_pool.Default()
    for service in discover_services():
        if name in service.method_names:
            return pool.FindMethodByName(f"{service.full_name}.{name}")
    raise LookupError(name)


@pytest.mark.parametrize("name", [*MUTATIONS, *READS, *FETCHES])
def test_each_row_answers_with_its_rpcs_response_and_addresses_a_field_of_its_request(
    name: str,
) -> None:
    rpc = _rpc(name)
    answer = ANSWERS[name]
    assert answer.response is GetMessageClass(rpc.output_type)
    result = rpc.output_type.fields_by_name[answer.result_field].message_type
    assert result is not None
    assert result.name == "".join(part.capitalize() for part in answer.result_field.split("_"))
    for field in ADDRESSED.get(name, ()):
        assert field in rpc.input_type.fields_by_name


def test_every_read_and_every_mutation_with_a_path_id_requires_it() -> None:
    expected = {
        **{name: (row.id_field,) for name, row in READS.items()},
        **{name: (row.id_field,) for name, row in FETCHES.items()},
        **{name: (row.path_field,) for name, row in MUTATIONS.items() if row.path_field},
    }
    assert dict(ADDRESSED) == expected
    for name, (field,) in ADDRESSED.items():
        empty = GetMessageClass(_rpc(name).input_type)()
        assert Violation(field, "is required") in validate(name, empty, addressed=(field,))


def test_every_rpc_of_every_service_has_a_servicer_method() -> None:
    servicers = {cls.__name__: cls for cls in SERVICERS}
    for service in discover_services():
        if service.full_name.startswith(PROTO_PACKAGE):
            for name in service.method_names:
                method = getattr(servicers[service.name], name)
                assert method is not getattr(service.default_servicer, name), name


def test_a_servicer_missing_an_rpc_is_refused_when_its_class_is_made() -> None:
    with pytest.raises(TypeError, match="RefundService does not define GetRefund"):
        type("RefundService", (_Servicer,), {"CreateRefund": _row("CreateRefund")})


def test_a_row_line_naming_another_rpc_is_refused() -> None:
    with pytest.raises(TypeError, match="does not define GetRefund"):
        type(
            "RefundService",
            (_Servicer,),
            {"CreateRefund": _row("CreateRefund"), "GetRefund": _row("GetCharge")},
        )


def test_only_table_rows_are_row_lines() -> None:
    with pytest.raises(KeyError, match="GetTransaction is not"):
        _row("GetTransaction")
    assert ChargeService.GetCharge.__name__ == "GetCharge"
