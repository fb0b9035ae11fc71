"""`python -m emulator`: serve until SIGINT/SIGTERM, announcing the ports as one JSON line."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from .server import run_emulator
from .state import EmulatorConfig


def _key_arg(value: str) -> tuple[str, str]:
    key_id, sep, path = value.partition("=")
    if not sep or not key_id or not path:
        raise argparse.ArgumentTypeError("expected ID=PEMFILE")
    return key_id, Path(path).read_text()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m emulator", description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8480, help="HTTP port (0 = any free port)")
    p.add_argument("--tls-port", type=int, default=None, help="also serve HTTPS (0 = free port)")
    p.add_argument("--state-file", type=Path, default=None, help="persist state as JSON here")
    p.add_argument("--data-dir", type=Path, default=None, help="where the CA/certs are written")
    p.add_argument(
        "--key",
        type=_key_arg,
        action="append",
        default=[],
        metavar="ID=PEMFILE",
        help="register a merchant public key (repeatable)",
    )
    p.add_argument("--merchant-id", default=None, help="merchant id of --key keys")
    p.add_argument("--ipn-url", action="append", default=[], help="IPN subscriber (repeatable)")
    p.add_argument("--ipn-signature-version", choices=("1", "2"), default="2")
    p.add_argument("--ready-file", type=Path, default=None, help="write the ready JSON here")
    p.add_argument(
        "--pending-seconds",
        type=float,
        default=30.0,
        help="emulator-clock delay before pending objects settle",
    )
    p.add_argument(
        "--settlement-period-seconds",
        type=float,
        default=86_400.0,
        help="length of a settlement period on the emulator clock (default one day)",
    )
    p.add_argument(
        "--singular-aliases",
        action="store_true",
        help="also emit webCheckoutDetail/paymentDetail/statusDetail (seed spellings)",
    )
    p.add_argument("--no-uvloop", action="store_true", help="use asyncio's default loop")
    return p.parse_args(argv)


async def _serve(args: argparse.Namespace) -> None:
    config = EmulatorConfig(
        keys=dict(args.key),
        ipn_urls=list(args.ipn_url),
        state_file=args.state_file,
        pending_seconds=args.pending_seconds,
        settlement_period_seconds=args.settlement_period_seconds,
        singular_aliases=args.singular_aliases,
        ipn_signature_version=args.ipn_signature_version,
    )
    if args.merchant_id:
        config.merchant_id = args.merchant_id
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with run_emulator(
        config, host=args.host, port=args.port, tls_port=args.tls_port, data_dir=args.data_dir
    ) as running:
        line = json.dumps(running.ready_line())
        if args.ready_file is not None:
            tmp = args.ready_file.with_name(args.ready_file.name + ".tmp")
            await asyncio.to_thread(tmp.write_text, line + "\n")
            await asyncio.to_thread(tmp.replace, args.ready_file)
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
        await stop.wait()


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when installed (optional, roughly halves per-request overhead), else asyncio's."""
    try:
        uvloop = importlib.import_module("uvloop")
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    factory = None if args.no_uvloop else _loop_factory()
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(_serve(args))


if __name__ == "__main__":
    main()
