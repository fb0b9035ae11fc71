"""The first hour and the 3 a.m. page, against `python -m service` exactly as `make run` starts it
(embedded Postgres, the dev emulator, nothing configured but free ports): the next-steps block,
the README's first-checkout command, every code snippet of the READMEs (extracted from the
Markdown here, so they cannot rot), one JSON log line per RPC with the Amazon request ids the
emulator returned, request ids on ledger events, and the metrics every alert names."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from amazonpay_client import AmazonPayClient, NotFoundError, price
from amazonpay_client._demo import buyer_step

from tests._process import REPO, ServiceProcess, free_port, stop_orphaned_postgres
from tests.deploy._kustomize import render

README = REPO / "README.md"
PYTHON_README = REPO / "clients" / "python" / "README.md"
NODE_README = REPO / "clients" / "node" / "README.md"
NODE_DIR = REPO / "clients" / "node"
NODE = shutil.which("node")
NPM = shutil.which("npm")
_FENCE = re.compile(r"^```(\w+)[^\n]*\n(.*?)^```\s*$", re.MULTILINE | re.DOTALL)
_METRIC = re.compile(r"\bamazonpay_[a-z_]+")
_HISTOGRAM_SUFFIXES = ("_bucket", "_count", "_sum")


def snippets(text: str, language: str) -> list[str]:
    return [code for lang, code in _FENCE.findall(text) if lang == language]


def doc(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def section(text: str, heading: str) -> str:
    """One `## heading` section of a Markdown text."""
    start = text.index(f"## {heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else None]


def metric_names(exposition: str) -> set[str]:
    names = set()
    for line in exposition.splitlines():
        if line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def exported(name: str, names: set[str]) -> bool:
    """`name` is a series, or the base name of a histogram's series."""
    return name in names or any(f"{name}{suffix}" in names for suffix in _HISTOGRAM_SUFFIXES)


@dataclass
class DevStack:
    service: ServiceProcess
    target: str
    emulator_url: str
    emulator_port: int
    admin_port: int
    startup_metrics: str
    env: dict[str, str] = field(default_factory=dict)

    async def metrics(self) -> str:
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{self.admin_port}/metrics") as reply,
        ):
            return await reply.text()

    def rpc_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.service.log_lines if '"msg":"rpc"' in line]


@pytest.fixture(scope="module")
async def dev() -> AsyncIterator[DevStack]:
    port, admin_port, emulator_port = free_port(), free_port(), free_port()
    # Under the repository (see tests/e2e/test_service_process.py: the embedded server's user).
    data = REPO / ".data" / f"e2e-{uuid.uuid4().hex[:8]}"
    service = ServiceProcess(
        {
            "GRPC_LISTEN": f"127.0.0.1:{port}",
            "IPN_LISTEN": "127.0.0.1:0",
            "ADMIN_LISTEN": f"127.0.0.1:{admin_port}",
            "EMBEDDED_POSTGRES_DIR": str(data / "postgres"),
            "DEV_EMULATOR_PORT": str(emulator_port),
            "DATABASE_URL": "",
            "AMAZON_PAY_PUBLIC_KEY_ID": "",
            "AMAZON_PAY_PRIVATE_KEY_FILE": "",
            "AMAZON_PAY_STORE_ID": "",
            "AMAZON_PAY_ENDPOINT": "",
            "SHUTDOWN_GRACE_S": "5",
            "GRPC_VERBOSITY": "info",  # the C core then writes to stderr; it must stay JSON
        },
        capture_stdout=True,
    )
    await service.start()
    try:
        await service.wait_serving(timeout=120)
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{admin_port}/metrics") as reply,
        ):
            startup = await reply.text()
        env = {
            **os.environ,
            "AMAZONPAY_TARGET": f"127.0.0.1:{port}",
            "DEV_EMULATOR_PORT": str(emulator_port),
            "EMULATOR_URL": f"http://127.0.0.1:{emulator_port}",
        }
        for name in ("AMAZONPAY_MERCHANT", "AMAZONPAY_TOKEN", "MAKEFLAGS", "MAKELEVEL"):
            env.pop(name, None)
        yield DevStack(
            service,
            f"127.0.0.1:{port}",
            f"http://127.0.0.1:{emulator_port}",
            emulator_port,
            admin_port,
            startup,
            env,
        )
    finally:
        await service.kill()
        stop_orphaned_postgres(data / "postgres")
        shutil.rmtree(data, ignore_errors=True)


async def _run(argv: list[str], env: dict[str, str], cwd: Path = REPO, timeout: float = 180) -> str:
    process = await asyncio.create_subprocess_exec(
        *argv,
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout)
    text = output.decode(errors="replace")
    assert process.returncode == 0, f"{argv} exited {process.returncode}:\n{text}"
    return text


async def test_make_run_prints_next_steps_with_the_grpc_address_emulator_and_first_command(
    dev: DevStack,
) -> None:
    for _ in range(100):
        if any("first checkout" in line for line in dev.service.stdout_lines):
            break
        await asyncio.sleep(0.05)
    text = "\n".join(dev.service.stdout_lines)
    assert f"gRPC           {dev.target}" in text
    assert f"emulator       {dev.emulator_url}" in text
    assert f"{dev.emulator_url}/_emulator/checkoutSessions/<checkoutSessionId>/signIn" in text
    assert "first checkout make demo" in text


async def test_the_documented_first_checkout_command_completes_a_purchase_with_two_refunds(
    dev: DevStack,
) -> None:
    [command] = [c.strip() for c in snippets(section(doc(README), "Your first checkout"), "sh")]
    assert command == "make demo"
    output = await _run(["bash", "-c", command], dev.env)
    assert re.search(r"^CaptureCharge\s+\S+ Captured$", output, re.MULTILINE), output
    assert len(re.findall(r"^CreateRefund\s+\S+ \S+ RefundInitiated$", output, re.MULTILINE)) == 2
    reference = re.search(r"amazonpay_client order (demo-\w+)", output)
    assert reference, output
    order = json.loads(
        await _run(
            [sys.executable, "-m", "amazonpay_client", "order", reference[1], "--json"], dev.env
        )
    )
    states = {
        t["kind"]: t["raw_state"]
        for t in order["transactions"]
        if t["kind"] != "OBJECT_KIND_REFUND"
    }
    assert states["OBJECT_KIND_CHECKOUT_SESSION"] == "Completed"
    assert states["OBJECT_KIND_CHARGE"] == "Captured"
    refunds = [t for t in order["transactions"] if t["kind"] == "OBJECT_KIND_REFUND"]
    assert sorted(r["amount"]["amount"] for r in refunds) == ["15.00", "5.00"]


@pytest.mark.parametrize("path", [README, PYTHON_README], ids=lambda p: str(p.relative_to(REPO)))
async def test_every_python_snippet_of_the_docs_runs(
    dev: DevStack, path: Path, tmp_path: Path
) -> None:
    found = snippets(doc(path), "python")
    assert found, f"no python snippet in {path}"
    for number, code in enumerate(found):
        script = tmp_path / f"snippet_{number}.py"
        script.write_text(code, encoding="utf-8")
        output = await _run([sys.executable, str(script)], dev.env, cwd=tmp_path)
        if '("10.00", "5.00")' in code:  # the whole purchase with two refunds
            assert "captured Captured" in output, output
            assert len(re.findall(r"^refund \S+ RefundInitiated$", output, re.MULTILINE)) == 2


@pytest.mark.skipif(NODE is None or NPM is None, reason="node and npm are not installed")
@pytest.mark.parametrize("path", [README, NODE_README], ids=lambda p: str(p.relative_to(REPO)))
async def test_every_node_snippet_of_the_docs_runs(dev: DevStack, path: Path) -> None:
    assert NODE is not None
    assert NPM is not None
    if not (NODE_DIR / "node_modules" / "@grpc" / "grpc-js").is_dir():
        await _run([NPM, "ci", "--no-audit", "--no-fund"], dev.env, cwd=NODE_DIR, timeout=300)
    found = snippets(doc(path), "js")
    assert found, f"no js snippet in {path}"
    async with AmazonPayClient(dev.target) as client:
        reference = f"node-doc-{uuid.uuid4().hex[:6]}"
        await client.checkout_sessions.create(
            web_checkout_details={"checkout_review_return_url": "https://shop.example/review"},
            merchant_metadata={"merchant_reference_id": reference},
        )
    for code in found:
        # The docs say "save it in clients/node/": run it from there, under a name nobody uses.
        script = NODE_DIR / f".doc-snippet-{uuid.uuid4().hex[:8]}.js"
        script.write_text(code, encoding="utf-8")
        try:
            output = await _run([NODE, script.name, reference], dev.env, cwd=NODE_DIR)
        finally:
            script.unlink()
        if "['10.00', '5.00']" in code:  # the whole purchase with two refunds
            assert "captured Captured" in output, output
            assert len(re.findall(r"^refund \S+ RefundInitiated$", output, re.MULTILINE)) == 2
        else:
            assert "OBJECT_KIND_CHECKOUT_SESSION" in output, output


async def test_every_rpc_logs_one_json_line_with_ids_request_ids_and_trace_id_and_no_pii(
    dev: DevStack,
) -> None:
    buyer_name, buyer_email = "Zelda Logcheck", "zelda.logcheck@example.com"
    calls: list[tuple[str, str, dict[str, str]]] = []  # (rpc, amazon request id, ids)
    async with AmazonPayClient(dev.target) as client:
        created = await client.checkout_sessions.create(
            web_checkout_details={"checkout_review_return_url": "https://shop.example/review"}
        )
        sid = created.checkout_session.checkout_session_id
        calls.append(
            ("CreateCheckoutSession", created.amazon_request_id, {"checkout_session_id": sid})
        )
        await buyer_step(
            dev.emulator_url,
            sid,
            "signIn",
            body={"card": "1111", "buyer": {"name": buyer_name, "email": buyer_email}},
        )
        updated = await client.checkout_sessions.update(
            sid,
            web_checkout_details={"checkout_result_return_url": "https://shop.example/result"},
            payment_details={
                "payment_intent": "PAYMENT_INTENT_AUTHORIZE",
                "charge_amount": {"amount": "12.00", "currency_code": "USD"},
            },
        )
        calls.append(
            ("UpdateCheckoutSession", updated.amazon_request_id, {"checkout_session_id": sid})
        )
        await buyer_step(dev.emulator_url, sid, "confirm")
        completed = await client.checkout_sessions.complete(
            sid, charge_amount=price("12.00", "USD")
        )
        charge_id = completed.checkout_session.charge_id
        calls.append(
            (
                "CompleteCheckoutSession",
                completed.amazon_request_id,
                {"checkout_session_id": sid, "charge_id": charge_id},
            )
        )
        captured = await client.charges.capture(charge_id, capture_amount=price("12.00", "USD"))
        calls.append(("CaptureCharge", captured.amazon_request_id, {"charge_id": charge_id}))
        for amount in ("2.00", "3.00"):
            refund = await client.refunds.create(
                charge_id=charge_id, refund_amount=price(amount, "USD")
            )
            calls.append(
                (
                    "CreateRefund",
                    refund.amazon_request_id,
                    {"charge_id": charge_id, "refund_id": refund.refund.refund_id},
                )
            )
        with pytest.raises(NotFoundError):
            await client.charges.get("S01-0000000-0000000-C404404", source="ledger")
        events = [
            e
            async for e in client.ledger.iter_events(
                charge_permission_id=completed.checkout_session.charge_permission_id
            )
        ]

    await asyncio.sleep(0.5)  # the last lines are written as each call ends
    for text in dev.service.log_lines:
        assert json.loads(text), text  # every stderr line is one JSON object, C core included
        assert buyer_name not in text, text
        assert buyer_email not in text, text
    lines = dev.rpc_lines()
    fields = {
        "rpc",
        "code",
        "reason",
        "merchant",
        "caller",
        "object_ids",
        "amazon_request_ids",
        "duration_ms",
        "trace_id",
    }
    [documented] = snippets(section(doc(REPO / "docs" / "operations.md"), "Logs"), "json")
    assert set(json.loads(documented)) == set(lines[0]), "docs/operations.md#logs drifted"
    for line in lines:
        assert fields <= set(line), line
        assert re.fullmatch(r"[0-9a-f]{32}", line["trace_id"]), line
        assert line["duration_ms"] > 0
    for rpc, request_id, ids in calls:
        assert request_id, rpc
        [line] = [entry for entry in lines if request_id in entry["amazon_request_ids"]]
        assert (line["rpc"], line["code"], line["reason"], line["merchant"]) == (
            rpc,
            "OK",
            None,
            "default",
        )
        assert line["caller"] is None  # no callers file in development
        for name, value in ids.items():
            assert value in line["object_ids"][name], (rpc, line)
    # CompleteCheckoutSession also read the charge permission and the charge: their ids are there.
    [complete] = [entry for entry in lines if calls[2][1] in entry["amazon_request_ids"]]
    assert len(complete["amazon_request_ids"]) >= 1
    [missing] = [
        entry for entry in lines if "S01-0000000-0000000-C404404" in json.dumps(entry["object_ids"])
    ]
    assert (missing["rpc"], missing["code"], missing["reason"]) == (
        "GetCharge",
        "NOT_FOUND",
        "NOT_IN_LEDGER",
    )
    assert missing["amazon_request_ids"] == []

    # Every event our own calls caused carries the request id of that call.
    by_request = {request_id: rpc for rpc, request_id, _ in calls}
    # An IPN's follow-up read can record a state before the API's answer is stored: that event
    # carries the read's request id, the API's own events the request id of our call.
    [captured_event] = [e for e in events if e.raw_state == "Captured"]
    if captured_event.source == 1:
        assert captured_event.amazon_request_id == captured.amazon_request_id
    assert captured_event.amazon_request_id
    refund_events = [e for e in events if e.raw_state == "RefundInitiated"]
    assert len(refund_events) == 2
    assert {by_request.get(e.amazon_request_id) for e in refund_events if e.source == 1} <= {
        "CreateRefund"
    }
    assert all(e.amazon_request_id for e in refund_events)
    assert all(e.amazon_request_id for e in events if e.source in (1, 2))  # api, poll


async def test_every_alert_names_a_metric_exported_from_start_up(dev: DevStack) -> None:
    at_start = metric_names(dev.startup_metrics)
    for overlay in ("sandbox", "production"):
        [rule] = [
            o
            for o in render(REPO / "deploy" / "k8s" / "overlays" / overlay)
            if o["kind"] == "PrometheusRule"
        ]
        for group in rule["spec"]["groups"]:
            for alert in group["rules"]:
                names = set(_METRIC.findall(alert["expr"]))
                assert names, alert["alert"]
                for name in names:
                    assert name in at_start, f"{alert['alert']}: {name} is not exported at start-up"
    # The documented metric table: present from start-up, except the latency histograms.
    operations = (REPO / "docs" / "operations.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^\| `(amazonpay_[a-z_]+)`", operations, re.MULTILINE))
    assert len(documented) >= 14
    histograms = {"amazonpay_rpc_duration_seconds", "amazonpay_amazon_duration_seconds"}
    for name in documented - histograms:
        assert exported(name, at_start), f"{name} is documented but not exported at start-up"
    # After an RPC and an Amazon call, every dashboard query names a metric the service exports.
    async with AmazonPayClient(dev.target) as client:
        await client.checkout_sessions.create(
            web_checkout_details={"checkout_review_return_url": "https://shop.example/review"}
        )
    now = metric_names(await dev.metrics())
    dashboard = json.loads(doc(REPO / "deploy" / "grafana" / "amazonpay-grpc-dashboard.json"))
    for panel in dashboard["panels"]:
        for name in _METRIC.findall(panel["targets"][0]["expr"]):
            assert name in now, f"{panel['title']}: {name} is not exported"


async def test_native_stderr_lines_become_json_log_lines(tmp_path: Path) -> None:
    code = (
        "import logging, os\n"
        "from service.telemetry import configure_logging, route_native_stderr\n"
        "route_native_stderr()\n"
        "configure_logging('INFO')\n"
        "logging.getLogger('service.x').info('python line', extra={'k': 1})\n"
        "os.write(2, b'E1201 12:00:00.000000   42 chttp2_transport.cc:1] plain C-core line\\n')\n"
        'os.write(2, b\'{"already": "json"}\\n\')\n'
        "os.write(2, b'no prefix at all\\n')\n"
        "import time; time.sleep(0.5)\n"
    )
    script = tmp_path / "native.py"
    script.write_text(code)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        cwd=REPO,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, raw = await asyncio.wait_for(process.communicate(), 60)
    lines = [json.loads(line) for line in raw.decode().splitlines()]
    assert {"already": "json"} in lines
    by_msg = {line.get("msg"): line for line in lines if "msg" in line}
    assert by_msg["python line"]["k"] == 1
    native = by_msg["E1201 12:00:00.000000   42 chttp2_transport.cc:1] plain C-core line"]
    assert (native["logger"], native["level"]) == ("native", "ERROR")
    assert by_msg["no prefix at all"]["level"] == "INFO"
