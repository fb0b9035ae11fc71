"""The services defined in `protos/`, discovered from the generated stubs.

Reflection, health and registration all read this one list, so a service added to the protos is
served (as UNIMPLEMENTED until a servicer exists) without touching the server code.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import grpc

__all__ = ["PROTO_PACKAGE", "ServiceStub", "discover_services"]

PROTO_PACKAGE = "payments.amazonpay.v1"


@dataclass(frozen=True)
class ServiceStub:
    """One gRPC service from the protos: its full name and how to register a servicer for it."""

    full_name: str
    """e.g. `payments.amazonpay.v1.ChargeService`."""

    name: str
    """e.g. `ChargeService`."""

    default_servicer: Callable[[], Any]
    """The generated base class: every method answers UNIMPLEMENTED."""

    add_to_server: Callable[[Any, grpc.aio.Server], None]
    """The generated `add_<Name>Servicer_to_server`."""

    method_names: tuple[str, ...]


def _grpc_modules() -> list[tuple[ModuleType, ModuleType]]:
    package = importlib.import_module(PROTO_PACKAGE)
    pairs: list[tuple[ModuleType, ModuleType]] = []
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda module: module.name):
        if info.name.endswith("_pb2_grpc"):
            grpc_module = importlib.import_module(f"{PROTO_PACKAGE}.{info.name}")
            pb2 = importlib.import_module(f"{PROTO_PACKAGE}.{info.name.removesuffix('_grpc')}")
            pairs.append((pb2, grpc_module))
    return pairs


def discover_services() -> list[ServiceStub]:
    stubs: list[ServiceStub] = []
    for pb2, grpc_module in _grpc_modules():
        for name, descriptor in pb2.DESCRIPTOR.services_by_name.items():
            stubs.append(
                ServiceStub(
                    full_name=descriptor.full_name,
                    name=name,
                    default_servicer=getattr(grpc_module, f"{name}Servicer"),
                    add_to_server=getattr(grpc_module, f"add_{name}Servicer_to_server"),
                    method_names=tuple(m.name for m in descriptor.methods),
                )
            )
    return stubs
