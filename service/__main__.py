"""`python -m service` serves gRPC; `migrate` applies migrations and exits; `reencrypt-pii`
rewrites buyer PII still encrypted with a key other than `PII_ACTIVE_KEY_ID`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Callable

from .app import Application, pii_keyring
from .config import ConfigError, Settings, load_settings
from .ledger import EmbeddedPostgres, MigrationError, migrate_database, reencrypt_pii
from .telemetry import configure_logging, configure_telemetry, route_native_stderr

_log = logging.getLogger("service")


async def _serve(settings: Settings) -> int:
    configure_telemetry()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    app = Application(settings)

    def announce() -> None:
        # Development only: a deployment's stdout joins the JSON log stream.
        if app.development:
            print(app.next_steps(), flush=True)

    await app.run_until_stopped(stop, on_serving=announce)
    return 0


async def _migrate(settings: Settings) -> int:
    """As the owner role (`MIGRATE_DATABASE_URL`, else `DATABASE_URL`); then grants
    `DATABASE_SERVICE_ROLE` its privileges on every table."""
    embedded = None
    url = settings.database.migrate_url or settings.database.url
    if url is None:
        embedded = EmbeddedPostgres(settings.database.embedded_dir)
        url = await embedded.start()
    try:
        applied = await migrate_database(url, service_role=settings.database.service_role)
        _log.info("migrations applied", extra={"applied": applied})
        return 0
    finally:
        if embedded is not None:
            await embedded.stop()


async def _reencrypt_pii(settings: Settings) -> int:
    """After making a new PII key active: rewrite values still under older keys."""
    if settings.database.url is None:
        print("reencrypt-pii needs DATABASE_URL", file=sys.stderr)
        return 2
    done = await reencrypt_pii(settings.database.url, keyring=await pii_keyring(settings))
    _log.info("PII values re-encrypted", extra={"values": done})
    return 0


def _loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    if name == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m service", description=__doc__)
    parser.add_argument(
        "command", nargs="?", default="serve", choices=["serve", "migrate", "reencrypt-pii"]
    )
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    route_native_stderr()
    configure_logging(settings.log_level)
    try:
        if args.command == "migrate":
            return asyncio.run(_migrate(settings))
        if args.command == "reencrypt-pii":
            return asyncio.run(_reencrypt_pii(settings))
        with asyncio.Runner(loop_factory=_loop_factory(settings.event_loop)) as runner:
            return runner.run(_serve(settings))
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    except MigrationError as exc:
        _log.error("migration refused", extra={"reason": str(exc)})
        return 3


if __name__ == "__main__":
    sys.exit(main())
