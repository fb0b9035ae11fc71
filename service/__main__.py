"""`python -m service` serves gRPC; `migrate` applies migrations and exits; `reencrypt-pii`
rewrites buyer PII still encrypted with a key other than `PII_ACTIVE_KEY_ID`.

With `GRPC_WORKERS` > 1, `serve` is the supervisor of that many workers (`service.supervisor`),
each of them `serve --worker N`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from .app import Application, pii_keyring
from .config import ConfigError, Settings, load_settings
from .ledger import EmbeddedPostgres, MigrationError, migrate_database, reencrypt_pii
from .telemetry import configure_logging, configure_telemetry, route_native_stderr

_log = logging.getLogger("service")


async def _serve(settings: Settings, *, admin_socket: Path | None = None) -> int:
    configure_telemetry()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    app = Application(settings, admin_socket=admin_socket)
    orphaned = asyncio.create_task(_stop_when_orphaned(stop)) if admin_socket else None

    def announce() -> None:
        # Development only: a deployment's stdout joins the JSON log stream.
        if app.development:
            print(app.next_steps(), flush=True)

    try:
        await app.run_until_stopped(stop, on_serving=announce)
    finally:
        if orphaned is not None:
            orphaned.cancel()
    return 0


async def _stop_when_orphaned(stop: asyncio.Event) -> None:
    """A worker whose supervisor died (SIGKILL) drains and exits instead of serving on alone:
    a pidfd of the supervisor becomes readable when it exits."""
    try:
        pidfd = os.pidfd_open(os.getppid())
    except OSError:
        _log.warning("cannot watch the supervisor (no pidfd); a worker outlives a killed one")
        return
    loop = asyncio.get_running_loop()
    gone = asyncio.Event()
    loop.add_reader(pidfd, gone.set)
    try:
        await gone.wait()
        _log.warning("supervisor gone; stopping")
        stop.set()
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)


async def _supervise(settings: Settings) -> int:
    from .supervisor import Supervisor

    return await Supervisor(settings).run()


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
    # Set by the supervisor for its workers (GRPC_WORKERS > 1), not by people.
    parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--admin-socket", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    supervisor = args.command == "serve" and args.worker is None and settings.grpc.workers > 1
    if not supervisor:
        # The supervisor runs no native code; its workers inherit the real stderr.
        route_native_stderr(worker=args.worker)
    configure_logging(settings.log_level, worker=args.worker)
    try:
        if args.command == "migrate":
            return asyncio.run(_migrate(settings))
        if args.command == "reencrypt-pii":
            return asyncio.run(_reencrypt_pii(settings))
        if supervisor:
            return asyncio.run(_supervise(settings))
        with asyncio.Runner(loop_factory=_loop_factory(settings.event_loop)) as runner:
            return runner.run(_serve(settings, admin_socket=args.admin_socket))
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    except MigrationError as exc:
        _log.error("migration refused", extra={"reason": str(exc)})
        return 3


if __name__ == "__main__":
    sys.exit(main())
