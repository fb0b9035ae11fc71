"""Requests that are not valid protobuf: INVALID_ARGUMENT, never UNKNOWN naming a Python class.

grpc answers a request its deserializer cannot parse with UNKNOWN and the exception's class in the
message. This interceptor, innermost, swaps in a deserializer that returns a marker instead, and a
behavior that answers the marker with the service's own INVALID_ARGUMENT status (after the
interceptors outside it, such as authentication, have run).
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from ._errors import RpcFailure, to_status
from ._intercept import Continuation, Interceptor
from ._validation import Violation

__all__ = ["MalformedRequests"]


class _Malformed:
    """What the deserializer returns for bytes that do not parse."""

    __slots__ = ("type_name",)

    def __init__(self, type_name: str) -> None:
        self.type_name = type_name


def _safe(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None
    owner = getattr(deserializer, "__self__", None)
    type_name = getattr(getattr(owner, "DESCRIPTOR", None), "name", "request")

    def parse(data: bytes) -> Any:
        try:
            return deserializer(data)
        except (DecodeError, RecursionError, ValueError, TypeError):
            return _Malformed(type_name)

    return parse


def _failure(marker: _Malformed) -> grpc.Status:
    status = to_status(
        RpcFailure.invalid(
            f"the request is not a valid {marker.type_name} protobuf message",
            Violation("request", f"must be a valid {marker.type_name} protobuf encoding"),
        )
    )
    assert status is not None
    return status


def _wrap(behavior: Callable[..., Any]) -> Callable[..., Any]:
    if inspect.isasyncgenfunction(behavior):

        async def streaming(request: Any, context: Any) -> AsyncIterator[Any]:
            if isinstance(request, _Malformed):
                await context.abort_with_status(_failure(request))
            async for response in behavior(request, context):
                yield response

        return streaming

    async def single(request: Any, context: Any) -> Any:
        if isinstance(request, _Malformed):
            await context.abort_with_status(_failure(request))
        result = behavior(request, context)
        return await result if inspect.isawaitable(result) else result

    return single


class MalformedRequests(Interceptor):
    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(handler_call_details)
        if handler is None or handler.request_streaming:
            return handler
        kinds: list[tuple[str, Callable[..., Any]]] = [
            ("unary_unary", grpc.unary_unary_rpc_method_handler),
            ("unary_stream", grpc.unary_stream_rpc_method_handler),
        ]
        for kind, factory in kinds:
            behavior = getattr(handler, kind)
            if behavior is not None:
                wrapped: grpc.RpcMethodHandler[Any, Any] = factory(
                    _wrap(behavior),
                    request_deserializer=_safe(handler.request_deserializer),
                    response_serializer=handler.response_serializer,
                )
                return wrapped
        return handler
