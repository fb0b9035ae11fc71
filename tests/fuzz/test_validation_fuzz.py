"""Every RPC of every service gets random requests built from its message descriptor.

Strings (plausible values for the field's name, the same with a control character or a trailing
newline, unicode, NUL, huge), integers at the edges, enums
including unknown numbers, nested messages, repeated and map fields, timestamps out of range. Sent
over real gRPC to an in-process service whose Amazon is the emulator. Whatever arrives, the answer
is never INTERNAL or UNKNOWN, and a request the service itself refuses as INVALID_ARGUMENT writes
nothing to `operations`, `objects` or `events`. Simulation codes and small amounts keep the random
requests that are valid from creating much state; Amazon's own refusals are fine. Last, the
service restarts on the ledger the fuzz left behind: nothing in it may crash the start-up or stay
pending.
"""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from payments.amazonpay.v1 import (
    button_pb2,
    buyer_pb2,
    charge_pb2,
    charge_permission_pb2,
    checkout_session_pb2,
    common_pb2,
    delivery_tracker_pb2,
    ledger_pb2,
    refund_pb2,
)
from tests.fuzz.conftest import FuzzTarget

MODULES = [
    checkout_session_pb2,
    charge_permission_pb2,
    charge_pb2,
    refund_pb2,
    buyer_pb2,
    delivery_tracker_pb2,
    button_pb2,
    ledger_pb2,
]
METHODS: list[MethodDescriptor] = [
    method
    for module in MODULES
    for service in module.DESCRIPTOR.services_by_name.values()
    for method in service.methods
]
SERVICE_DOMAIN = "payments.amazonpay.v1"
MAX_DEPTH = 3

# ------------------------------------------------------------------------------ strategies

_unicode = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=40)
_huge = st.builds(
    lambda ch, n: ch * n,
    st.sampled_from(["a", "é", "\u4e2d", "\U0001f4b3", "\x00", "-"]),
    st.sampled_from([257, 1025, 4097, 70_000]),
)
_ids = st.one_of(
    st.from_regex(r"\A[SBP]01-[0-9]{7}-[0-9]{7}(-C[0-9]{6})?\Z"),
    st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,20}\Z"),
)
_PLAUSIBLE: dict[str, st.SearchStrategy[str]] = {
    "idempotency_key": st.from_regex(r"\A[A-Za-z0-9_-]{1,64}\Z"),
    "merchant": st.sampled_from(["", "", "", "second", "no-such-merchant"]),
    # codes Amazon refuses or declines with, so valid requests rarely create state
    "sandbox_simulation_code": st.sampled_from(
        ["HardDeclined", "AmazonRejected", "NoSuchSimulation", "Bad Code!", ""]
    ),
    "amount": st.sampled_from(
        ["0.01", "1.00", "1", "0", "-1.00", "1.001", "150000.01", "1e3", "NaN", " 1.00", ""]
    ),
    "currency_code": st.sampled_from(["USD", "EUR", "GBP", "JPY", "usd", "XXX", "US", ""]),
    "presentment_currency": st.sampled_from(["USD", "EUR", "JPY", "XXX", ""]),
    "country_code": st.sampled_from(["US", "DE", "usa", "", "ZZZZ"]),
    "checkout_review_return_url": st.sampled_from(
        ["https://shop.example/review", "http://x", "ftp://x/y", "not a url", ""]
    ),
    "checkout_result_return_url": st.sampled_from(["https://shop.example/result", "//x", ""]),
    "checkout_cancel_url": st.sampled_from(["https://shop.example/cancel", "javascript:1", ""]),
    "page_token": st.sampled_from(["", "e30=", "not-a-token", "eyJwIjp7fSwiZiI6IngifQ=="]),
    "payload": st.sampled_from(['{"storeId":"x"}', "{}", "not json", ""]),
    "state": st.sampled_from(["Captured", "Open", "", "NoSuchState"]),
}


# C0 and C1 controls and DEL, a trailing newline above all: "Declined\n" once passed a `$`
# pattern and reached an HTTP header, answering INTERNAL and poisoning every later start-up.
_CONTROLS = st.sampled_from(["\n", "\r\n", "\r", "\t", "\x00", "\x0b", "\x1b", "\x7f", "\x85"])


def _hostile(plausible: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """A plausible value with a control character appended, prepended or inserted."""
    return st.builds(
        lambda value, control, where: (
            value + control
            if where == 0
            else control + value
            if where == 1
            else value[: len(value) // 2] + control + value[len(value) // 2 :]
        ),
        plausible,
        _CONTROLS,
        st.integers(0, 2),
    )


def _string(field: FieldDescriptor) -> st.SearchStrategy[str]:
    options: list[st.SearchStrategy[str]] = [st.just(""), _unicode, _huge]
    plausible: st.SearchStrategy[str] | None = None
    if field.name in _PLAUSIBLE:
        plausible = _PLAUSIBLE[field.name]
    elif field.name.endswith("_id") or field.name == "buyer_token":
        plausible = _ids
    if plausible is not None:
        options += [plausible] * 3 + [_hostile(plausible)] * 2
    else:
        options.append(_hostile(st.text(alphabet="abc", min_size=1, max_size=8)))
    return st.one_of(options)


_INT_RANGES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}


def _scalar(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    kind = field.type
    if kind == FieldDescriptor.TYPE_STRING:
        return _string(field)
    if kind == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=64)
    if kind == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return st.floats(allow_nan=True, width=32 if kind == FieldDescriptor.TYPE_FLOAT else 64)
    if kind == FieldDescriptor.TYPE_ENUM:
        enum = field.enum_type
        assert enum is not None
        known = sorted(enum.values_by_number)
        return st.one_of(
            st.sampled_from(known), st.sampled_from([-1, 99, 2**31 - 1]), st.just(known[-1] + 1)
        )
    low, high = _INT_RANGES[kind]
    edges = [v for v in (low, -1, 0, 1, 10, 100, 1000, 1001, high) if low <= v <= high]
    return st.one_of(st.sampled_from(edges), st.integers(min_value=low, max_value=high))


def _timestamp() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {
            "seconds": st.one_of(
                st.integers(min_value=0, max_value=4_102_444_800),
                st.sampled_from([-(2**62), -62_135_596_801, 253_402_300_800, 2**62]),
            ),
            "nanos": st.one_of(
                st.just(0), st.integers(0, 999_999_999), st.sampled_from([-1, 10**9])
            ),
        }
    )


def _message(descriptor: Descriptor, depth: int = 0) -> st.SearchStrategy[dict[str, Any]]:
    """A dict of field name -> value (nested dicts for messages); absent fields stay unset."""
    if descriptor.full_name == "google.protobuf.Timestamp":
        return _timestamp()
    fields: dict[str, st.SearchStrategy[Any]] = {}
    for field in descriptor.fields:
        value = _field_value(field, depth)
        if value is not None:
            fields[field.name] = value
    return st.fixed_dictionaries({}, optional=fields)


def _field_value(field: FieldDescriptor, depth: int) -> st.SearchStrategy[Any] | None:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        message_type = field.message_type
        assert message_type is not None
        if message_type.GetOptions().map_entry:
            key_field = message_type.fields_by_name["key"]
            value_field = message_type.fields_by_name["value"]
            if value_field.type == FieldDescriptor.TYPE_MESSAGE:
                if depth >= MAX_DEPTH:
                    return None
                assert value_field.message_type is not None
                values: st.SearchStrategy[Any] = _message(value_field.message_type, depth + 1)
            else:
                values = _scalar(value_field)
            return st.dictionaries(_scalar(key_field), values, max_size=4)
        if depth >= MAX_DEPTH:
            return None
        inner = _message(message_type, depth + 1)
        if field.is_repeated:
            return st.one_of(
                st.lists(inner, max_size=3), st.lists(inner, min_size=101, max_size=102)
            )
        return inner
    if field.is_repeated:
        return st.one_of(
            st.lists(_scalar(field), max_size=3),
            st.lists(_scalar(field), min_size=101, max_size=101),
        )
    return _scalar(field)


def _fill(message: Message, values: dict[str, Any]) -> None:
    descriptor = message.DESCRIPTOR
    for name, value in values.items():
        field = descriptor.fields_by_name[name]
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            assert field.message_type is not None
            if field.message_type.GetOptions().map_entry:
                target = getattr(message, name)
                value_field = field.message_type.fields_by_name["value"]
                for k, v in value.items():
                    if value_field.type == FieldDescriptor.TYPE_MESSAGE:
                        _fill(target[k], v)
                    else:
                        target[k] = v
            elif field.is_repeated:
                for item in value:
                    _fill(getattr(message, name).add(), item)
            else:
                _fill(getattr(message, name), value)
                getattr(message, name).SetInParent()
        elif field.is_repeated:
            getattr(message, name).extend(value)
        else:
            setattr(message, name, value)


def requests_for(method: MethodDescriptor) -> st.SearchStrategy[Message]:
    cls = GetMessageClass(method.input_type)

    def build(values: dict[str, Any]) -> Message:
        message = cls()
        _fill(message, values)
        return message

    return _message(method.input_type).map(build)


# ------------------------------------------------------------------------------ the property

_MIN_SECONDS, _MAX_SECONDS = -62_135_596_800, 253_402_300_799  # 0001-01-01 .. 9999-12-31


def _error_domain(error: grpc.aio.AioRpcError) -> tuple[str, str, int]:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    domain = reason = ""
    violations = 0
    if status is not None:
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                domain, reason = info.domain, info.reason
            elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                violations = len(bad.field_violations)
    return domain, reason, violations


async def _send(target: FuzzTarget, method: MethodDescriptor, request: Message) -> None:
    path = f"/{method.containing_service.full_name}/{method.name}"
    response_cls = GetMessageClass(method.output_type)
    before = await target.row_counts()
    error: grpc.aio.AioRpcError | None = None
    if method.server_streaming:
        call = target.channel.unary_stream(
            path,
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=response_cls.FromString,
        )(request, timeout=0.5)
        try:
            async for _ in call:
                break
        except grpc.aio.AioRpcError as exc:
            if exc.code() not in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED):
                error = exc
        finally:
            call.cancel()
    else:
        try:
            await target.channel.unary_unary(
                path,
                request_serializer=lambda m: m.SerializeToString(),
                response_deserializer=response_cls.FromString,
            )(request, timeout=15)
        except grpc.aio.AioRpcError as exc:
            error = exc
    if error is None:
        return
    code = error.code()
    assert code not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), (
        f"{method.name} answered {code.name}: {error.details()}\nrequest: {request!r:.2000}"
    )
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        domain, reason, _violations = _error_domain(error)
        if domain != "amazonpay":  # refused by the service itself, not by Amazon
            assert domain == SERVICE_DOMAIN, f"{method.name}: no ErrorInfo on INVALID_ARGUMENT"
            assert _violations > 0, f"{method.name}: INVALID_ARGUMENT without field violations"
            after = await target.row_counts()
            assert after == before, (
                f"{method.name} refused ({reason}) but rows changed {before} -> {after}"
            )


@pytest.mark.parametrize("method", METHODS, ids=[m.name for m in METHODS])
def test_random_requests_never_fail_internally_and_refusals_write_nothing(
    fuzz_target: FuzzTarget, method: MethodDescriptor
) -> None:
    @settings(
        max_examples=30,
        deadline=None,
        derandomize=False,
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
        ],
    )
    @given(request=requests_for(method))
    def check(request: Message) -> None:
        fuzz_target.run(_send(fuzz_target, method, request))

    check()


# ------------------------------------------------------------------ hostile strings in valid requests

_PLAUSIBLE_VALUES: dict[str, str] = {
    "idempotency_key": "fuzz-key-1",
    "sandbox_simulation_code": "HardDeclined",
    "closure_reason": "done",
    "cancellation_reason": "done",
    "payload": '{"storeId":"amzn1.application-oa2-client.e2e"}',
    "buyer_token": "token-1",
    "object_id": "S01-0000000-0000000-C000009",
    "checkout_review_return_url": "https://shop.example/review",
}


def _valid(method: MethodDescriptor) -> Message:
    """A request that passes the service's validation (Amazon may still refuse it): the RPC's
    required fields with plausible values, and a simulation code wherever one is accepted."""
    from service.api._servicers import ADDRESSED
    from service.api._validation import REQUIRED

    request = GetMessageClass(method.input_type)()
    for dotted in (*ADDRESSED.get(method.name, ()), *REQUIRED.get(method.name, ())):
        node: Any = request
        *parents, name = dotted.split(".")
        for part in parents:
            node = getattr(node, part)
        field = node.DESCRIPTOR.fields_by_name[name]
        if field.message_type is not None and field.message_type.name == "Price":
            getattr(node, name).CopyFrom(common_pb2.Price(amount="1.00", currency_code="USD"))
        elif field.is_repeated:
            getattr(node, name).add(tracking_number="1Z999", carrier_code="UPS")
        elif field.type == FieldDescriptor.TYPE_ENUM:
            setattr(node, name, 1)
        elif name.endswith("_id"):
            setattr(node, name, "S01-0000000-0000000")
        else:
            setattr(node, name, _PLAUSIBLE_VALUES[name])
    fields = request.DESCRIPTOR.fields_by_name
    if "sandbox_simulation_code" in fields:
        setattr(request, "sandbox_simulation_code", "HardDeclined")  # noqa: B010
    if "web_checkout_details" in fields:
        request.web_checkout_details.checkout_review_return_url = REVIEW  # type: ignore[attr-defined]
    if method.name == "CreateDeliveryTracker":
        setattr(request, "charge_permission_id", "S01-0000000-0000000")  # noqa: B010
    return request


REVIEW = "https://shop.example/review"


def _string_paths(descriptor: Descriptor, depth: int = 0) -> list[tuple[str, ...]]:
    paths: list[tuple[str, ...]] = []
    for field in descriptor.fields:
        if field.is_repeated:
            continue
        if field.type == FieldDescriptor.TYPE_STRING:
            paths.append((field.name,))
        elif field.message_type is not None and depth < 2:
            if field.message_type.full_name.startswith("google.protobuf."):
                continue
            paths += [(field.name, *p) for p in _string_paths(field.message_type, depth + 1)]
    return paths


def _with(request: Message, path: tuple[str, ...], value: str) -> Message:
    hostile = type(request)()
    hostile.CopyFrom(request)
    node: Any = hostile
    for part in path[:-1]:
        node = getattr(node, part)
    setattr(node, path[-1], value)
    return hostile


def _current(request: Message, path: tuple[str, ...]) -> str:
    node: Any = request
    for part in path:
        node = getattr(node, part)
    return str(node) or _PLAUSIBLE_VALUES.get(path[-1], "abc")


@pytest.mark.parametrize("method", METHODS, ids=[m.name for m in METHODS])
def test_control_characters_in_any_string_of_a_valid_request_never_fail_internally(
    fuzz_target: FuzzTarget, method: MethodDescriptor
) -> None:
    """The same property, from a request the service would accept, with one string (the
    simulation code, the idempotency key, an id, an amount, a URL...) given a control character:
    a trailing newline, CR LF, NUL, ESC, DEL or NEL."""
    valid = _valid(method)
    paths = _string_paths(method.input_type)

    @settings(
        max_examples=25,
        deadline=None,
        derandomize=False,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(
        case=st.sampled_from(paths).flatmap(
            lambda path: st.tuples(st.just(path), _hostile(st.just(_current(valid, path))))
        )
    )
    def check(case: tuple[tuple[str, ...], str]) -> None:
        path, value = case
        fuzz_target.run(_send(fuzz_target, method, _with(valid, path, value)))

    # Every field a pattern guards gets the trailing newline for certain, then the random cases.
    for path in paths:
        if path[-1] in _PATTERNED or path[-1].endswith("_id"):
            fuzz_target.run(
                _send(fuzz_target, method, _with(valid, path, _current(valid, path) + "\n"))
            )
    check()


_PATTERNED = frozenset(
    {
        "idempotency_key",
        "sandbox_simulation_code",
        "amount",
        "currency_code",
        "country_code",
        "buyer_token",
        "merchant",
    }
)


def test_the_service_restarts_cleanly_on_what_the_fuzz_left(fuzz_target: FuzzTarget) -> None:
    async def restart() -> None:
        await fuzz_target.restart()
        pending = await fuzz_target.ledger.fetchval(
            "SELECT count(*) FROM operations WHERE status = 'pending'"
        )
        assert pending == 0

    fuzz_target.run(restart())
