"""The production image, run as Kubernetes runs it: read-only root file system, uid 10001, every
capability dropped, no privilege escalation, only /tmp writable (a tmpfs, like the manifests'
emptyDir), secrets mounted read-only. Its network is the host's (`--network host`) and every address
it binds or calls is on loopback: Docker's bridge network is never used.

The container migrates a fresh database on the machine's PostgreSQL, then serves; a full checkout
goes through it over gRPC to the emulator running on the host; health turns SERVING; /metrics
answers; on SIGTERM an in-flight call completes and the process exits 0.

Runs only when IMAGE_UNDER_TEST names a built image (`make image-test`, or scripts/image_ci.sh on a
machine without Docker); otherwise every test here is skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service.ledger import PiiKeyring
from tests._emulator import EmulatorProcess, write_key_pair
from tests._postgres import fresh_database, postgres_server
from tests._process import REPO, free_port
from tests.e2e._flows import checkout
from tests.e2e.conftest import stubs_for

IMAGE = os.environ.get("IMAGE_UNDER_TEST", "")
EXTRA_CA_FILES = os.environ.get("IMAGE_EXTRA_CA_FILE", "").split()
LABEL = "amazonpay-image-test"
KEY_ID = "SANDBOX-IMAGETESTKEY00000000000"
APP_UID = 10001
SECRETS = "/var/run/secrets/amazonpay"
MIGRATIONS = len(list((REPO / "service" / "ledger" / "migrations").glob("*.sql")))

pytestmark = pytest.mark.skipif(not IMAGE, reason="set IMAGE_UNDER_TEST (make image-test)")

# What the Deployment's securityContext and volumes amount to, in `docker run` terms.
AS_KUBERNETES = (
    "--read-only",
    "--tmpfs=/tmp:rw,nosuid,nodev,size=64m",
    f"--user={APP_UID}:{APP_UID}",
    "--cap-drop=ALL",
    "--security-opt=no-new-privileges",
    "--network=host",
    f"--label={LABEL}=1",
)


async def docker(*args: str, timeout: float = 120) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        "docker", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout)
    assert process.returncode is not None
    return process.returncode, out.decode(errors="replace"), err.decode(errors="replace")


@dataclass
class Setup:
    secrets: Path
    emulator: EmulatorProcess
    database_url: str


def _readable_by_app(path: Path, mode: int) -> None:
    """Group 10001 and group-readable, as the manifests' fsGroup and defaultMode 0440 do."""
    if os.geteuid() == 0:
        os.chown(path, 0, APP_UID)
        path.chmod(mode)
    else:
        path.chmod(mode | 0o005)


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[Setup]:
    secrets = tmp_path / "secrets"
    private, public = write_key_pair(secrets / "amazon")
    public = public.rename(tmp_path / "public.pem")  # the emulator's, not a secret of the pod
    private.rename(secrets / "amazon" / "private-key.pem")
    (secrets / "pii").mkdir()
    PiiKeyring.generate_file(secrets / "pii" / "k1")
    for directory in (secrets, secrets / "amazon", secrets / "pii"):
        _readable_by_app(directory, 0o750)
    for file in (secrets / "amazon" / "private-key.pem", secrets / "pii" / "k1"):
        _readable_by_app(file, 0o440)
    emulator = EmulatorProcess(tmp_path / "emulator", {KEY_ID: public})
    (tmp_path / "emulator").mkdir()
    await emulator.start()
    try:
        async with postgres_server() as server, fresh_database(server) as url:
            if urlsplit(url).hostname not in {"127.0.0.1", "::1", "localhost"}:
                pytest.fail(f"the container needs PostgreSQL on TCP loopback; got {url!r}")
            yield Setup(secrets, emulator, url)
    finally:
        await emulator.stop()
        code, out, _ = await docker("ps", "-aq", "--filter", f"label={LABEL}")
        if code == 0 and out.split():
            await docker("rm", "-f", *out.split())


def _env(setup: Setup, ports: dict[str, int]) -> list[str]:
    env = {
        "DATABASE_URL": setup.database_url,
        "GRPC_LISTEN": f"127.0.0.1:{ports['grpc']}",
        "IPN_LISTEN": f"127.0.0.1:{ports['ipn']}",
        "ADMIN_LISTEN": f"127.0.0.1:{ports['admin']}",
        "MIGRATE_ON_START": "false",
        "DEV_EMULATOR": "false",
        "AMAZON_PAY_PUBLIC_KEY_ID": KEY_ID,
        "AMAZON_PAY_PRIVATE_KEY_FILE": f"{SECRETS}/amazon/private-key.pem",
        "AMAZON_PAY_ENDPOINT": setup.emulator.url,
        "AMAZON_PAY_REGION": "us",
        "AMAZON_PAY_STORE_ID": "amzn1.application-oa2-client.image",
        "PII_KEY_FILES": f"k1={SECRETS}/pii/k1",
        "SHUTDOWN_GRACE_S": "15",
        "LOG_LEVEL": "INFO",
    }
    return [f"--env={k}={v}" for k, v in env.items()]


def _mount(setup: Setup) -> str:
    return f"--volume={setup.secrets}:{SECRETS}:ro"


def _loopback_only(env: list[str]) -> None:
    for item in env:
        for host in re.findall(r"(?:@|//|=)([0-9.]+|\[[0-9a-f:]+\]|localhost):[0-9]+", item):
            assert host in {"127.0.0.1", "[::1]", "localhost"}, item


async def _health(target: str, service: str = "") -> int:
    async with grpc.aio.insecure_channel(target) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=2
        )
        return int(reply.status)


async def _wait_serving(container: str, target: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(grpc.aio.AioRpcError):
            if await _health(target) == health_pb2.HealthCheckResponse.SERVING:
                return
        _, state, _ = await docker("inspect", "--format", "{{.State.Running}}", container)
        if state.strip() != "true":
            _, out, err = await docker("logs", container)
            raise AssertionError(f"container exited before serving:\n{out}{err}")
        await asyncio.sleep(0.1)
    _, out, err = await docker("logs", container)
    raise AssertionError(f"container did not turn SERVING in {timeout}s:\n{out}{err}")


async def test_image_runs_as_uid_10001_with_only_tmp_writable() -> None:
    probe = (
        "import os, tempfile\n"
        "print(os.getuid(), os.getgid())\n"
        "for path in ('/app', '/opt/venv', '/'):\n"
        "    try:\n"
        "        open(os.path.join(path, 'x'), 'w')\n"
        "    except OSError as exc:\n"
        "        print(path, 'refused', exc.errno)\n"
        "    else:\n"
        "        print(path, 'WRITABLE')\n"
        "with tempfile.NamedTemporaryFile(dir='/tmp') as f:\n"
        "    print('/tmp writable')\n"
    )
    code, out, err = await docker(
        "run", "--rm", *AS_KUBERNETES, "--entrypoint=python", IMAGE, "-c", probe
    )
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == f"{APP_UID} {APP_UID}"
    assert "WRITABLE" not in out
    assert [line.split()[1] for line in lines[1:4]] == ["refused"] * 3
    assert lines[4] == "/tmp writable"
    _, config, _ = await docker("image", "inspect", "--format", "{{json .Config}}", IMAGE)
    image_config = json.loads(config)
    assert image_config["User"] == f"{APP_UID}:{APP_UID}"
    assert image_config["Entrypoint"] == ["python", "-m", "service"]


async def test_container_migrates_serves_a_checkout_and_drains_on_sigterm(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    ports = {"grpc": free_port(), "ipn": free_port(), "admin": free_port()}
    env = _env(setup, ports)
    _loopback_only(env)

    # 1. The migration Job: `migrate` with only DATABASE_URL, then exit 0.
    started = time.monotonic()
    code, out, err = await docker(
        "run", "--rm", *AS_KUBERNETES, f"--env=DATABASE_URL={setup.database_url}", IMAGE, "migrate"
    )
    assert code == 0, f"migrate exited {code}:\n{out}{err}"
    migrate_s = time.monotonic() - started
    conn = await asyncpg.connect(setup.database_url)
    try:
        applied = await conn.fetchval("SELECT count(*) FROM schema_migrations")
        assert applied == MIGRATIONS
    finally:
        await conn.close()

    # 2. The Deployment's container: serve; health turns SERVING.
    started = time.monotonic()
    code, container, err = await docker(
        "run", "--detach", *AS_KUBERNETES, *env, _mount(setup), IMAGE
    )
    assert code == 0, err
    container = container.strip()
    target = f"127.0.0.1:{ports['grpc']}"
    await _wait_serving(container, target)
    startup_s = time.monotonic() - started
    assert await _health(target, "liveness") == health_pb2.HealthCheckResponse.SERVING

    async with grpc.aio.insecure_channel(target) as channel:
        api = stubs_for(channel, target)
        # 3. A full checkout through the container to the emulator on the host.
        done = await checkout(api, setup.emulator, reference="order-image-1")
        assert done.charge_id
        assert [c["chargeId"] for c in await setup.emulator.objects("charges")] == [done.charge_id]

        # 4. Prometheus /metrics on the admin port.
        url = f"http://127.0.0.1:{ports['admin']}/metrics"
        async with aiohttp.ClientSession() as http, http.get(url) as response:
            assert response.status == 200
            metrics = await response.text()
        assert "CompleteCheckoutSession" in metrics
        assert re.search(r"^# TYPE \S+ (counter|histogram)", metrics, re.M)

        # 5. SIGTERM while a call is in flight: the call completes, then the process exits 0.
        await setup.emulator.control(
            "POST", "faults", {"operation": "CompleteCheckoutSession", "latencyMs": 2500}
        )
        in_flight = asyncio.create_task(checkout(api, setup.emulator, reference="order-image-2"))
        for _ in range(200):
            if not (await setup.emulator.control("GET", "faults"))["faults"]:
                break  # the emulator took the fault: CompleteCheckoutSession is in flight
            assert not in_flight.done(), in_flight
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the slow call never reached the emulator")
        code, _, err = await docker("kill", "--signal=TERM", container)
        assert code == 0, err
        drained = await asyncio.wait_for(in_flight, 30)
        assert drained.charge_id

    code, exit_code, err = await docker("wait", container, timeout=60)
    assert code == 0, err
    _, logs_out, logs = await docker("logs", container)
    await docker("rm", container)
    records = [json.loads(line) for line in (logs_out + logs).splitlines() if line.startswith("{")]
    messages = [r.get("msg") for r in records]
    assert int(exit_code) == 0, logs
    assert "draining gRPC" in messages
    # Alone, the process logs "stopped" last; under the supervisor (GRPC_WORKERS=auto, one
    # worker per CPU) each worker logs "stopped" and the supervisor "worker stopped" after it.
    assert messages[-1] in {"stopped", "worker stopped"}, messages[-5:]
    assert messages.count("stopped") >= max(1, messages.count("worker stopped")), messages[-8:]
    assert [r for r in records if r.get("level") == "ERROR"] == []
    charges = {c["chargeId"] for c in await setup.emulator.objects("charges")}
    assert charges == {done.charge_id, drained.charge_id}

    _, size, _ = await docker("image", "inspect", "--format", "{{.Size}}", IMAGE)
    with capsys.disabled():
        print(
            f"\nimage {IMAGE}: {int(size) / 1e6:.0f} MB; "
            f"migrate of an empty database {migrate_s:.1f}s; "
            f"start-up (docker run to health SERVING) {startup_s:.1f}s"
        )


def _ca_markers() -> list[bytes]:
    """A base64 line from the middle of each extra CA certificate: found only where it was copied."""
    markers = []
    for name in EXTRA_CA_FILES:
        body = Path(name).read_text(encoding="ascii")
        lines = [line for line in body.splitlines() if line and not line.startswith("-----")]
        markers.append(lines[len(lines) // 2].encode())
    return markers


@pytest.mark.skipif(not EXTRA_CA_FILES, reason="the image was built without extra CA certificates")
async def test_extra_ca_certificates_stay_out_of_the_final_image() -> None:
    """pip trusted them during the build; neither the files nor the build argument may ship."""
    markers = _ca_markers()
    code, history, err = await docker("history", "--no-trunc", "--format", "{{.CreatedBy}}", IMAGE)
    assert code == 0, err
    _, inspect, _ = await docker("image", "inspect", IMAGE)
    for marker in markers:
        assert marker.decode() not in history
        assert marker.decode() not in inspect
    code, container, err = await docker("create", IMAGE)
    assert code == 0, err
    container = container.strip()
    try:
        export = await asyncio.create_subprocess_exec(
            "docker", "export", container, stdout=asyncio.subprocess.PIPE
        )
        assert export.stdout is not None
        tail = b""
        found = []
        while chunk := await export.stdout.read(1 << 20):
            window = tail + chunk
            found += [m for m in markers if m in window]
            tail = window[-256:]
        assert await export.wait() == 0
        assert found == []
    finally:
        await docker("rm", "-f", container)
