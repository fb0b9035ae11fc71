"""The types every server interceptor here is written against (grpc's stubs are generic, its
runtime classes are not)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc

__all__ = ["Continuation", "Interceptor"]

if TYPE_CHECKING:
    Interceptor = grpc.aio.ServerInterceptor[Any, Any]
    Handler = grpc.RpcMethodHandler[Any, Any]
else:
    Interceptor = grpc.aio.ServerInterceptor
    Handler = grpc.RpcMethodHandler

Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[Handler]]
"""What `intercept_service` calls for the handler of the next interceptor or of the servicer."""
