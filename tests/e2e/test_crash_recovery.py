"""A service killed after Amazon accepted a charge and before the ledger commit loses nothing."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import asyncpg
import grpc
import pytest

from payments.amazonpay.v1 import charge_pb2, ledger_pb2
from payments.amazonpay.v1 import checkout_session_pb2 as cs
from tests._emulator import EmulatorProcess
from tests._process import ServiceProcess, free_port
from tests.e2e._flows import checkout, key, usd
from tests.e2e.conftest import Keys, service_env, stubs_for


async def _emulator_charges(emulator: EmulatorProcess, charge_permission_id: str) -> list[str]:
    return [
        c["chargeId"]
        for c in await emulator.objects("charges")
        if c.get("chargePermissionId") == charge_permission_id
    ]


def _lost_create_charge_answers(service: ServiceProcess) -> int:
    """Attempts the service logged as failed (each followed by a retry, or the last one)."""
    lost = 0
    for line in service.log_lines:
        try:
            msg = str(json.loads(line).get("msg", ""))
        except ValueError:
            continue
        if msg.startswith(("amazonpay create_charge retry ", "amazonpay create_charge failed ")):
            lost += 1
    return lost


async def _mid_charge(
    emulator: EmulatorProcess,
    service: ServiceProcess,
    charge_permission_id: str,
    seconds: float = 30.0,
) -> list[str]:
    """Amazon's charges once Amazon made the charge and lost two answers: the first attempt's and
    the replay a retry got. Waiting on those events, not on a number of polls, puts the kill after
    them however slow the machine; with a retry answered, the service would have committed."""
    deadline = time.monotonic() + seconds
    while True:
        charges = await _emulator_charges(emulator, charge_permission_id)
        if charges and _lost_create_charge_answers(service) >= 2:
            return charges
        assert time.monotonic() < deadline, (
            f"not mid-charge: Amazon charges {charges}, "
            f"lost answers {_lost_create_charge_answers(service)}"
        )
        await asyncio.sleep(0.02)


@pytest.mark.slow
async def test_killed_mid_charge_the_restart_re_drives_before_serving(
    database_url: str, clean_emulator: EmulatorProcess, keys: Keys, tmp_path: Path
) -> None:
    port = free_port()
    env = {
        **service_env(database_url, clean_emulator, keys, tmp_path),
        "GRPC_LISTEN": f"127.0.0.1:{port}",
    }
    target = f"127.0.0.1:{port}"
    first = ServiceProcess(env)
    await first.start()
    try:
        await first.wait_serving()
        async with grpc.aio.insecure_channel(target) as channel:
            api = stubs_for(channel, target)
            done = await checkout(api, clean_emulator, intent=cs.PAYMENT_INTENT_CONFIRM)
            # Amazon does the work on the first attempt and replays it to every retry, but every
            # answer is lost: the service cannot commit until it is killed.
            await clean_emulator.control(
                "POST", "faults", {"operation": "CreateCharge", "drop": True, "count": None}
            )
            caller_key = key()
            call = asyncio.ensure_future(
                api.charges.CreateCharge(
                    charge_pb2.CreateChargeRequest(
                        idempotency_key=caller_key,
                        charge_permission_id=done.charge_permission_id,
                        charge_amount=usd("12.00"),
                        capture_now=True,
                    ),
                    timeout=60,
                )
            )
            charges = await _mid_charge(clean_emulator, first, done.charge_permission_id)
            assert len(charges) == 1
            await first.kill()
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await first.kill()

    conn = await asyncpg.connect(database_url)
    try:
        status = await conn.fetchval(
            "SELECT status FROM operations WHERE idempotency_key = $1", caller_key
        )
        assert status == "pending"
        assert await conn.fetchval("SELECT count(*) FROM objects WHERE kind = 'charge'") == 0
    finally:
        await conn.close()

    await clean_emulator.control("DELETE", "faults")
    second = ServiceProcess(env)
    await second.start()
    try:
        await second.wait_serving()
        conn = await asyncpg.connect(database_url)
        try:
            assert (
                await conn.fetchval(
                    "SELECT status FROM operations WHERE idempotency_key = $1", caller_key
                )
                == "succeeded"
            )
            sources = await conn.fetch("SELECT source FROM events WHERE kind = 'charge'")
            assert [r["source"] for r in sources] == ["recovery"]
        finally:
            await conn.close()
        emulator_charges = await _emulator_charges(clean_emulator, done.charge_permission_id)
        assert len(emulator_charges) == 1
        async with grpc.aio.insecure_channel(target) as channel:
            api = stubs_for(channel, target)
            replay = await api.charges.CreateCharge(
                charge_pb2.CreateChargeRequest(
                    idempotency_key=caller_key,
                    charge_permission_id=done.charge_permission_id,
                    charge_amount=usd("12.00"),
                    capture_now=True,
                )
            )
            assert replay.idempotent_replay
            assert replay.charge.charge_id == emulator_charges[0]
            ledger = await api.ledger.ListTransactions(
                ledger_pb2.ListTransactionsRequest(
                    kind=ledger_pb2.OBJECT_KIND_CHARGE,
                    charge_permission_id=done.charge_permission_id,
                )
            )
            assert [t.object_id for t in ledger.transactions] == emulator_charges
        assert await second.terminate() == 0
    finally:
        await second.kill()
