"""The one emulator launcher (`emulator.launch`) the fixtures, the benchmark and the dev stack use."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import aiohttp
import pytest

from bench._stack import Emulator as BenchEmulator
from emulator.launch import EmulatorExited, launch
from emulator.launch import write_key_pair as launch_key_pair
from service._devstack import DevAmazonPay
from tests._emulator import EmulatorProcess, write_key_pair

KEY_ID = "SANDBOX-LAUNCHTEST000000000000"


async def _health(url: str) -> int:
    async with aiohttp.ClientSession() as http, http.get(f"{url}/_emulator/health") as response:
        return response.status


async def test_launch_serves_on_a_free_port_and_stop_ends_the_child(tmp_path: Path) -> None:
    _, public = write_key_pair(tmp_path / "keys")
    stale = tmp_path / "run" / "emulator-ready.json"
    stale.parent.mkdir()
    stale.write_text('{"url": "http://127.0.0.1:1"}\n')
    child = await launch(workdir=tmp_path / "run", keys={KEY_ID: public})
    try:
        assert child.url != "http://127.0.0.1:1"
        assert child.url.startswith("http://127.0.0.1:")
        assert child.ready["http_port"] > 0
        assert await _health(child.url) == 200
    finally:
        await child.stop()
    assert child.process.returncode is not None
    await child.stop()


async def test_a_child_that_dies_during_start_up_is_reported_with_its_exit_code(
    tmp_path: Path,
) -> None:
    with pytest.raises(EmulatorExited) as caught:
        await launch(workdir=tmp_path, keys={KEY_ID: tmp_path / "missing.pem"})
    assert caught.value.returncode != 0


async def test_the_tls_option_still_reaches_the_child(tmp_path: Path) -> None:
    _, public = write_key_pair(tmp_path / "keys")
    child = await launch(
        workdir=tmp_path, keys={KEY_ID: public}, data_dir=tmp_path, extra_args=("--tls-port", "0")
    )
    try:
        assert child.ready["tls_port"] > 0
        assert child.ready["ca_file"]
        assert await asyncio.to_thread(Path(child.ready["ca_file"]).is_file)
    finally:
        await child.stop()


async def test_dev_stack_names_dev_emulator_port_when_its_port_is_taken(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(RuntimeError, match="DEV_EMULATOR_PORT"):
            await DevAmazonPay(tmp_path, port=port).start()


async def test_dev_stack_bench_and_fixture_all_serve_through_the_launcher(tmp_path: Path) -> None:
    _, public = write_key_pair(tmp_path / "keys")
    dev = DevAmazonPay(tmp_path / "dev")
    endpoint = await dev.start()
    try:
        assert await _health(endpoint.endpoint) == 200
        assert (tmp_path / "dev" / "emulator-ready.json").is_file()
        assert endpoint.private_key_file.stat().st_mode & 0o777 == 0o600
    finally:
        await dev.stop()
    assert (tmp_path / "dev" / "emulator-state.json").is_file()
    bench = BenchEmulator(tmp_path / "bench", {KEY_ID: public})
    fixture = EmulatorProcess(tmp_path / "fixture", {KEY_ID: public})
    await bench.start()
    await fixture.start()
    try:
        assert fixture.child is not None
        assert bench.pid != fixture.child.pid
        assert await bench.objects("charges") == []
        assert await fixture.objects("charges") == []
    finally:
        await bench.stop()
        await fixture.stop()
    assert bench.process is not None
    assert bench.process.returncode is not None
    assert fixture.process is not None
    assert fixture.process.returncode is not None


def test_key_pairs_are_written_in_the_asked_form(tmp_path: Path) -> None:
    pkcs8, _, _ = launch_key_pair(tmp_path / "pkcs8")
    pkcs1, public = write_key_pair(tmp_path / "pkcs1")
    assert pkcs8.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    assert pkcs1.read_text().startswith("-----BEGIN RSA PRIVATE KEY-----")
    assert public.read_text().startswith("-----BEGIN PUBLIC KEY-----")
