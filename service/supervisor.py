"""`GRPC_WORKERS` > 1: one supervisor process and N worker processes behind one port.

Every worker's gRPC server (and IPN receiver) binds the same port with `SO_REUSEPORT`, so the
kernel spreads new connections over the workers, as grpc's `examples/python/multiprocessing` does.
Each worker is a whole `python -m service` with its own event loop, connection pool, event hub,
reconciler and instance lease: to the rest of the system it is one more replica, so whatever is
safe with many replicas (idempotency, orphan re-drive, the reconciler's leases, the IPN inbox) is
safe with many workers. A port given as 0 is resolved once here, so all workers share it.

The supervisor serves only the admin port. `/metrics` is every worker's metrics with a `worker`
label (each worker serves its own on a Unix socket); `/readyz` is 200 only while every worker is
ready; `/livez` while every worker answers. SIGTERM/SIGINT go to every worker, which drains as
a single process would; the supervisor exits when all have. A worker that dies after it served,
or is killed by a signal, is restarted (backoff 1 s doubling to 30 s); one that exits by itself
before it ever served stops them all, so a start-up failure (bad configuration, refused
migration) ends the process as it would alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from .admin import AdminServer
from .config import ConfigError, Settings, parse_listen_address

__all__ = ["Supervisor", "merge_metrics"]

_log = logging.getLogger("service.supervisor")

_PROBE_TIMEOUT_S = 2.0
_RESTART_FIRST_S = 1.0
_RESTART_MAX_S = 30.0
_HEALTHY_AFTER_S = 60.0  # a worker that ran this long restarts without the backoff it had


def _reserve(variable: str, listen: str) -> tuple[str, socket.socket | None]:
    """`listen` with a port 0 replaced by a free port, and the socket holding it.

    The socket is bound with SO_REUSEPORT but never listens, so it receives no connections; it
    keeps the port from being taken until the workers have bound it too."""
    host, port = parse_listen_address(variable, listen)
    if port != 0:
        return listen, None
    bare = host.strip("[]")
    family = socket.AF_INET6 if ":" in bare else socket.AF_INET
    holder = socket.socket(family, socket.SOCK_STREAM)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    holder.bind((bare, 0))
    return f"{host}:{holder.getsockname()[1]}", holder


def merge_metrics(texts: dict[int, str]) -> bytes:
    """Prometheus text of every worker in one exposition, each sample labelled `worker`."""
    families: dict[str, Metric] = {}
    for worker, text in sorted(texts.items()):
        for family in text_string_to_metric_families(text):
            merged = families.get(family.name)
            if merged is None:
                merged = families[family.name] = Metric(
                    family.name, family.documentation, family.type, family.unit
                )
            merged.samples.extend(
                sample._replace(labels={**sample.labels, "worker": str(worker)})
                for sample in family.samples
            )

    class _Merged:
        def collect(self) -> list[Metric]:
            return list(families.values())

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Merged())
    return generate_latest(registry)


class _Worker:
    def __init__(self, index: int, socket_path: Path) -> None:
        self.index = index
        self.socket_path = socket_path
        self.process: asyncio.subprocess.Process | None = None
        self.started_at = 0.0
        self.served = False
        self.http: aiohttp.ClientSession | None = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None


class Supervisor:
    """Starts `settings.grpc.workers` workers, serves the admin port, stops them on a signal."""

    def __init__(self, settings: Settings) -> None:
        if settings.database.url is None or not settings.amazon_pay.configured:
            raise ConfigError(
                "GRPC_WORKERS",
                f"{settings.grpc.workers} workers need DATABASE_URL and Amazon Pay credentials: "
                "the embedded PostgreSQL and the development emulator (`make run`) serve one "
                "process",
            )
        self.settings = settings
        self.stopping = False
        self._stop = asyncio.Event()
        self._dir = Path(tempfile.mkdtemp(prefix="amazonpay-workers-"))
        self._workers = [
            _Worker(index, self._dir / f"worker-{index}.sock")
            for index in range(settings.grpc.workers)
        ]
        self._env: dict[str, str] = {}
        self._held: list[socket.socket] = []
        self._failed: int | None = None

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        grpc_listen, held = _reserve("GRPC_LISTEN", self.settings.grpc.listen)
        self._env = {**os.environ, "GRPC_LISTEN": grpc_listen}
        self._held += [held] if held else []
        if self.settings.workers.ipn_listen is not None:
            ipn_listen, held = _reserve("IPN_LISTEN", self.settings.workers.ipn_listen)
            self._env["IPN_LISTEN"] = ipn_listen
            self._held += [held] if held else []
        admin = AdminServer(ready=self._ready, live=self._live, metrics=self._metrics)
        for worker in self._workers:
            worker.http = aiohttp.ClientSession(
                connector=aiohttp.UnixConnector(path=str(worker.socket_path)),
                timeout=aiohttp.ClientTimeout(total=_PROBE_TIMEOUT_S),
            )
        try:
            if self.settings.workers.admin_listen is not None:
                host, port = parse_listen_address(
                    "ADMIN_LISTEN", self.settings.workers.admin_listen
                )
                await admin.start(host, port)
            _log.info(
                "starting workers",
                extra={"workers": len(self._workers), "listen": grpc_listen, "pid": os.getpid()},
            )
            keepers = [asyncio.create_task(self._keep(worker)) for worker in self._workers]
            await self._stop.wait()
            self.stopping = True
            _log.info("stopping workers", extra={"workers": len(self._workers)})
            for worker in self._workers:
                if worker.running:
                    assert worker.process is not None
                    worker.process.send_signal(signal.SIGTERM)
            codes = await asyncio.gather(*keepers)
        finally:
            await admin.stop()
            for worker in self._workers:
                if worker.http is not None:
                    await worker.http.close()
            for holder in self._held:
                holder.close()
            with contextlib.suppress(OSError):
                for leftover in self._dir.iterdir():
                    leftover.unlink()
                self._dir.rmdir()
        if self._failed is not None:
            return self._failed
        return 0 if all(code == 0 for code in codes) else 1

    async def _keep(self, worker: _Worker) -> int:
        """Run one worker until the supervisor stops; restart it if it dies after serving."""
        delay = _RESTART_FIRST_S
        while True:
            worker.socket_path.unlink(missing_ok=True)
            worker.served = False
            worker.started_at = time.monotonic()
            worker.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "service",
                "serve",
                "--worker",
                str(worker.index),
                "--admin-socket",
                str(worker.socket_path),
                env=self._env,
            )
            watcher = asyncio.create_task(self._watch_start(worker))
            code = await worker.process.wait()
            watcher.cancel()
            if self.stopping:
                _log.info("worker stopped", extra={"worker": worker.index, "code": code})
                return code
            if not worker.served and code >= 0:
                # Exited on its own before serving (bad configuration, say): restarting would
                # only loop. One killed by a signal (OOM killer, an operator) is restarted.
                _log.error(
                    "worker exited before it served; stopping all workers",
                    extra={"worker": worker.index, "code": code},
                )
                self._failed = code or 1
                self._stop.set()
                return code
            if time.monotonic() - worker.started_at >= _HEALTHY_AFTER_S:
                delay = _RESTART_FIRST_S
            _log.error(
                "worker exited; restarting it",
                extra={"worker": worker.index, "code": code, "after_s": delay},
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)
            if self.stopping:
                return code
            delay = min(delay * 2, _RESTART_MAX_S)

    async def _watch_start(self, worker: _Worker) -> None:
        while not worker.served:
            await asyncio.sleep(0.2)
            worker.served = await self._probe(worker, "readyz")

    async def _get(self, worker: _Worker, path: str) -> tuple[int, bytes] | None:
        """A worker's admin endpoint over its Unix socket; None while it does not answer."""
        if worker.http is None or not worker.running or not worker.socket_path.exists():
            return None
        try:
            async with worker.http.get(f"http://worker/{path}") as response:
                return response.status, await response.read()
        except (aiohttp.ClientError, OSError, TimeoutError):
            return None

    async def _probe(self, worker: _Worker, path: str) -> bool:
        answer = await self._get(worker, path)
        return answer is not None and answer[0] == 200

    async def _all(self, path: str) -> bool:
        results = await asyncio.gather(*(self._probe(w, path) for w in self._workers))
        return all(results)

    async def _ready(self) -> bool:
        if self.stopping:
            return False
        ready = await asyncio.gather(*(self._probe(w, "readyz") for w in self._workers))
        for worker, answered in zip(self._workers, ready, strict=True):
            # What the admin port reports as served is served: a worker dying right after it
            # answered a probe here is restarted, not taken for a start-up failure.
            worker.served = worker.served or answered
        return all(ready)

    async def _live(self) -> bool:
        return await self._all("livez")

    async def _metrics(self) -> bytes:
        answers = await asyncio.gather(*(self._get(w, "metrics") for w in self._workers))
        texts = {
            worker.index: answer[1].decode()
            for worker, answer in zip(self._workers, answers, strict=True)
            if answer is not None and answer[0] == 200
        }
        return await asyncio.to_thread(merge_metrics, texts)
