"""`python -m amazonpay_client`: the on-call tool over the same typed client.

Examples:
    python -m amazonpay_client order ORDER-4711          # charged? captured? refunded? history
    python -m amazonpay_client get charge S01-1234567-1234567-C000001
    python -m amazonpay_client ledger list --kind charge --state Captured
    python -m amazonpay_client ledger show charge S01-1234567-1234567-C000001
    python -m amazonpay_client ledger events --charge-permission-id S01-1234567-1234567
    python -m amazonpay_client ledger watch --kind charge --after-event-id 1200
    python -m amazonpay_client refund S01-...-C000001 5.00 USD   # asks first; prints its key
    python -m amazonpay_client reconcile --from 2026-03-01T00:00Z --to 2026-03-08T00:00Z
    python -m amazonpay_client demo                        # a whole purchase against `make run`
Money-moving commands (capture, cancel, refund) show what they will do and ask for "yes" (or
take --yes); each prints its idempotency key first: after a failure or a timeout, repeat the
command with --idempotency-key KEY and the service answers that same request, never a second one.
Connection: --target (env AMAZONPAY_TARGET), --merchant (env AMAZONPAY_MERCHANT), --tls,
--ca-file, --cert-file/--key-file (mTLS), token from env AMAZONPAY_TOKEN or --token-file.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import IO, Any, TypeVar

import grpc
from google.protobuf.message import Message

from ._client import DEFAULT_TARGET, AmazonPayClient
from ._demo import DEFAULT_EMULATOR_URL, run_demo
from ._errors import AmazonPayServiceError
from ._format import (
    EVENT_COLUMNS,
    TRANSACTION_COLUMNS,
    event_line,
    event_row,
    flatten,
    key_values,
    order_verdict,
    table,
    to_dict,
    to_json,
    transaction_row,
    transaction_summary,
)
from ._reconcile import add_reconcile_command, reconcile
from ._services import KINDS, price
from ._transport import new_key

T = TypeVar("T")
Shown = TypeVar("Shown", bound=Message)

__all__ = ["amain", "main"]

EXIT_OK = 0
EXIT_RPC_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

_OBJECTS = ("checkout-session", "charge-permission", "charge", "refund", "dispute", "buyer")
_KIND_CHOICES = tuple(k.replace("_", "-") for k in KINDS)


def _connection_options(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    """Options valid before or after the command; in sub-parsers they default to SUPPRESS so a
    value given before the command is not overwritten by the sub-parser's default."""

    def default(value: Any) -> Any:
        return argparse.SUPPRESS if suppress else value

    group = parser.add_argument_group("connection")
    group.add_argument(
        "--target",
        default=default(os.environ.get("AMAZONPAY_TARGET", DEFAULT_TARGET)),
        help=f"host:port of the service (env AMAZONPAY_TARGET; default {DEFAULT_TARGET})",
    )
    group.add_argument(
        "--merchant",
        default=default(os.environ.get("AMAZONPAY_MERCHANT", "")),
        help="merchant account alias (env AMAZONPAY_MERCHANT; empty = the default account)",
    )
    group.add_argument("--tls", action="store_true", default=default(False), help="use TLS")
    group.add_argument("--ca-file", type=Path, default=default(None), help="CA bundle (PEM)")
    group.add_argument(
        "--cert-file", type=Path, default=default(None), help="client certificate (mTLS)"
    )
    group.add_argument("--key-file", type=Path, default=default(None), help="client key (mTLS)")
    group.add_argument(
        "--server-name", default=default(None), help="TLS server name to verify instead"
    )
    group.add_argument(
        "--token-file",
        type=Path,
        default=default(None),
        help="file holding the bearer token (else env AMAZONPAY_TOKEN)",
    )
    group.add_argument(
        "--timeout", type=float, default=default(15.0), help="seconds per call (default 15)"
    )
    group.add_argument(
        "--json", action="store_true", default=default(False), help="print JSON instead"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m amazonpay_client",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _connection_options(parser, suppress=False)
    common = argparse.ArgumentParser(add_help=False)
    _connection_options(common, suppress=True)
    commands = parser.add_subparsers(dest="command", required=True)

    get = commands.add_parser("get", parents=[common], help="get one object (Get* RPC)")
    get.add_argument("object", choices=_OBJECTS)
    get.add_argument("id", help="Amazon id (buyer: buyer token)")
    get.add_argument(
        "--source", choices=("auto", "ledger", "amazon"), default="auto", help="where to read"
    )

    ledger = commands.add_parser("ledger", help="ledger queries").add_subparsers(
        dest="ledger_command", required=True
    )
    listing = ledger.add_parser("list", parents=[common], help="list transactions")
    listing.add_argument("--kind", choices=_KIND_CHOICES)
    listing.add_argument("--state", help='Amazon state verbatim, e.g. "Captured"')
    listing.add_argument("--charge-permission-id")
    listing.add_argument("--reference", help="merchant_reference_id (exact)")
    listing.add_argument("--created-after", type=_when, help="ISO time, e.g. 2026-01-31T00:00Z")
    listing.add_argument("--created-before", type=_when)
    listing.add_argument("--limit", type=int, default=50, help="most rows (%(default)s)")

    show = ledger.add_parser("show", parents=[common], help="one transaction and its events")
    show.add_argument("kind", choices=_KIND_CHOICES)
    show.add_argument("id")

    events = ledger.add_parser("events", parents=[common], help="list ledger events")
    _event_filters(events)
    events.add_argument("--source", choices=("api", "poll", "ipn", "recovery"))
    events.add_argument("--limit", type=int, default=100, help="most rows (%(default)s)")

    watch = ledger.add_parser("watch", parents=[common], help="stream events as they happen")
    _event_filters(watch)
    watch.add_argument("--count", type=int, default=None, help="stop after this many events")

    order = commands.add_parser(
        "order", parents=[common], help="everything recorded for one merchant reference"
    )
    order.add_argument("reference", help="merchant_reference_id, e.g. the shop's order number")

    capture = commands.add_parser("capture", parents=[common], help="capture a charge (guarded)")
    capture.add_argument("charge_id")
    capture.add_argument("amount", help='e.g. "14.00"')
    capture.add_argument("currency", help="e.g. USD")
    cancel = commands.add_parser("cancel", parents=[common], help="cancel a charge (guarded)")
    cancel.add_argument("charge_id")
    cancel.add_argument("--reason", default=None, help="cancellation reason (to Amazon)")
    refund = commands.add_parser("refund", parents=[common], help="refund a charge (guarded)")
    refund.add_argument("charge_id")
    refund.add_argument("amount", help='e.g. "5.00"')
    refund.add_argument("currency", help="e.g. USD")
    for guarded in (capture, cancel, refund):
        guarded.add_argument(
            "--idempotency-key",
            default=None,
            help="repeat an earlier attempt: the key it printed (default: a new key)",
        )
        guarded.add_argument("--yes", action="store_true", help="do not ask for confirmation")

    demo = commands.add_parser(
        "demo", parents=[common], help="a whole purchase with two refunds against `make run`"
    )
    demo.add_argument(
        "--emulator-url",
        default=os.environ.get("EMULATOR_URL", DEFAULT_EMULATOR_URL),
        help=f"the dev emulator (env EMULATOR_URL; default {DEFAULT_EMULATOR_URL})",
    )
    demo.add_argument(
        "--amount", type=_amount, default="50.00", help="order amount in USD (%(default)s)"
    )
    add_reconcile_command(commands, common, _when)
    return parser


def _event_filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kind", choices=_KIND_CHOICES)
    parser.add_argument("--object-id")
    parser.add_argument("--charge-permission-id")
    parser.add_argument("--after-event-id", type=int, default=0)


def _amount(value: str) -> str:
    if not re.fullmatch(r"\d{1,9}(\.\d{1,2})?", value) or float(value) < 1:
        raise argparse.ArgumentTypeError("an amount of at least 1, e.g. 50.00")
    return value


def _when(value: str) -> datetime:
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        raise argparse.ArgumentTypeError("give a time zone, e.g. 2026-01-31T00:00Z")
    return parsed


def _client(args: argparse.Namespace) -> AmazonPayClient:
    token: str | None = os.environ.get("AMAZONPAY_TOKEN") or None
    if args.token_file is not None:
        token = args.token_file.read_text().strip()
    return AmazonPayClient(
        args.target,
        merchant=args.merchant,
        tls=args.tls,
        root_certificates=args.ca_file,
        client_certificate=args.cert_file,
        client_key=args.key_file,
        server_name=args.server_name,
        token=token,
        read_timeout=args.timeout,
    )


async def _get(client: AmazonPayClient, args: argparse.Namespace, out: IO[str]) -> None:
    services: dict[str, Any] = {
        "checkout-session": (client.checkout_sessions, "checkout_session"),
        "charge-permission": (client.charge_permissions, "charge_permission"),
        "charge": (client.charges, "charge"),
        "refund": (client.refunds, "refund"),
        "dispute": (client.disputes, "dispute"),
        "buyer": (client.buyers, "buyer"),
    }
    service, field = services[args.object]
    response = await service.get(args.id, source=args.source)
    if args.json:
        print(to_json(response), file=out)
        return
    origin = {1: "amazon", 2: "ledger"}.get(response.served_from, "?")
    as_of = response.as_of.ToDatetime().replace(microsecond=0).isoformat()
    print(f"{args.object} {args.id}  (served from {origin}, as of {as_of} UTC)", file=out)
    print(key_values(flatten(to_dict(getattr(response, field)))), file=out)


def _scope(args: argparse.Namespace) -> dict[str, Any]:
    """The filters every ledger listing takes from the command line."""
    return {"kind": args.kind, "charge_permission_id": args.charge_permission_id}


async def _first(items: AsyncIterator[T], limit: int) -> list[T]:
    """At most `limit` items of a listing (no page after the one holding the last is read)."""
    found: list[T] = []
    async for item in items:
        found.append(item)
        if len(found) >= limit:
            break
    return found


def _print_found(
    found: Sequence[Shown],
    args: argparse.Namespace,
    out: IO[str],
    *,
    noun: str,
    columns: Sequence[str],
    row: Callable[[Shown], Sequence[str]],
) -> None:
    if args.json:
        print(to_json(found), file=out)
        return
    print(table(columns, [row(item) for item in found]), file=out)
    print(f"({len(found)} {noun}{'s' if len(found) != 1 else ''})", file=out)


async def _list(client: AmazonPayClient, args: argparse.Namespace, out: IO[str]) -> None:
    found = await _first(
        client.ledger.iter_transactions(
            **_scope(args),
            state=args.state,
            merchant_reference_id=args.reference,
            created_after=args.created_after,
            created_before=args.created_before,
            page_size=min(max(args.limit, 1), 500),
        ),
        args.limit,
    )
    _print_found(
        found, args, out, noun="transaction", columns=TRANSACTION_COLUMNS, row=transaction_row
    )


async def _show(client: AmazonPayClient, args: argparse.Namespace, out: IO[str]) -> None:
    response = await client.ledger.get_transaction(args.kind, args.id)
    if args.json:
        print(to_json(response), file=out)
        return
    print(key_values(transaction_summary(response.transaction)), file=out)
    print(f"\nEvents ({len(response.events)}):", file=out)
    print(table(EVENT_COLUMNS, [event_row(e) for e in response.events]), file=out)


async def _events(client: AmazonPayClient, args: argparse.Namespace, out: IO[str]) -> None:
    found = await _first(
        client.ledger.iter_events(
            **_scope(args),
            object_id=args.object_id,
            source=args.source,
            after_event_id=args.after_event_id or None,
            page_size=min(max(args.limit, 1), 1000),
        ),
        args.limit,
    )
    _print_found(found, args, out, noun="event", columns=EVENT_COLUMNS, row=event_row)


async def _watch(client: AmazonPayClient, args: argparse.Namespace, out: IO[str]) -> None:
    seen = 0
    if not args.json:
        print("watching ledger events (Ctrl-C to stop)...", file=out, flush=True)
    async for event in client.ledger.watch_events(
        **_scope(args), object_id=args.object_id, after_event_id=args.after_event_id
    ):
        if args.json:
            print(json.dumps(to_dict(event), sort_keys=True), file=out, flush=True)
        else:
            print(event_line(event), file=out, flush=True)
        seen += 1
        if args.count is not None and seen >= args.count:
            return


async def _order(client: AmazonPayClient, args: argparse.Namespace, out: IO[str]) -> None:
    """Was order X charged, captured, refunded? Every ledger object of the reference's charge
    permissions, their money, and the whole history in commit order."""
    named = [t async for t in client.ledger.iter_transactions(merchant_reference_id=args.reference)]
    permissions = sorted({t.charge_permission_id for t in named if t.charge_permission_id})
    found = {(t.kind, t.object_id): t for t in named}
    for permission in permissions:
        async for tx in client.ledger.iter_transactions(charge_permission_id=permission):
            found[(tx.kind, tx.object_id)] = tx
    if not found:
        raise AmazonPayServiceError(
            grpc.StatusCode.NOT_FOUND,
            f"the ledger has nothing for merchant reference {args.reference!r}",
            reason="NOT_IN_LEDGER",
        )
    events: dict[int, Any] = {}
    for tx in found.values():
        for event in (await client.ledger.get_transaction(tx.kind, tx.object_id)).events:
            events[event.event_id] = event
    history = [events[i] for i in sorted(events)]
    transactions = sorted(found.values(), key=lambda t: (t.created_at.ToDatetime(), t.kind))
    if args.json:
        print(
            json.dumps(
                {
                    "merchant_reference_id": args.reference,
                    "transactions": [to_dict(t) for t in transactions],
                    "events": [to_dict(e) for e in history],
                },
                indent=1,
            ),
            file=out,
        )
        return
    print(f"order {args.reference}", file=out)
    for line in order_verdict(transactions):
        print(f"  {line}", file=out)
    print("", file=out)
    print(table(TRANSACTION_COLUMNS, [transaction_row(t) for t in transactions]), file=out)
    print(f"\nHistory ({len(history)} events):", file=out)
    print(table(EVENT_COLUMNS, [event_row(e) for e in history]), file=out)


def _confirm(args: argparse.Namespace, out: IO[str], *, what: str, key: str) -> bool:
    target = f"{args.target} (merchant {args.merchant or 'default'})"
    print(f"About to {what} at {target}.", file=out)
    print(f"idempotency key: {key}", file=out)
    print(f"  (to repeat this exact request later: --idempotency-key {key})", file=out, flush=True)
    if args.yes:
        return True
    if not sys.stdin.isatty():
        print("refused: not a terminal; pass --yes to confirm", file=out)
        return False
    answer = input('Type "yes" to go ahead: ')
    return answer.strip() == "yes"


async def _money_move(client: AmazonPayClient, args: argparse.Namespace, out: IO[str]) -> int:
    key = args.idempotency_key or new_key()
    if args.command == "cancel":
        what = f"CANCEL charge {args.charge_id}"
    else:
        verb = "CAPTURE" if args.command == "capture" else "REFUND"
        what = f"{verb} {args.amount} {args.currency} of charge {args.charge_id}"
    if not _confirm(args, out, what=what, key=key):
        print("nothing was sent", file=out)
        return EXIT_USAGE
    response: Any
    if args.command == "capture":
        response = await client.charges.capture(
            args.charge_id, capture_amount=price(args.amount, args.currency), idempotency_key=key
        )
        result = response.charge
    elif args.command == "cancel":
        response = await client.charges.cancel(
            args.charge_id, cancellation_reason=args.reason, idempotency_key=key
        )
        result = response.charge
    else:
        response = await client.refunds.create(
            charge_id=args.charge_id,
            refund_amount=price(args.amount, args.currency),
            idempotency_key=key,
        )
        result = response.refund
    if args.json:
        print(to_json(response), file=out)
        return EXIT_OK
    replay = (
        " (a replay of the earlier request with this key)" if response.idempotent_replay else ""
    )
    print(f"done{replay}: {result.status_details.raw_state}", file=out)
    print(key_values(flatten(to_dict(result))), file=out)
    print(f"amazon request id: {response.amazon_request_id}", file=out)
    return EXIT_OK


async def _demo(client: AmazonPayClient, args: argparse.Namespace, out: IO[str]) -> None:
    result = await run_demo(client, args.emulator_url, out, amount=args.amount)
    if args.json:
        print(json.dumps(result, indent=1), file=out)


def _print_error(error: AmazonPayServiceError, err: IO[str]) -> None:
    print(f"error: {error.code.name}", end="", file=err)
    if error.reason:
        print(f" [{error.reason}] (domain {error.domain})", end="", file=err)
    print(f": {error.message}", file=err)
    for field, description in error.field_violations.items():
        print(f"  {field}: {description}", file=err)
    for key, value in error.metadata.items():
        print(f"  {key} = {value}", file=err)


async def amain(
    argv: Sequence[str] | None = None, out: IO[str] | None = None, err: IO[str] | None = None
) -> int:
    """Run one command; returns the exit code (0 ok, 1 RPC error, 2 usage)."""
    out = out or sys.stdout
    err = err or sys.stderr
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        client = _client(args)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=err)
        return EXIT_USAGE
    handlers = {"list": _list, "show": _show, "events": _events, "watch": _watch}
    commands = {"get": _get, "order": _order, "demo": _demo, "reconcile": reconcile}
    async with client:
        try:
            if args.command in ("capture", "cancel", "refund"):
                return await _money_move(client, args, out)
            handler = commands.get(args.command) or handlers[args.ledger_command]
            await handler(client, args, out)
        except AmazonPayServiceError as error:
            _print_error(error, err)
            return EXIT_RPC_ERROR
        except (ValueError, RuntimeError, EOFError) as exc:
            print(f"error: {exc}", file=err)
            return EXIT_USAGE
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return asyncio.run(amain(argv))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
