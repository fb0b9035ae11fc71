"""The Python client's RPC rows match the service descriptors they are sent to."""

from __future__ import annotations

import inspect
from typing import Any

from amazonpay_client import _services
from google.protobuf import descriptor_pool

MODULES = (_services,)
SERVICES = list(
    {
        cls
        for module in MODULES
        for _, cls in inspect.getmembers(module, inspect.isclass)
        if issubclass(cls, _services._Service) and cls._service
    }
)


def _rows() -> list[_services._Rpc[Any]]:
    return [
        row
        for module in MODULES
        for row in vars(module).values()
        if isinstance(row, _services._Rpc)
    ]


def test_every_rpc_row_names_a_method_with_its_request_and_response() -> None:
    pool = descriptor_pool.Default()
    methods = {
        method.name: method
        for cls in SERVICES
        for method in pool.FindServiceByName(f"payments.amazonpay.v1.{cls._service}").methods
    }
    rows = _rows() + [cls._get for cls in SERVICES if issubclass(cls, _services._ReadsById)]
    assert len({row.name for row in rows}) == len(rows)
    for row in rows:
        method = methods[row.name]
        assert row.request.DESCRIPTOR.full_name == method.input_type.full_name, row.name
        assert row.response.DESCRIPTOR.full_name == method.output_type.full_name, row.name
        assert row.write == row.name.startswith(
            ("Create", "Update", "Complete", "Finalize", "Close", "Capture", "Cancel", "Erase")
        ), row.name
    unary = {name for name, m in methods.items() if not m.server_streaming}
    assert {row.name for row in rows} == unary


def test_by_id_reads_name_a_field_of_their_request() -> None:
    for cls in SERVICES:
        if issubclass(cls, _services._ReadsById):
            assert cls._id_field in cls._get.request.DESCRIPTOR.fields_by_name, cls.__name__
