"""The gRPC edge: servicers, proto <-> domain conversion, error mapping, interceptors. No HTTP, no SQL."""

from ._registry import PROTO_PACKAGE, ServiceStub, discover_services
from ._server import GrpcServer, build_server

__all__ = ["PROTO_PACKAGE", "GrpcServer", "ServiceStub", "build_server", "discover_services"]
