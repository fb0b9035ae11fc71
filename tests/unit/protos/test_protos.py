"""Contract tests of the generated gRPC API (payments.amazonpay.v1).

They pin the shape other teams rely on: service and RPC names, streaming, enum zero values, the
`merchant` / `idempotency_key` / `sandbox_simulation_code` conventions, string amounts, raw Amazon
strings next to Amazon enums, and that the committed stubs match the protos.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from google.protobuf.descriptor import (
    Descriptor,
    EnumDescriptor,
    FieldDescriptor,
    FileDescriptor,
    ServiceDescriptor,
)

from payments.amazonpay.v1 import (
    button_pb2,
    button_pb2_grpc,
    buyer_pb2,
    buyer_pb2_grpc,
    charge_pb2,
    charge_pb2_grpc,
    charge_permission_pb2,
    charge_permission_pb2_grpc,
    checkout_session_pb2,
    checkout_session_pb2_grpc,
    common_pb2,
    delivery_tracker_pb2,
    delivery_tracker_pb2_grpc,
    dispute_pb2,
    dispute_pb2_grpc,
    ledger_pb2,
    ledger_pb2_grpc,
    refund_pb2,
    refund_pb2_grpc,
    settlement_pb2,
    settlement_pb2_grpc,
)

REPO_ROOT = Path(__file__).resolve().parents[3]
PROTO_DIR = REPO_ROOT / "protos" / "payments" / "amazonpay" / "v1"
PACKAGE = "payments.amazonpay.v1"

PB2_MODULES: tuple[ModuleType, ...] = (
    common_pb2,
    checkout_session_pb2,
    charge_permission_pb2,
    charge_pb2,
    refund_pb2,
    buyer_pb2,
    delivery_tracker_pb2,
    button_pb2,
    ledger_pb2,
    dispute_pb2,
    settlement_pb2,
)

# service name -> (pb2 module, pb2_grpc module, RPC names)
SERVICES: dict[str, tuple[ModuleType, ModuleType, tuple[str, ...]]] = {
    "CheckoutSessionService": (
        checkout_session_pb2,
        checkout_session_pb2_grpc,
        (
            "CreateCheckoutSession",
            "GetCheckoutSession",
            "UpdateCheckoutSession",
            "CompleteCheckoutSession",
            "FinalizeCheckoutSession",
        ),
    ),
    "ChargePermissionService": (
        charge_permission_pb2,
        charge_permission_pb2_grpc,
        ("GetChargePermission", "UpdateChargePermission", "CloseChargePermission"),
    ),
    "ChargeService": (
        charge_pb2,
        charge_pb2_grpc,
        ("CreateCharge", "GetCharge", "CaptureCharge", "CancelCharge"),
    ),
    "RefundService": (refund_pb2, refund_pb2_grpc, ("CreateRefund", "GetRefund")),
    "BuyerService": (buyer_pb2, buyer_pb2_grpc, ("GetBuyer",)),
    "DeliveryTrackerService": (
        delivery_tracker_pb2,
        delivery_tracker_pb2_grpc,
        ("CreateDeliveryTracker",),
    ),
    "ButtonService": (button_pb2, button_pb2_grpc, ("SignButtonPayload",)),
    "LedgerService": (
        ledger_pb2,
        ledger_pb2_grpc,
        ("GetTransaction", "ListTransactions", "ListEvents", "WatchEvents", "EraseBuyerData"),
    ),
    "DisputeService": (dispute_pb2, dispute_pb2_grpc, ("GetDispute", "ListDisputes")),
    "SettlementService": (
        settlement_pb2,
        settlement_pb2_grpc,
        (
            "ListSettlements",
            "GetSettlement",
            "ListDisbursements",
            "ListUnmatchedLines",
            "ReconcileSettlementPeriod",
        ),
    ),
}

STREAMING_RPCS = {"WatchEvents"}
# Reads answered from the ledger alone: no ReadSource, no Amazon request id.
LEDGER_ONLY_READS = {"GetTransaction", "GetSettlement", "ListDisputes"}

# RPCs that change state (here or at Amazon): all carry an idempotency_key.
REQUIRED_IDEMPOTENCY = {
    "CreateCheckoutSession",
    "CompleteCheckoutSession",
    "FinalizeCheckoutSession",
    "CreateCharge",
    "CaptureCharge",
    "CreateRefund",
}
OPTIONAL_IDEMPOTENCY = {
    "UpdateCheckoutSession",
    "UpdateChargePermission",
    "CloseChargePermission",
    "CancelCharge",
    "CreateDeliveryTracker",
    "EraseBuyerData",
}
MUTATING_RPCS = REQUIRED_IDEMPOTENCY | OPTIONAL_IDEMPOTENCY
# Money-moving and create RPCs accept a sandbox simulation code.
SIMULATION_RPCS = REQUIRED_IDEMPOTENCY | {"CloseChargePermission", "CreateDeliveryTracker"}
# Amazon-defined value sets: every field of these types outside requests has a raw_<field> string.
AMAZON_ENUMS = {
    "CheckoutSessionState",
    "ChargePermissionState",
    "ChargeState",
    "RefundState",
    "DisputeState",
    "ReasonCode",
    "ChargePermissionType",
    "PaymentIntent",
    "ChargeInitiator",
    "FrequencyUnit",
    "ConstraintId",
    "AddressRestrictionType",
}
AMAZON_REASON_CODES = {
    # CheckoutSession
    "BuyerCanceled",
    "Expired",
    "AmazonCanceled",
    "Declined",
    # ChargePermission
    "PaymentMethodInvalid",
    "PaymentMethodDeleted",
    "BillingAddressDeleted",
    "PaymentMethodExpired",
    "PaymentMethodNotAllowed",
    "PaymentMethodNotSet",
    "ChargeInProgress",
    "MFAFailed",
    "MerchantClosed",
    "BuyerClosed",
    "AmazonClosed",
    # Charge
    "ExpiredUnused",
    "MerchantCanceled",
    "ChargePermissionCanceled",
    "SoftDeclined",
    "HardDeclined",
    "AmazonRejected",
    "ProcessingFailure",
    "TransactionTimedOut",
}


def files() -> list[FileDescriptor]:
    return [module.DESCRIPTOR for module in PB2_MODULES]


def all_messages() -> Iterator[Descriptor]:
    def walk(message: Descriptor) -> Iterator[Descriptor]:
        if message.GetOptions().map_entry:
            return
        yield message
        for nested in message.nested_types:
            yield from walk(nested)

    for file in files():
        for message in file.message_types_by_name.values():
            yield from walk(message)


def all_enums() -> Iterator[EnumDescriptor]:
    for file in files():
        yield from file.enum_types_by_name.values()
    for message in all_messages():
        yield from message.enum_types


def service(name: str) -> ServiceDescriptor:
    pb2, _, _ = SERVICES[name]
    descriptor: ServiceDescriptor = pb2.DESCRIPTOR.services_by_name[name]
    return descriptor


def request_of(rpc: str) -> Descriptor:
    for name, (_, _, rpcs) in SERVICES.items():
        if rpc in rpcs:
            input_type: Descriptor = service(name).methods_by_name[rpc].input_type
            return input_type
    raise KeyError(rpc)


def all_rpcs() -> list[str]:
    return [rpc for _, _, rpcs in SERVICES.values() for rpc in rpcs]


def snake_to_amazon(name: str) -> str:
    return "".join(part.capitalize() if part != "mfa" else "MFA" for part in name.split("_"))


def test_all_files_share_the_package() -> None:
    for file in files():
        assert file.package == PACKAGE, file.name
        assert file.name.startswith("payments/amazonpay/v1/"), file.name


def test_every_proto_file_is_generated() -> None:
    sources = {p.stem for p in PROTO_DIR.glob("*.proto")}
    generated = {module.__name__.rsplit(".", 1)[1].removesuffix("_pb2") for module in PB2_MODULES}
    assert sources == generated


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_service_has_exactly_the_documented_rpcs(name: str) -> None:
    _, grpc_module, rpcs = SERVICES[name]
    descriptor = service(name)
    assert descriptor.full_name == f"{PACKAGE}.{name}"
    assert set(descriptor.methods_by_name) == set(rpcs)
    # Stub, servicer and registration helper are generated for every service.
    assert hasattr(grpc_module, f"{name}Stub")
    assert hasattr(grpc_module, f"{name}Servicer")
    assert hasattr(grpc_module, f"add_{name}Servicer_to_server")
    servicer = getattr(grpc_module, f"{name}Servicer")
    for rpc in rpcs:
        assert callable(getattr(servicer, rpc))


@pytest.mark.parametrize("rpc", all_rpcs())
def test_rpc_shape(rpc: str) -> None:
    method = next(
        service(name).methods_by_name[rpc] for name, (_, _, r) in SERVICES.items() if rpc in r
    )
    assert method.input_type.name == f"{rpc}Request"
    assert method.output_type.name == f"{rpc}Response"
    assert not method.client_streaming
    assert method.server_streaming == (rpc in STREAMING_RPCS)


def test_watch_events_is_server_streaming() -> None:
    method = service("LedgerService").methods_by_name["WatchEvents"]
    assert method.server_streaming
    assert not method.client_streaming


def test_every_enum_starts_with_unspecified_zero() -> None:
    enums = list(all_enums())
    assert len(enums) >= 15
    for enum in enums:
        prefix = re.sub(r"(?<!^)(?=[A-Z])", "_", enum.name).upper()
        zero = enum.values_by_number[0]
        assert zero.name == f"{prefix}_UNSPECIFIED", enum.full_name
        for value in enum.values:
            assert value.name.startswith(f"{prefix}_"), value.name


def test_state_enums() -> None:
    expected = {
        "CheckoutSessionState": {"OPEN", "COMPLETED", "CANCELED"},
        "ChargePermissionState": {"CHARGEABLE", "NON_CHARGEABLE", "CLOSED"},
        "ChargeState": {
            "AUTHORIZATION_INITIATED",
            "AUTHORIZED",
            "CAPTURE_INITIATED",
            "CAPTURED",
            "CANCELED",
            "DECLINED",
        },
        "RefundState": {"REFUND_INITIATED", "REFUNDED", "DECLINED"},
        "DisputeState": {"UNDER_REVIEW", "ACTION_REQUIRED", "RESOLVED", "CLOSED"},
    }
    enums = {enum.name: enum for enum in all_enums()}
    for name, values in expected.items():
        prefix = re.sub(r"(?<!^)(?=[A-Z])", "_", name).upper() + "_"
        names = {v.name.removeprefix(prefix) for v in enums[name].values if v.number != 0}
        assert names == values, name


def test_reason_code_enum_covers_every_amazon_reason() -> None:
    enum = common_pb2.DESCRIPTOR.enum_types_by_name["ReasonCode"]
    names = {
        snake_to_amazon(v.name.removeprefix("REASON_CODE_").lower())
        for v in enum.values
        if v.number != 0
    }
    assert names == AMAZON_REASON_CODES


def test_every_request_has_merchant() -> None:
    requests = [m for m in all_messages() if m.name.endswith("Request")]
    assert len(requests) == len(all_rpcs())
    for message in requests:
        field = message.fields_by_name.get("merchant")
        assert field is not None, message.name
        assert field.type == FieldDescriptor.TYPE_STRING, message.name
        assert field.number == 1, message.name


@pytest.mark.parametrize("rpc", sorted(MUTATING_RPCS))
def test_mutating_requests_have_idempotency_key(rpc: str) -> None:
    field = request_of(rpc).fields_by_name.get("idempotency_key")
    assert field is not None, rpc
    assert field.type == FieldDescriptor.TYPE_STRING


def test_read_only_requests_have_no_idempotency_key() -> None:
    for rpc in set(all_rpcs()) - MUTATING_RPCS:
        assert "idempotency_key" not in request_of(rpc).fields_by_name, rpc


def test_required_idempotency_keys_are_documented_as_required() -> None:
    source = "\n".join(p.read_text(encoding="utf-8") for p in sorted(PROTO_DIR.glob("*.proto")))
    for rpc in sorted(MUTATING_RPCS):
        body = re.search(rf"message {rpc}Request \{{(.*?)\n\}}", source, re.DOTALL)
        assert body is not None, rpc
        comment = re.search(r"((?:\s*//[^\n]*\n)+)\s*string idempotency_key", body.group(1))
        assert comment is not None, rpc
        assert ("REQUIRED" in comment.group(1)) == (rpc in REQUIRED_IDEMPOTENCY), rpc


@pytest.mark.parametrize("rpc", sorted(SIMULATION_RPCS))
def test_money_moving_and_create_requests_accept_simulation_code(rpc: str) -> None:
    field = request_of(rpc).fields_by_name.get("sandbox_simulation_code")
    assert field is not None, rpc
    assert field.type == FieldDescriptor.TYPE_STRING


def test_get_requests_have_read_source_and_responses_say_where_from() -> None:
    for rpc in all_rpcs():
        if not rpc.startswith("Get") or rpc in LEDGER_ONLY_READS:
            continue
        source = request_of(rpc).fields_by_name.get("source")
        assert source is not None, rpc
        assert source.enum_type is not None
        assert source.enum_type.name == "ReadSource"
        response = request_of(rpc).file.message_types_by_name[f"{rpc}Response"]
        served_from = response.fields_by_name["served_from"].enum_type
        assert served_from is not None
        assert served_from.name == "DataOrigin", rpc
        assert "amazon_request_id" in response.fields_by_name, rpc
    read_source = common_pb2.DESCRIPTOR.enum_types_by_name["ReadSource"]
    assert [v.name for v in read_source.values] == [
        "READ_SOURCE_UNSPECIFIED",
        "READ_SOURCE_AUTO",
        "READ_SOURCE_LEDGER",
        "READ_SOURCE_AMAZON",
    ]


def test_amazon_responses_carry_request_id() -> None:
    for rpc in all_rpcs():
        if rpc in {"SignButtonPayload", *LEDGER_ONLY_READS} or request_of(rpc).file in (
            ledger_pb2.DESCRIPTOR,
            settlement_pb2.DESCRIPTOR,
        ):
            continue
        response = request_of(rpc).file.message_types_by_name[f"{rpc}Response"]
        field = response.fields_by_name.get("amazon_request_id")
        assert field is not None, rpc
        assert field.type == FieldDescriptor.TYPE_STRING


def test_amounts_are_strings_never_floats() -> None:
    price = common_pb2.DESCRIPTOR.message_types_by_name["Price"]
    assert price.fields_by_name["amount"].type == FieldDescriptor.TYPE_STRING
    assert price.fields_by_name["currency_code"].type == FieldDescriptor.TYPE_STRING
    floating = {FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE}
    for message in all_messages():
        for field in message.fields:
            assert field.type not in floating, f"{message.full_name}.{field.name}"
            if "amount" in field.name or field.name == "conversion_rate":
                assert field.type in {FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_MESSAGE}
                if field.type == FieldDescriptor.TYPE_MESSAGE:
                    assert field.message_type is not None
                    assert field.message_type.name == "Price", f"{message.name}.{field.name}"


def test_timestamps_are_well_known_timestamps() -> None:
    for message in all_messages():
        for field in message.fields:
            if field.name.endswith(("_timestamp", "_at")) or field.name in {
                "created_after",
                "created_before",
                "occurred_after",
                "occurred_before",
                "as_of",
            }:
                assert field.message_type is not None, f"{message.name}.{field.name}"
                assert field.message_type.full_name == "google.protobuf.Timestamp"


def test_amazon_enums_have_raw_strings_outside_requests() -> None:
    checked = 0
    for message in all_messages():
        if message.name.endswith("Request"):
            continue
        for field in message.fields:
            if field.enum_type is None or field.enum_type.name not in AMAZON_ENUMS:
                continue
            raw = message.fields_by_name.get(f"raw_{field.name}")
            assert raw is not None, f"{message.full_name}.{field.name} lacks raw_{field.name}"
            assert raw.type == FieldDescriptor.TYPE_STRING
            checked += 1
    assert checked >= 12


def test_charge_permission_status_has_reasons_list() -> None:
    status = charge_permission_pb2.ChargePermissionStatusDetails.DESCRIPTOR
    reasons = status.fields_by_name["reasons"]
    assert reasons.is_repeated
    assert reasons.message_type is not None
    assert reasons.message_type.name == "StatusReason"
    for name in ("CheckoutSessionStatusDetails", "ChargeStatusDetails", "RefundStatusDetails"):
        message = next(m for m in all_messages() if m.name == name)
        assert {
            "state",
            "raw_state",
            "reason_code",
            "raw_reason_code",
            "reason_description",
            "last_updated_timestamp",
        } <= set(message.fields_by_name)


def test_updates_take_a_field_mask() -> None:
    for rpc in ("UpdateCheckoutSession", "UpdateChargePermission"):
        mask = request_of(rpc).fields_by_name["update_mask"]
        assert mask.message_type is not None
        assert mask.message_type.full_name == "google.protobuf.FieldMask"


def test_ledger_messages() -> None:
    transaction = ledger_pb2.Transaction.DESCRIPTOR
    assert set(transaction.oneofs_by_name["object"].fields) == {
        transaction.fields_by_name[n]
        for n in ("checkout_session", "charge_permission", "charge", "refund", "dispute")
    }
    event = ledger_pb2.LedgerEvent.DESCRIPTOR
    assert event.fields_by_name["event_id"].type == FieldDescriptor.TYPE_INT64
    assert "snapshot" in event.oneofs_by_name
    kinds = [v.name for v in ledger_pb2.ObjectKind.DESCRIPTOR.values]
    assert kinds[1:] == [
        "OBJECT_KIND_CHECKOUT_SESSION",
        "OBJECT_KIND_CHARGE_PERMISSION",
        "OBJECT_KIND_CHARGE",
        "OBJECT_KIND_REFUND",
        "OBJECT_KIND_DISPUTE",
        "OBJECT_KIND_SETTLEMENT_LINE",
    ]
    sources = [v.name for v in ledger_pb2.EventSource.DESCRIPTOR.values]
    assert sources[1:] == [
        "EVENT_SOURCE_API",
        "EVENT_SOURCE_POLL",
        "EVENT_SOURCE_IPN",
        "EVENT_SOURCE_RECOVERY",
        "EVENT_SOURCE_SETTLEMENT",
    ]
    snapshots = {f.name for f in event.oneofs_by_name["snapshot"].fields}
    assert {"dispute", "settlement_line"} <= snapshots
    watch = ledger_pb2.WatchEventsRequest.DESCRIPTOR
    assert watch.fields_by_name["after_event_id"].type == FieldDescriptor.TYPE_INT64
    for name in ("ListTransactions", "ListEvents"):
        request = request_of(name)
        assert {"page_size", "page_token"} <= set(request.fields_by_name)
        response = ledger_pb2.DESCRIPTOR.message_types_by_name[f"{name}Response"]
        assert "next_page_token" in response.fields_by_name


def test_messages_round_trip() -> None:
    charge = charge_pb2.Charge(
        charge_id="S01-5105180-3221187-C056351",
        charge_amount=common_pb2.Price(amount="14.00", currency_code="USD"),
        status_details=charge_pb2.ChargeStatusDetails(
            state=charge_pb2.CHARGE_STATE_CAPTURED, raw_state="Captured"
        ),
    )
    event = ledger_pb2.LedgerEvent(event_id=7, charge=charge)
    parsed = ledger_pb2.LedgerEvent.FromString(event.SerializeToString())
    assert parsed.WhichOneof("snapshot") == "charge"
    assert parsed.charge.charge_amount.amount == "14.00"
    # An Amazon value unknown to this API version survives in the raw string.
    status = charge_pb2.ChargeStatusDetails(raw_state="SomethingNew")
    assert status.state == charge_pb2.CHARGE_STATE_UNSPECIFIED
    assert status.raw_state == "SomethingNew"


def test_committed_stubs_match_protos() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "gen_protos.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO_ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_buf_lint_is_clean() -> None:
    buf = Path(sys.executable).parent / "buf"
    executable = str(buf) if buf.is_file() else shutil.which("buf")
    if executable is None:
        pytest.skip("buf is not installed")
    result = subprocess.run(
        [executable, "lint"], capture_output=True, text=True, check=False, cwd=REPO_ROOT
    )
    assert result.returncode == 0, result.stdout + result.stderr
