"""Caller authentication and per-caller RPC allowlists, as a grpc.aio server interceptor.

The interceptor wraps each method handler's behavior rather than deciding in `intercept_service`,
because the verified client certificate is only visible through the servicer context
(`context.auth_context()`), not through the call details. Health checks and reflection stay open
so probes and tooling work without credentials. Denials are logged with the caller's name and the
RPC; tokens, token hashes and certificates never reach a log line or an error message.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, NoReturn

import grpc
from cryptography import x509
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from service.security import Caller, Callers

from ._errors import SERVICE_DOMAIN
from ._intercept import Continuation, Interceptor
from ._registry import discover_services

__all__ = [
    "PUBLIC_RPC_PREFIXES",
    "AuthInterceptor",
    "CallerLogFilter",
    "certificate_names",
    "current_caller",
    "current_scope",
]

_log = logging.getLogger("service.api.auth")

current_caller: ContextVar[str | None] = ContextVar("current_caller", default=None)
"""Name of the authenticated caller of the RPC being served (None when authentication is off)."""

current_scope: ContextVar[Caller | None] = ContextVar("current_scope", default=None)
"""The authenticated caller itself: its merchants and whether buyer PII reaches it."""

PUBLIC_RPC_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
"""Methods answered without credentials: load-balancer probes and grpcurl discovery."""

if TYPE_CHECKING:
    _Context = grpc.aio.ServicerContext[Any, Any]
else:  # grpc's runtime classes are not generic
    _Context = grpc.aio.ServicerContext


class CallerLogFilter(logging.Filter):
    """Adds `caller` to every record logged while serving an authenticated RPC (for handlers)."""

    def filter(self, record: logging.LogRecord) -> bool:
        caller = current_caller.get()
        if caller is not None and not hasattr(record, "caller"):
            record.caller = caller
        return True


@functools.lru_cache(maxsize=256)
def _san_identities(pem: bytes) -> tuple[str, ...]:
    """SAN DNS names and URIs of one certificate.

    Only these name types identify a caller: a subject CN is free text any CA profile fills in,
    and an e-mail SAN names a person, so neither can be confused with a workload's identity.
    """
    try:
        cert = x509.load_pem_x509_certificate(pem)
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return ()
    names: list[str] = []
    for value in (
        *sans.get_values_for_type(x509.DNSName),
        *sans.get_values_for_type(x509.UniformResourceIdentifier),
    ):
        if value and value not in names:
            names.append(value)
    return tuple(names)


def certificate_names(context: _Context) -> list[str]:
    """SAN DNS names and URIs of the client certificate gRPC verified (empty without mTLS)."""
    for pem in context.auth_context().get("x509_pem_cert", ()):
        return list(_san_identities(pem if isinstance(pem, bytes) else str(pem).encode()))
    return []


def _bearer_values(context: _Context) -> list[str]:
    return [
        value if isinstance(value, str) else value.decode("latin-1")
        for key, value in context.invocation_metadata() or ()
        if key.lower() == "authorization"
    ]


def _status(
    code: grpc.StatusCode, message: str, reason: str, metadata: dict[str, str] | None = None
) -> grpc.Status:
    info = any_pb2.Any()
    info.Pack(error_details_pb2.ErrorInfo(reason=reason, domain=SERVICE_DOMAIN, metadata=metadata))
    numeric: int = code.value[0]
    return rpc_status.to_status(status_pb2.Status(code=numeric, message=message, details=[info]))


async def _abort(context: _Context, status: grpc.Status) -> NoReturn:
    await context.abort_with_status(status)  # type: ignore[attr-defined]  # grpc-stubs lags grpc.aio
    raise AssertionError("abort_with_status returned")  # pragma: no cover


class AuthInterceptor(Interceptor):
    """Every RPC outside `PUBLIC_RPC_PREFIXES` needs a known caller whose allowlist matches it."""

    def __init__(self, callers: Callers, rpcs: Iterable[str] | None = None) -> None:
        self.callers = callers
        known = (
            list(rpcs)
            if rpcs is not None
            else [f"{s.full_name}/{m}" for s in discover_services() for m in s.method_names]
        )
        for caller, pattern in callers.unmatched_patterns(known):
            _log.warning(
                "allow pattern matches no RPC", extra={"caller": caller, "pattern": pattern}
            )

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.startswith(PUBLIC_RPC_PREFIXES):
            return handler
        rpc = method.removeprefix("/")

        async def authorize(context: _Context) -> Caller:
            return await self.authorize(rpc, context)

        return _guarded(handler, authorize)

    async def authorize(self, rpc: str, context: _Context) -> Caller:
        """The caller allowed to make this call, or an abort with a rich status."""
        caller = await self._identify(rpc, context)
        if not caller.allows(rpc):
            _log.warning(
                "rpc denied",
                extra={"caller": caller.name, "rpc": rpc, "reason": "RPC_NOT_ALLOWED"},
            )
            await _abort(
                context,
                _status(
                    grpc.StatusCode.PERMISSION_DENIED,
                    f"caller {caller.name!r} is not allowed to call {rpc}",
                    "RPC_NOT_ALLOWED",
                    metadata={"caller": caller.name, "rpc": rpc},
                ),
            )
        return caller

    async def _identify(self, rpc: str, context: _Context) -> Caller:
        """A bearer token, when sent, decides; otherwise the verified client certificate."""
        authorization = _bearer_values(context)
        caller: Caller | None = None
        if authorization:
            credential = "bearer token"
            scheme, _, token = authorization[0].strip().partition(" ")
            if len(authorization) == 1 and scheme.lower() == "bearer" and token.strip():
                caller = self.callers.by_token(token.strip())
            extra: dict[str, object] = {}
        else:
            names = certificate_names(context)
            credential = "client certificate" if names else "none"
            caller = self.callers.by_certificate(names) if names else None
            # Certificate names are identities, not secrets: operators need them to fix the file.
            extra = {"certificate_names": names} if names else {}
        if caller is None:
            _log.warning(
                "rpc unauthenticated",
                extra={
                    "rpc": rpc,
                    "reason": "UNAUTHENTICATED",
                    "credential": credential,
                    "peer": context.peer(),
                    **extra,
                },
            )
            message = (
                "no credentials: send 'authorization: Bearer <token>' or a client certificate"
                if credential == "none"
                else f"the {credential} does not identify a known caller"
            )
            await _abort(
                context, _status(grpc.StatusCode.UNAUTHENTICATED, message, "UNAUTHENTICATED")
            )
        return caller


def _guarded(
    handler: grpc.RpcMethodHandler[Any, Any], authorize: Callable[[_Context], Awaitable[Caller]]
) -> grpc.RpcMethodHandler[Any, Any]:
    """The same handler whose behavior first authorizes and records the caller.

    Each RPC runs in its own task, so setting `current_caller` cannot leak into another call.
    """
    kinds: list[tuple[str, Callable[..., Any]]] = [
        ("unary_unary", grpc.unary_unary_rpc_method_handler),
        ("unary_stream", grpc.unary_stream_rpc_method_handler),
        ("stream_unary", grpc.stream_unary_rpc_method_handler),
        ("stream_stream", grpc.stream_stream_rpc_method_handler),
    ]
    for kind, factory in kinds:
        behavior = getattr(handler, kind)
        if behavior is None:
            continue
        wrapped = _wrap(behavior, authorize)
        result: grpc.RpcMethodHandler[Any, Any] = factory(
            wrapped,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
        return result
    return handler


def _wrap(
    behavior: Callable[..., Any], authorize: Callable[[_Context], Awaitable[Caller]]
) -> Callable[..., Any]:
    if inspect.isasyncgenfunction(behavior):

        async def streaming(request: Any, context: _Context) -> AsyncIterator[Any]:
            caller = await authorize(context)
            current_caller.set(caller.name)
            current_scope.set(caller)
            async for response in behavior(request, context):
                yield response

        return streaming

    async def single(request: Any, context: _Context) -> Any:
        caller = await authorize(context)
        token = current_caller.set(caller.name)
        scope = current_scope.set(caller)
        try:
            return await behavior(request, context)
        finally:
            current_scope.reset(scope)
            current_caller.reset(token)

    return single
