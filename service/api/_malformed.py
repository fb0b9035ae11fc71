"""Requests that are not valid protobuf: INVALID_ARGUMENT, never UNKNOWN naming a Python class.

grpc answers a request its deserializer cannot parse with UNKNOWN and the exception's class in the
message. Every method handler of the API is registered through `GuardedRegistration`, which swaps
in, once per method, a deserializer that returns a marker instead and a behavior that answers the
marker with the service's own INVALID_ARGUMENT status. The behavior runs after every interceptor
(authentication first), as the innermost interceptor did before; being done at registration
rather than as an interceptor, it costs nothing per call and leaves grpc's interceptor-free fast
path to a server with no other interceptors (bench/results/profile.md).
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from ._errors import RpcFailure, to_status
from ._validation import Violation

__all__ = ["GuardedRegistration", "guard"]


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

    if inspect.iscoroutinefunction(behavior):

        async def coroutine(request: Any, context: Any) -> Any:
            if isinstance(request, _Malformed):
                await context.abort_with_status(_failure(request))
            return await behavior(request, context)

        return coroutine

    async def single(request: Any, context: Any) -> Any:
        if isinstance(request, _Malformed):
            await context.abort_with_status(_failure(request))
        result = behavior(request, context)
        return await result if inspect.isawaitable(result) else result

    return single


def guard(
    handler: grpc.RpcMethodHandler[Any, Any] | None,
) -> grpc.RpcMethodHandler[Any, Any] | None:
    """`handler` with the malformed-request deserializer and behavior (unary requests)."""
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


class _GuardedGeneric(grpc.GenericRpcHandler):  # type: ignore[type-arg]
    """A generic handler whose method handlers are guarded, each once (known methods only:
    arbitrary names a caller sends are never remembered)."""

    def __init__(self, inner: grpc.GenericRpcHandler[Any, Any]) -> None:
        self._inner = inner
        self._guarded: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}

    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        method = handler_call_details.method
        found = self._guarded.get(method)
        if found is None:
            found = guard(self._inner.service(handler_call_details))
            if found is not None:
                self._guarded[method] = found
        return found


class _MethodTable(grpc.GenericRpcHandler):  # type: ignore[type-arg]
    """Every method of every service in one dict: one lookup per call."""

    def __init__(self, methods: Mapping[str, grpc.RpcMethodHandler[Any, Any]]) -> None:
        self._methods = methods

    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        return self._methods.get(handler_call_details.method)


class GuardedRegistration:
    """Stands in for the server when the generated `add_<Service>Servicer_to_server` functions
    register a servicer: every method handler guarded, and all of them served by one generic
    handler (`register`). grpc's own per-method registration keeps one pending task per
    registered method and waits on all of them at every call (an `asyncio.wait` over some 30
    tasks per RPC, about 5 % of a CreateCharge's CPU: bench/results/profile.md)."""

    def __init__(self) -> None:
        self._methods: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
        self._generic: list[grpc.GenericRpcHandler[Any, Any]] = []

    def add_generic_rpc_handlers(
        self, handlers: Sequence[grpc.GenericRpcHandler[Any, Any]]
    ) -> None:
        """Kept as the fallback of methods not registered by name (older generated code)."""
        self._generic.extend(_GuardedGeneric(h) for h in handlers)

    def add_registered_method_handlers(
        self, service_name: str, handlers: Mapping[str, grpc.RpcMethodHandler[Any, Any]]
    ) -> None:
        for name, handler in handlers.items():
            guarded = guard(handler)
            if guarded is not None:
                self._methods[f"/{service_name}/{name}"] = guarded

    def register(self, server: grpc.aio.Server) -> None:
        server.add_generic_rpc_handlers([_MethodTable(dict(self._methods)), *self._generic])
