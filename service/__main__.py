"""`python -m service` serves gRPC; `python -m service migrate` applies migrations and exits."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

import asyncpg

from .app import Application
from .config import ConfigError, Settings, load_settings
from .ledger import EmbeddedPostgres, MigrationError, apply_migrations
from .telemetry import configure_logging, configure_telemetry

_log = logging.getLogger("service")


async def _serve(settings: Settings) -> int:
    configure_telemetry()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await Application(settings).run_until_stopped(stop)
    return 0


async def _migrate(settings: Settings) -> int:
    embedded = None
    url = settings.database.url
    if url is None:
        embedded = EmbeddedPostgres(settings.database.embedded_dir)
        url = await embedded.start()
    conn = await asyncpg.connect(url)
    try:
        applied = await apply_migrations(conn)
        _log.info("migrations applied", extra={"applied": applied})
        return 0
    finally:
        await conn.close()
        if embedded is not None:
            await embedded.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m service", description=__doc__)
    parser.add_argument("command", nargs="?", default="serve", choices=["serve", "migrate"])
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    try:
        if args.command == "migrate":
            return asyncio.run(_migrate(settings))
        return asyncio.run(_serve(settings))
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    except MigrationError as exc:
        _log.error("migration refused", extra={"reason": str(exc)})
        return 3


if __name__ == "__main__":
    sys.exit(main())
