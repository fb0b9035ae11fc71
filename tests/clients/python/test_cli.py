"""The on-call CLI against the real service: readable tables, --json, exit codes."""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import sys

from amazonpay_client import AmazonPayClient, price
from amazonpay_client._cli import amain

from tests._emulator import EmulatorProcess
from tests._process import REPO
from tests.clients.python._flows import checkout


async def _run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = await amain(list(argv), out, err)
    return code, out.getvalue(), err.getvalue()


async def test_get_charge_prints_its_fields_as_a_table(
    target: str, client: AmazonPayClient, clean_emulator: EmulatorProcess
) -> None:
    done = await checkout(client, clean_emulator, amount="42.50")
    code, out, err = await _run("get", "charge", done.charge_id, "--target", target)
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].startswith(f"charge {done.charge_id}  (served from amazon")
    rows = {line.split()[0]: line.split(maxsplit=1)[1] for line in lines[1:]}
    assert rows["status_details.raw_state"] == "Authorized"
    assert rows["charge_amount.amount"] == "42.50"
    assert rows["charge_permission_id"] == done.charge_permission_id


async def test_json_output_is_the_proto_json_of_the_response(
    target: str, client: AmazonPayClient, clean_emulator: EmulatorProcess
) -> None:
    done = await checkout(client, clean_emulator)
    code, out, _ = await _run(
        "--target", target, "--json", "get", "charge-permission", done.charge_permission_id
    )
    assert code == 0
    body = json.loads(out)
    assert body["charge_permission"]["charge_permission_id"] == done.charge_permission_id
    assert body["served_from"] == "DATA_ORIGIN_AMAZON"


async def test_ledger_list_filters_by_kind_and_state(
    target: str, client: AmazonPayClient, clean_emulator: EmulatorProcess
) -> None:
    captured = await checkout(client, clean_emulator, reference="order-captured")
    await client.charges.capture(captured.charge_id, capture_amount=price("100.00", "USD"))
    authorized = await checkout(client, clean_emulator, reference="order-authorized")
    code, out, _ = await _run(
        "ledger", "list", "--kind", "charge", "--state", "Captured", "--target", target
    )
    assert code == 0
    header, *rows, footer = out.splitlines()
    assert header.split()[:4] == ["KIND", "OBJECT", "ID", "STATE"]
    assert len(rows) == 1
    assert rows[0].split()[:3] == ["charge", captured.charge_id, "Captured"]
    assert "order-captured" in rows[0]
    assert footer == "(1 transaction)"
    assert authorized.charge_id not in out

    code, out, _ = await _run(
        "ledger", "list", "--kind", "charge", "--state", "Captured", "--json", "--target", target
    )
    assert [t["object_id"] for t in json.loads(out)] == [captured.charge_id]


async def test_ledger_show_prints_the_transaction_and_its_history(
    target: str, client: AmazonPayClient, clean_emulator: EmulatorProcess
) -> None:
    done = await checkout(client, clean_emulator)
    await client.charges.capture(done.charge_id, capture_amount=price("100.00", "USD"))
    code, out, _ = await _run("ledger", "show", "charge", done.charge_id, "--target", target)
    assert code == 0
    summary, history = out.split("\nEvents (")
    fields = dict(re.split(r"\s{2,}", line, maxsplit=1) for line in summary.splitlines())
    assert fields["OBJECT ID"] == done.charge_id
    assert fields["STATE"] == "Captured"
    assert fields["CHARGE PERMISSION"] == done.charge_permission_id
    count, header, *rows = history.splitlines()
    assert count.startswith(f"{len(rows)}):")
    assert header.split()[0] == "EVENT"
    assert "Authorized -> Captured" in rows[-1]


async def test_ledger_events_and_watch_replay_history(
    target: str, client: AmazonPayClient, clean_emulator: EmulatorProcess
) -> None:
    done = await checkout(client, clean_emulator)
    code, out, _ = await _run(
        "ledger", "events", "--object-id", done.charge_id, "--json", "--target", target
    )
    assert code == 0
    events = json.loads(out)
    assert [e["raw_state"] for e in events] == ["Authorized"]
    first = int(events[0]["event_id"])

    code, out, _ = await _run(
        "ledger",
        "watch",
        "--object-id",
        done.charge_id,
        "--after-event-id",
        str(first - 1),
        "--count",
        "1",
        "--target",
        target,
    )
    assert code == 0
    banner, line = out.splitlines()
    assert banner.startswith("watching")
    assert line.startswith(f"#{first}  ")
    assert f"charge {done.charge_id}  Authorized  via api" in line


async def test_errors_print_the_reason_and_exit_1(
    target: str, clean_emulator: EmulatorProcess
) -> None:
    code, out, err = await _run(
        "ledger", "show", "refund", "S01-0000000-0000000-R1", "--target", target
    )
    assert (code, out) == (1, "")
    assert err.startswith("error: NOT_FOUND [NOT_IN_LEDGER] (domain payments.amazonpay.v1):")


async def test_usage_errors_exit_2() -> None:
    code, _, _ = await _run("get", "order", "x")
    assert code == 2


async def test_python_dash_m_runs_the_cli_as_a_process(
    target: str, client: AmazonPayClient, clean_emulator: EmulatorProcess
) -> None:
    done = await checkout(client, clean_emulator)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "amazonpay_client",
        "get",
        "charge",
        done.charge_id,
        "--source",
        "ledger",
        cwd=REPO,
        env={**os.environ, "AMAZONPAY_TARGET": target},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, stderr.decode()
    assert "served from ledger" in stdout.decode()


async def test_order_answers_charged_captured_refunded_with_the_whole_history(
    target: str, client: AmazonPayClient, clean_emulator: EmulatorProcess
) -> None:
    done = await checkout(client, clean_emulator, amount="40.00", reference="ORDER-4711")
    await client.charges.capture(done.charge_id, capture_amount=price("40.00", "USD"))
    refund = await client.refunds.create(
        charge_id=done.charge_id, refund_amount=price("7.00", "USD")
    )
    code, out, err = await _run("order", "ORDER-4711", "--target", target)
    assert (code, err) == (0, "")
    assert out.startswith("order ORDER-4711\n")
    assert f"charge {done.charge_id}: Captured 40.00 USD" in out
    assert "captured: 40.00 USD" in out
    assert f"refund {refund.refund.refund_id}: RefundInitiated 7.00 USD" in out
    history = out.split("History (", 1)[1]
    for state in ("Open", "Completed", "Authorized", "Authorized -> Captured", "RefundInitiated"):
        assert state in history
    code, out, _ = await _run("order", "ORDER-4711", "--target", target, "--json")
    body = json.loads(out)
    kinds = sorted(t["kind"] for t in body["transactions"])
    assert kinds == sorted(
        [
            "OBJECT_KIND_CHECKOUT_SESSION",
            "OBJECT_KIND_CHARGE_PERMISSION",
            "OBJECT_KIND_CHARGE",
            "OBJECT_KIND_REFUND",
        ]
    )
    ids = [int(e["event_id"]) for e in body["events"]]
    assert ids == sorted(ids)
    api_events = [e for e in body["events"] if e["source"] == "EVENT_SOURCE_API"]
    assert api_events
    assert all(e["amazon_request_id"] for e in api_events)


async def test_order_of_an_unknown_reference_is_not_found(target: str) -> None:
    code, _, err = await _run("order", "no-such-order", "--target", target)
    assert code == 1
    assert "NOT_FOUND [NOT_IN_LEDGER]" in err


async def test_guarded_refund_sends_nothing_without_confirmation(
    target: str, client: AmazonPayClient, clean_emulator: EmulatorProcess
) -> None:
    done = await checkout(client, clean_emulator, amount="20.00")
    await client.charges.capture(done.charge_id, capture_amount=price("20.00", "USD"))
    stdin = sys.stdin
    sys.stdin = io.StringIO("")  # not a terminal
    try:
        code, out, _ = await _run("refund", done.charge_id, "5.00", "USD", "--target", target)
    finally:
        sys.stdin = stdin
    assert code == 2
    assert "refused: not a terminal; pass --yes to confirm" in out
    assert "nothing was sent" in out
    assert not [
        r for r in await clean_emulator.objects("refunds") if r["chargeId"] == done.charge_id
    ]


async def test_guarded_refund_prints_a_key_whose_reuse_replays_instead_of_refunding_twice(
    target: str, client: AmazonPayClient, clean_emulator: EmulatorProcess
) -> None:
    done = await checkout(client, clean_emulator, amount="20.00")
    code, out, _ = await _run(
        "capture", done.charge_id, "20.00", "USD", "--yes", "--target", target
    )
    assert code == 0, out
    assert "done: Captured" in out
    code, out, err = await _run(
        "refund", done.charge_id, "5.00", "USD", "--yes", "--target", target
    )
    assert (code, err) == (0, "")
    assert f"About to REFUND 5.00 USD of charge {done.charge_id}" in out
    key = re.search(r"^idempotency key: (\w+)$", out, re.MULTILINE)
    assert key, out
    assert "done: RefundInitiated" in out
    assert "(a replay" not in out
    code, again, _ = await _run(
        "refund",
        done.charge_id,
        "5.00",
        "USD",
        "--yes",
        "--idempotency-key",
        key[1],
        "--target",
        target,
    )
    assert code == 0
    assert f"idempotency key: {key[1]}" in again
    assert "done (a replay of the earlier request with this key)" in again
    refunds = [
        r for r in await clean_emulator.objects("refunds") if r["chargeId"] == done.charge_id
    ]
    assert len(refunds) == 1
    code, out, _ = await _run("cancel", done.charge_id, "--yes", "--target", target)
    assert code == 1  # a captured charge cannot be canceled: Amazon's refusal, shown as an error
