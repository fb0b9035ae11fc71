"""The processes a benchmark or soak drives: Postgres, the emulator and service replicas.

Everything listens on 127.0.0.1 (Postgres: a Unix socket when embedded). Each piece is a separate
OS process so its CPU time and peak memory can be read from ``/proc``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from emulator.launch import EmulatorChild, launch
from emulator.launch import write_key_pair as write_key_pair  # bench.run and bench.soak use it
from service import ledger as ledger_tools

REPO = Path(__file__).resolve().parents[1]
KEY_ID = "SANDBOX-BENCHKEY000000000000000"
CLK_TCK = os.sysconf("SC_CLK_TCK")


# ------------------------------------------------------------------------------ /proc figures


def cpu_seconds(pid: int, *, with_children: bool = False) -> float:
    """utime + stime of every thread of ``pid`` (plus reaped children when asked), in seconds."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = raw[raw.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state): utime=14, stime=15, cutime=16, cstime=17
    ticks = int(fields[11]) + int(fields[12])
    if with_children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / CLK_TCK


def peak_rss_mib(pid: int) -> float:
    """``VmHWM`` (peak resident set) of ``pid`` in MiB; 0 when unreadable."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:
            continue
        if int(raw[raw.rindex(")") + 2 :].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def postgres_pids() -> list[int]:
    """Every process named ``postgres`` on the machine (an external server's backends too)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "comm").read_text().strip() == "postgres":
                    found.append(int(entry.name))
    return found


@dataclass
class CpuProbe:
    """CPU seconds of named process groups, read together."""

    groups: dict[str, Any] = field(default_factory=dict)

    def add(self, name: str, pids: Any) -> None:
        """``pids``: an int, or a callable returning the current list of pids."""
        self.groups[name] = pids

    def read(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for name, pids in self.groups.items():
            if callable(pids):
                out[name] = sum(cpu_seconds(p, with_children=True) for p in pids())
            else:
                out[name] = cpu_seconds(int(pids))
        return out


def cpu_delta(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, float]:
    return {k: round(after[k] - before.get(k, 0.0), 4) for k in after}


def machine() -> dict[str, Any]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "python": sys.version.split()[0],
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


# ------------------------------------------------------------------------------ helpers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


async def create_database(server_url: str, prefix: str) -> str:
    name = f"{prefix}_{time.strftime('%Y%m%d_%H%M%S')}_{uuid.uuid4().hex[:6]}"
    return await ledger_tools.create_database(server_url, name)


async def drop_database(server_url: str, url: str) -> None:
    await ledger_tools.drop_database(server_url, url)


# ------------------------------------------------------------------------------ emulator


class Emulator:
    """``python -m emulator`` on a free port, plus its control plane.

    With ``tls`` the API is also served over HTTPS (``api_url``, certificate signed by the CA in
    ``ca_file``), as Amazon's is: the benchmark's service and Node SDK both call it there. The
    control plane (``url``) stays plain HTTP."""

    def __init__(self, workdir: Path, keys: Mapping[str, Path], *, tls: bool = False) -> None:
        self.workdir = workdir
        self.keys = dict(keys)
        self.tls = tls
        self.child: EmulatorChild | None = None
        self.process: asyncio.subprocess.Process | None = None
        self.url = ""
        self.api_url = ""
        self.ca_file: str | None = None
        self._http: aiohttp.ClientSession | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    async def start(self) -> None:
        self.child = await launch(
            workdir=self.workdir,
            keys=self.keys,
            data_dir=self.workdir,
            extra_args=("--tls-port", "0") if self.tls else (),
        )
        self.process = self.child.process
        self.url = self.child.url
        self.api_url = self.url
        if self.tls:
            self.api_url = f"https://127.0.0.1:{self.child.ready['tls_port']}"
            self.ca_file = str(self.child.ready["ca_file"])
        self._http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=8))

    async def stop(self) -> None:
        if self._http is not None:
            await self._http.close()
        if self.child is not None:
            await self.child.stop()

    async def control(self, method: str, path: str, body: Any = None) -> Any:
        assert self._http is not None
        async with self._http.request(
            method,
            f"{self.url}/_emulator/{path}",
            json=body,
            timeout=aiohttp.ClientTimeout(total=60),
        ) as response:
            payload = await response.json(content_type=None)
            if response.status >= 400:
                raise RuntimeError(f"emulator {method} {path}: {response.status} {payload}")
            return payload

    async def objects(self, kind: str) -> list[dict[str, Any]]:
        result = await self.control("GET", f"objects/{kind}")
        items: list[dict[str, Any]] = result[kind]
        return items


# ------------------------------------------------------------------------------ service


class Service:
    """One ``python -m service`` replica on a fixed loopback port, ready when health says SERVING."""

    def __init__(self, env: Mapping[str, str], port: int, log_file: Path) -> None:
        self.port = port
        self.target = f"127.0.0.1:{port}"
        self.env = {
            **os.environ,
            **env,
            "GRPC_LISTEN": self.target,
            "PYTHONUNBUFFERED": "1",
        }
        self.log_file = log_file
        self.process: asyncio.subprocess.Process | None = None
        self.starts = 0

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def pids(self) -> list[int]:
        """The process started and its children: the workers when ``GRPC_WORKERS`` > 1."""
        return [self.pid, *children_of(self.pid)] if self.running else []

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def start(
        self, *, command: tuple[str, ...] = ("-m", "service"), cwd: Path = REPO
    ) -> None:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                *command,
                cwd=cwd,
                env=self.env,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=log,
            )
        self.starts += 1

    async def wait_serving(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        async with grpc.aio.insecure_channel(self.target) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                if self.process is not None and self.process.returncode is not None:
                    raise RuntimeError(
                        f"service exited with {self.process.returncode}; see {self.log_file}"
                    )
                with contextlib.suppress(grpc.aio.AioRpcError):
                    reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                await asyncio.sleep(0.1)
        raise TimeoutError(f"service on {self.target} not serving; see {self.log_file}")

    async def terminate(self, timeout: float = 30.0) -> int | None:
        if self.process is None:
            return None
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), timeout)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        return self.process.returncode

    async def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()


def service_env(
    database_url: str,
    emulator: Emulator,
    private_key: Path,
    pii_key: Path,
    **overrides: str,
) -> dict[str, str]:
    env = {
        "DATABASE_URL": database_url,
        "AMAZON_PAY_PUBLIC_KEY_ID": KEY_ID,
        "AMAZON_PAY_PRIVATE_KEY_FILE": str(private_key),
        "AMAZON_PAY_ENDPOINT": emulator.api_url,
        "AMAZON_PAY_REGION": "us",
        "AMAZON_PAY_STORE_ID": "amzn1.application-oa2-client.bench",
        "SHUTDOWN_GRACE_S": "2",
        "IPN_LISTEN": "off",
        "ADMIN_LISTEN": "127.0.0.1:0",
        "IPN_EXTRA_CERT_HOSTS": urlsplit(emulator.url).netloc,
        "RECONCILER_ENABLED": "0",
        "LOG_LEVEL": "WARNING",
        "PYTHONFAULTHANDLER": "1",
        "PII_KEY_FILES": f"k1={pii_key}",
    }
    if emulator.ca_file is not None:
        env["AMAZON_PAY_CA_FILE"] = emulator.ca_file
    env.update(overrides)
    return env
