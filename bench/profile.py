"""`python -m bench.profile`: where the service spends its CPU on the hot path.

Starts the same stack as ``python -m bench`` (Postgres, emulator, ``python -m service``), drives
CreateCharge (capture_now) and ListTransactions with a closed loop while ``py-spy record`` samples
the service process, then writes ``bench/results/profile.md``: inclusive and self time by function
and by area (gRPC, validation, signing, HTTP, SQL, JSON, logging, ...), with the service CPU per
call measured from ``/proc`` during the same window.

    .venv/bin/python -m bench.profile [--seconds 20] [--concurrency 16] [--no-compare]
        [--compare-revisions REV,...]   # before/after: each revision's service, then this one
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import grpc

from bench._flows import stubs_for
from bench._load import Run, closed_loop
from bench._stack import REPO
from bench.run import RESULTS, Bench, Options, log, running_stack, signature_cost
from payments.amazonpay.v1 import ledger_pb2

# (area, regex on "function (file)") - first match wins, checked from the innermost frame out
AREAS: list[tuple[str, str]] = [
    ("OpenTelemetry (spans, instrumentation wrappers)", r"opentelemetry/"),
    ("socket writes (send syscall)", r"_SelectorSocketTransport\.write "),
    ("RSA signing (cryptography)", r"_signing\.py|cryptography/"),
    ("asyncpg / SQL", r"asyncpg/"),
    ("ledger repository", r"service/ledger/"),
    ("PII vault", r"_pii\.py"),
    ("aiohttp HTTP client", r"aiohttp/|yarl/|multidict/"),
    ("Amazon Pay client", r"service/amazonpay/"),
    ("validation", r"service/api/_validation\.py"),
    ("proto <-> JSON conversion", r"service/api/_convert\.py|google/protobuf/"),
    ("gRPC server", r"grpc/|grpc_status/|_servicers\.py|service/api/"),
    ("core (exactly-once path)", r"service/core/"),
    ("JSON", r"json/"),
    ("logging / telemetry", r"logging/|service/telemetry\.py"),
    ("C extensions run by the loop (grpc cygrpc, asyncpg protocol)", r"^Handle\._run "),
    ("asyncio event loop", r"asyncio/|selectors\.py"),
    ("threads / executor", r"threading\.py|concurrent/"),
]
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^:()]*)(?::(?P<line>\d+))?\)$")


def _short_file(path: str) -> str:
    for marker in ("site-packages/", "lib/python3.11/", str(REPO) + "/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


def parse_raw(text: str) -> tuple[list[tuple[list[str], int]], int]:
    stacks: list[tuple[list[str], int]] = []
    total = 0
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = []
        for raw in stack.split(";"):
            m = _FRAME.match(raw.strip())
            if m is None:
                frames.append(raw.strip())
            else:
                frames.append(f"{m['func']} ({_short_file(m['file'])})")
        stacks.append((frames, int(count)))
        total += int(count)
    return stacks, total


LAYERS = [
    ("service/api (gRPC edge)", "service/api/"),
    ("service/core (exactly-once path)", "service/core/"),
    ("service/ledger (SQL)", "service/ledger/"),
    ("service/amazonpay (HTTP + signing)", "service/amazonpay/"),
]


def layer_of(frames: list[str]) -> str:
    """The innermost service layer on the stack: who asked for this work."""
    for frame in reversed(frames):
        for layer, marker in LAYERS:
            if marker in frame:
                return layer
    if any("grpc/" in f or "grpc_" in f for f in frames):
        return "gRPC / interceptors outside service code"
    return "event loop / other (no service frame)"


def area_of(frames: list[str]) -> str:
    for frame in reversed(frames):
        for area, pattern in AREAS:
            if re.search(pattern, frame):
                return area
    return "other"


def summarize(text: str, top: int = 25) -> dict[str, Any]:
    stacks, total = parse_raw(text)
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    areas: Counter[str] = Counter()
    layers: Counter[str] = Counter()
    for frames, count in stacks:
        layers[layer_of(frames)] += count
        for frame in set(frames):
            inclusive[frame] += count
        if frames:
            own[frames[-1]] += count
        areas[area_of(frames)] += count
    pct = 100.0 / total if total else 0.0
    return {
        "samples": total,
        "areas": [(a, round(c * pct, 1)) for a, c in areas.most_common()],
        "layers": [(a, round(c * pct, 1)) for a, c in layers.most_common()],
        "inclusive": [(f, round(c * pct, 1)) for f, c in inclusive.most_common(top)],
        "self": [(f, round(c * pct, 1)) for f, c in own.most_common(top)],
    }


async def profiled(
    pid: int,
    seconds: float,
    out: Path,
    load: Callable[[], Awaitable[Run]],
) -> Run:
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    proc = await asyncio.create_subprocess_exec(
        spy,
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(int(seconds)),
        "--rate",
        "250",
        "--format",
        "raw",
        "--nonblocking",
        "--full-filenames",
        "--output",
        str(out),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    await asyncio.sleep(1.0)
    run = await load()
    try:
        _, err = await asyncio.wait_for(proc.communicate(), seconds + 30)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    if proc.returncode != 0 or not await asyncio.to_thread(out.exists):
        raise RuntimeError(f"py-spy failed: {err.decode(errors='replace')[-2000:]}")
    return run


def _section(title: str, figures: dict[str, Any], summary: dict[str, Any]) -> list[str]:
    return [
        f"### {title}",
        "",
        f"Load: {figures['throughput_per_s']} calls/s, p50 {figures['p50_ms']} ms, "
        f"p99 {figures['p99_ms']} ms; service CPU {figures.get('service_cpu_ms_per_call')} ms "
        f"per call (`/proc`); {summary['samples']} py-spy samples of the service (idle excluded).",
        "",
        "| what runs (innermost recognised frame) | % of samples |",
        "| --- | --- |",
        *(f"| {a} | {p} |" for a, p in summary["areas"]),
        "",
        "| on behalf of (innermost service frame) | % of samples |",
        "| --- | --- |",
        *(f"| {a} | {p} |" for a, p in summary["layers"]),
        "",
        "<details><summary>Top functions, inclusive</summary>",
        "",
        "| function | % |",
        "| --- | --- |",
        *(f"| `{f}` | {p} |" for f, p in summary["inclusive"]),
        "",
        "</details>",
        "",
        "<details><summary>Top functions, self</summary>",
        "",
        "| function | % |",
        "| --- | --- |",
        *(f"| `{f}` | {p} |" for f, p in summary["self"]),
        "",
        "</details>",
        "",
    ]


async def run_profile(seconds: float, concurrency: int, output: Path) -> list[str]:
    options = Options.parse(["--quick", "--seed-objects", "20000"])
    lines = [
        "# Profile of the service hot path (`python -m bench.profile`)",
        "",
        f"Generated {time.strftime('%Y-%m-%d %H:%M:%S')}; py-spy record at 250 Hz on the "
        f"`python -m service` process, closed loop with {concurrency} callers for about "
        f"{seconds:.0f} s per scenario.",
        "",
    ]
    with tempfile.TemporaryDirectory(prefix="bench-profile-") as tmp:
        work = Path(tmp)
        async with (
            running_stack(work) as stack,
            grpc.aio.insecure_channel(stack.service.target) as channel,
        ):
            bench = Bench(options, stack, stubs_for(channel, stack.service.target))
            log("preparing charge permissions")
            await bench.prepare_slots(int(seconds * 150) + 200)
            await closed_loop(bench._create_charge, concurrency=8, max_calls=50, max_seconds=5)
            log(f"profiling CreateCharge for {seconds:.0f}s")
            calls = bench.pool.free
            _, figures = await bench.measure(
                lambda: profiled(
                    stack.service.pid,
                    seconds,
                    work / "create_charge.txt",
                    lambda: closed_loop(
                        bench._create_charge,
                        concurrency=concurrency,
                        max_calls=calls,
                        max_seconds=seconds - 1.5,
                    ),
                )
            )
            raw = (work / "create_charge.txt").read_text()
            (output / "profile-create-charge.txt").write_text(raw)
            lines += _section("CreateCharge (capture_now)", figures, summarize(raw))

            await bench.seed_objects()

            async def first_page(_i: int) -> None:
                await bench.api.ledger.ListTransactions(
                    ledger_pb2.ListTransactionsRequest(page_size=50), timeout=30
                )

            log(f"profiling ListTransactions for {seconds / 2:.0f}s")
            _, figures = await bench.measure(
                lambda: profiled(
                    stack.service.pid,
                    seconds / 2,
                    work / "list.txt",
                    lambda: closed_loop(
                        first_page,
                        concurrency=4,
                        max_calls=100_000,
                        max_seconds=seconds / 2 - 1.5,
                    ),
                )
            )
            raw = (work / "list.txt").read_text()
            (output / "profile-list-transactions.txt").write_text(raw)
            lines += _section("ListTransactions (first page of 50)", figures, summarize(raw))
    return lines


@contextlib.contextmanager
def _worktree(revision: str) -> Iterator[Path]:
    """A detached checkout of ``revision`` (with its generated stubs), removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="bench-rev-") as tmp:
        path = Path(tmp) / "tree"
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(path), revision],
            cwd=REPO,
            check=True,
            capture_output=True,
        )
        try:
            yield path
        finally:
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(path)],
                cwd=REPO,
                check=False,
                capture_output=True,
            )


async def _measure_variant(
    name: str, source: Path, seconds: float, concurrency: int, options: Options
) -> str:
    with tempfile.TemporaryDirectory(prefix="bench-compare-") as tmp:
        async with (
            running_stack(Path(tmp), service_source=source) as stack,
            grpc.aio.insecure_channel(stack.service.target) as channel,
        ):
            bench = Bench(options, stack, stubs_for(channel, stack.service.target))
            await bench.prepare_slots(int(seconds * 800) + 200)
            await closed_loop(bench._create_charge, concurrency=8, max_calls=100, max_seconds=5)
            calls = bench.pool.free
            _, f = await bench.measure(
                lambda b=bench, n=calls: closed_loop(  # type: ignore[misc]
                    b._create_charge,
                    concurrency=concurrency,
                    max_calls=n,
                    max_seconds=seconds,
                )
            )
            sig = signature_cost(300)["cpu_ms_per_signature"]
            cpu = f.get("service_cpu_ms_per_call") or 0.0
            row = (
                f"| {name} | {f['throughput_per_s']} | {f['p50_ms']} | {f['p99_ms']} "
                f"| {cpu} | {cpu / sig:.2f} | {f['cores_used']['service']} "
                f"| {f['cores_used']['postgres']} |"
            )
            log(f"  {row}")
            return row


async def compare(seconds: float, concurrency: int, revisions: list[str]) -> list[str]:
    """CreateCharge from each earlier revision's service, then from this checkout's, each on a
    fresh stack in the same run (same emulator, Postgres and load generator code)."""
    options = Options.parse(["--quick"])
    rows = []
    for revision in revisions:
        log(f"compare: revision {revision}")
        short = (
            await asyncio.to_thread(
                subprocess.run,
                ["git", "rev-parse", "--short", revision],
                cwd=REPO,
                check=True,
                capture_output=True,
                text=True,
            )
        ).stdout.strip()
        with _worktree(revision) as tree:
            rows.append(await _measure_variant(short, tree, seconds, concurrency, options))
    log("compare: this checkout")
    rows.append(await _measure_variant("this checkout", REPO, seconds, concurrency, options))
    return [
        f"### Before/after: CreateCharge, closed loop, {concurrency} callers, {seconds:.0f} s each",
        "",
        "Each row is a fresh stack running the service from that revision (a git worktree, this "
        "checkout's virtualenv); x sig divides by one signature measured beside it.",
        "",
        "| service | calls/s | p50 ms | p99 ms | svc CPU ms/call | x sig | svc cores "
        "| Postgres cores |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
        *rows,
        "",
    ]


# The last revision before the second round of hot-path work (bench/results/profile.md).
BEFORE = "e675112"

MARKER = "<!-- everything below is generated by python -m bench.profile -->"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--output", type=Path, default=RESULTS)
    p.add_argument("--no-compare", action="store_true", help="skip the before/after runs")
    p.add_argument("--compare-seconds", type=float, default=10.0)
    p.add_argument(
        "--compare-revisions",
        default=BEFORE,
        help="comma-separated git revisions to measure before this checkout",
    )
    a = p.parse_args(argv)
    a.output.mkdir(parents=True, exist_ok=True)
    lines = asyncio.run(run_profile(a.seconds, a.concurrency, a.output))
    if not a.no_compare:
        revisions = [r for r in a.compare_revisions.split(",") if r]
        lines += asyncio.run(compare(a.compare_seconds, a.concurrency, revisions))
    target = a.output / "profile.md"
    findings = ""
    if target.exists() and MARKER in target.read_text():
        findings = target.read_text().split(MARKER, 1)[0]
    target.write_text(findings + MARKER + "\n\n" + "\n".join(lines))
    log(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
