"""The gRPC edge: servicers, proto <-> domain conversion, error mapping, interceptors. No HTTP, no SQL."""

from ._auth import AuthInterceptor, CallerLogFilter, current_caller
from ._registry import PROTO_PACKAGE, ServiceStub, discover_services
from ._server import GrpcServer, build_server
from ._servicers import RequestPath, build_servicers

__all__ = [
    "PROTO_PACKAGE",
    "AuthInterceptor",
    "CallerLogFilter",
    "GrpcServer",
    "RequestPath",
    "ServiceStub",
    "build_server",
    "build_servicers",
    "current_caller",
    "discover_services",
]
