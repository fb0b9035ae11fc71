"""The settlement figure of `make bench`: a generated settlement report of 200,000 lines, served
over HTTP, streamed by the Amazon Pay client, parsed and reconciled against a ledger that holds
every charge it names, in bounded memory.

Each size runs in a process of its own (``python -m bench.settlement --child ...``) on a fresh
database, so its peak RSS (``VmHWM``) is the reconciliation's alone: the figure is that peak, and
how little it grows from a report ten times smaller. The report is generated line by line and
served in 64 KiB pieces by this (the parent) process; nothing holds the whole report.

``python -m bench.settlement`` alone prints the figures (``DATABASE_URL``, else the embedded
PostgreSQL of ``make bench``); ``make bench`` records them in ``bench/results/latest.*``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from aiohttp import web

from bench._stack import (
    REPO,
    create_database,
    drop_database,
    free_port,
    machine,
    peak_rss_mib,
)
from emulator.launch import write_key_pair
from service.amazonpay import (
    SettlementLine,
    SettlementReportHeader,
    format_settlement_report,
    parse_settlement_report,
)
from service.config import AmazonPaySettings
from service.core import MerchantRegistry, Settlements, SettlementSettings
from service.ledger import EmbeddedPostgres, Ledger, PiiKeyring, seed_captured_charges

__all__ = ["SIZES", "markdown", "measure"]

SIZES = (20_000, 200_000)
QUICK_SIZES = (2_000, 20_000)
MERCHANT = "default"
ID_PREFIX = "S01-4000001-5000002-C"
PERIOD_START = datetime(2026, 3, 2, tzinfo=UTC)
PERIOD_END = PERIOD_START + timedelta(days=1)
_PIECE = 64 * 1024


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def report_lines(count: int) -> Iterator[SettlementLine]:
    """The report's lines, made as they are written: one capture per seeded charge (the same
    ids and amounts as `seed_captured_charges`), fee 2.9 % + 0.30."""
    for n in range(1, count + 1):
        amount = Decimal(10 + n % 50).quantize(Decimal("0.01"))
        fee = -(amount * Decimal("0.029")).quantize(Decimal("0.01")) - Decimal("0.30")
        yield SettlementLine(
            line_number=n,
            settlement_id="5100000001",
            posted_at=PERIOD_START + timedelta(seconds=n * 86_400 / (count + 1)),
            transaction_type="Capture",
            amazon_transaction_id=f"{ID_PREFIX}{n:06d}",
            seller_reference_id=f"order-{n}",
            amount=amount,
            fee=fee,
            net=amount + fee,
            currency="USD",
            raw={},
        )


def _document(count: int) -> Iterator[bytes]:
    header = SettlementReportHeader(
        seller_id="A1BENCHSELLER", settlement_start=PERIOD_START, settlement_end=PERIOD_END
    )
    piece = bytearray()
    for row in format_settlement_report(header, report_lines(count)):
        piece += row
        if len(piece) >= _PIECE:
            yield bytes(piece)
            piece.clear()
    if piece:
        yield bytes(piece)


async def _serve(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"content-type": "text/csv; charset=UTF-8"})
    await response.prepare(request)
    for piece in _document(int(request.match_info["lines"])):
        await response.write(piece)
    await response.write_eof()
    return response


@contextlib.asynccontextmanager
async def document_server() -> AsyncIterator[str]:
    """An HTTP server of generated reports: GET /reports/<lines>."""
    app = web.Application()
    app.router.add_get("/reports/{lines:[0-9]+}", _serve)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def _child(server_url: str, document_url: str, count: int) -> dict[str, Any]:
    """Seed, stream, parse and reconcile one report; the measured process."""
    database_url = await create_database(server_url, "bench_settlement")
    try:
        with tempfile.TemporaryDirectory(prefix="bench-settlement-") as tmp:
            private, _, _ = write_key_pair(Path(tmp))
            ledger = await Ledger.connect(
                database_url, keyring=PiiKeyring({"b": os.urandom(32)}, "b"), max_size=4
            )
            merchants = await MerchantRegistry.from_settings(
                [
                    AmazonPaySettings(
                        public_key_id="SANDBOX-BENCHSETTLEMENT00000000",
                        private_key_file=private,
                        endpoint=document_url,
                    )
                ]
            )
            try:
                await ledger.migrate()
                seeded = await seed_captured_charges(
                    database_url,
                    merchant=MERCHANT,
                    count=count,
                    id_prefix=ID_PREFIX,
                    captured_at=PERIOD_START.strftime("%Y%m%dT%H%M%SZ"),
                )
                settlements = Settlements(
                    merchants, ledger.repository, SettlementSettings(), owner="bench"
                )
                merchant = merchants.get(MERCHANT)
                before = _rss_mib()
                started = time.perf_counter()
                cpu = time.process_time()
                header, lines = await parse_settlement_report(
                    merchant.client.stream_report_document(f"{document_url}/reports/{count}")
                )
                run = await settlements.reconcile_lines(MERCHANT, "R-bench", header, lines)
                seconds = time.perf_counter() - started
                cpu_s = time.process_time() - cpu
            finally:
                await merchants.close()
                await ledger.close()
    finally:
        await drop_database(server_url, database_url)
    return {
        "lines": count,
        "seeded_charges": seeded,
        "lines_recorded": run.lines_recorded,
        "outcomes": dict(Counter(run.recorded)),
        "seconds": round(seconds, 2),
        "lines_per_s": round(count / seconds),
        "cpu_s": round(cpu_s, 2),
        "rss_before_mib": round(before, 1),
        "peak_rss_mib": round(peak_rss_mib(os.getpid()), 1),
    }


async def measure(server_url: str, *, sizes: Sequence[int] = SIZES) -> dict[str, Any]:
    """Every size in a child process of its own; the figures, and the peak's growth."""
    runs = []
    async with document_server() as document_url:
        for count in sizes:
            log(f"settlement: streaming and reconciling a {count:,}-line report")
            child = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bench.settlement",
                "--child",
                "--lines",
                str(count),
                "--server-url",
                server_url,
                "--document-url",
                document_url,
                stdout=asyncio.subprocess.PIPE,
                cwd=REPO,
            )
            out, _ = await child.communicate()
            if child.returncode != 0:
                raise RuntimeError(f"settlement bench child failed ({child.returncode})")
            runs.append(json.loads(out))
            log(f"  {runs[-1]['lines_per_s']:,} lines/s, peak RSS {runs[-1]['peak_rss_mib']} MiB")
    small, large = runs[0], runs[-1]
    return {
        "runs": runs,
        "lines": large["lines"],
        "lines_per_s": large["lines_per_s"],
        "peak_rss_mib": large["peak_rss_mib"],
        "peak_growth_mib": round(large["peak_rss_mib"] - small["peak_rss_mib"], 1),
        "size_ratio": round(large["lines"] / small["lines"]),
        "every_line_matched": all(
            r["outcomes"] == {"matched": r["lines"]} and r["lines_recorded"] == r["lines"]
            for r in runs
        ),
    }


def markdown(result: dict[str, Any] | None) -> str:
    """The section of `bench/results/latest.md`."""
    if not result:
        return ""
    rows = [
        f"| {r['lines']:,} | {r['seconds']} s | {r['lines_per_s']:,} | {r['cpu_s']} s | "
        f"{r['rss_before_mib']} MiB | {r['peak_rss_mib']} MiB |"
        for r in result["runs"]
    ]
    return "\n".join(
        [
            "",
            "## Settlement: a generated report streamed and reconciled",
            "",
            "One capture line per seeded ledger charge, served over HTTP in 64 KiB pieces, streamed "
            "by the Amazon Pay client, parsed a line at a time and matched and recorded 500 lines "
            "per transaction; each size in a process of its own on a fresh database "
            "(`bench/settlement.py`).",
            "",
            "| Lines | Time | Lines/s | CPU (reconciling process) | RSS before | Peak RSS |",
            "|---|---|---|---|---|---|",
            *rows,
            "",
            f"Peak RSS at {result['lines']:,} lines: **{result['peak_rss_mib']} MiB**, "
            f"{result['peak_growth_mib']:+} MiB against a report {result['size_ratio']}x "
            f"smaller (bounded memory); {result['lines_per_s']:,} lines/s; every line matched: "
            f"{'yes' if result['every_line_matched'] else 'NO'}.",
            "",
        ]
    )


async def _standalone(sizes: Sequence[int]) -> dict[str, Any]:
    server_url = os.environ.get("DATABASE_URL", "")
    embedded: EmbeddedPostgres | None = None
    if not server_url:
        embedded = EmbeddedPostgres((REPO / ".data" / "bench-postgres").resolve())
        server_url = await embedded.start()
    try:
        return await measure(server_url, sizes=sizes)
    finally:
        if embedded is not None:
            await embedded.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.settlement", description=__doc__)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--lines", type=int, default=None)
    parser.add_argument("--server-url", default="")
    parser.add_argument("--document-url", default="")
    parser.add_argument("--quick", action="store_true", help=f"sizes {QUICK_SIZES}")
    parser.add_argument(
        "--output", type=Path, default=None, help="also write the section to this file"
    )
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(asyncio.run(_child(args.server_url, args.document_url, args.lines))))
        return 0
    sizes = (args.lines,) if args.lines else (QUICK_SIZES if args.quick else SIZES)
    result = asyncio.run(_standalone(sizes if len(sizes) > 1 else (sizes[0] // 10, sizes[0])))
    section = markdown(result)
    print(section)
    if args.output is not None:
        machine = _machine()
        args.output.write_text(
            f"# Settlement benchmark\n\n{machine}; `python -m bench.settlement`.\n{section}"
        )
    return 0


def _machine() -> str:
    info = machine()
    return f"{info.get('date', '')}, {info.get('cpu_model', '')}, {info.get('nproc', '')} cores"


if __name__ == "__main__":
    sys.exit(main())
