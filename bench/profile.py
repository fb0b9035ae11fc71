"""`python -m bench.profile`: where the service spends its CPU on the hot path.

Starts the same stack as ``python -m bench`` (Postgres, emulator, ``python -m service``), drives
CreateCharge (capture_now) and ListTransactions with a closed loop while ``py-spy record`` samples
the service process, then writes ``bench/results/profile.md``: inclusive and self time by function
and by area (gRPC, validation, signing, HTTP, SQL, JSON, logging, ...), with the service CPU per
call measured from ``/proc`` during the same window.

    .venv/bin/python -m bench.profile [--seconds 20] [--concurrency 16] [--no-profile]
        [--compare REV[+VAR=value],...]   # before/after: the variants side by side, in turns
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from bench._flows import channels, stubs_for
from bench._load import Run, closed_loop
from bench._stack import REPO, Service, cpu_seconds, create_database, drop_database, free_port
from bench.run import RESULTS, Bench, Options, log, running_stack, signature_cost
from payments.amazonpay.v1 import charge_pb2, ledger_pb2

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

            async def scenario(
                title: str,
                name: str,
                call: Callable[[int], Awaitable[None]],
                *,
                callers: int,
                duration: float,
                max_calls: int,
            ) -> list[str]:
                """``call`` in a closed loop while py-spy samples the service; its section."""
                log(f"profiling {title} for {duration:.0f}s")
                _, figures = await bench.measure(
                    lambda: profiled(
                        stack.service.pid,
                        duration,
                        work / f"{name}.txt",
                        lambda: closed_loop(
                            call,
                            concurrency=callers,
                            max_calls=max_calls,
                            max_seconds=duration - 1.5,
                        ),
                    )
                )
                raw = (work / f"{name}.txt").read_text()
                (output / f"profile-{name.replace('_', '-')}.txt").write_text(raw)
                return _section(title, figures, summarize(raw))

            lines += await scenario(
                "CreateCharge (capture_now)",
                "create_charge",
                bench._create_charge,
                callers=concurrency,
                duration=seconds,
                max_calls=bench.pool.free,
            )
            lines += await scenario(
                "GetCharge (served from the ledger, 8 callers)",
                "get_charge",
                _get_charge(bench),
                callers=8,
                duration=seconds / 2,
                max_calls=1_000_000,
            )

            await bench.seed_objects()

            async def first_page(_i: int) -> None:
                await bench.api.ledger.ListTransactions(
                    ledger_pb2.ListTransactionsRequest(page_size=50), timeout=30
                )

            lines += await scenario(
                "ListTransactions (first page of 50)",
                "list_transactions",
                first_page,
                callers=4,
                duration=seconds / 2,
                max_calls=100_000,
            )
    return lines


@contextlib.contextmanager
def _tree(revision: str) -> Iterator[Path]:
    """The files of ``revision`` (generated stubs included, they are committed) in a temporary
    directory, from ``git archive``: no worktree is registered."""
    with tempfile.TemporaryDirectory(prefix="bench-rev-") as tmp:
        archive = subprocess.run(
            ["git", "archive", "--format=tar", revision],
            cwd=REPO,
            check=True,
            capture_output=True,
        )
        subprocess.run(["tar", "-x", "-C", tmp], input=archive.stdout, check=True)
        yield Path(tmp)


@dataclass
class Variant:
    """One service under comparison: a revision (``.``: this checkout) and extra settings."""

    spec: str
    name: str
    source: Path
    env: dict[str, str]
    service: Service | None = None
    bench: Bench | None = None
    rounds: list[dict[str, Any]] = field(default_factory=list)

    @staticmethod
    def parse(spec: str) -> tuple[str, dict[str, str]]:
        """``REV[+VAR=value...]``, e.g. ``HEAD~3`` or ``.+GRPC_WORKERS=2``."""
        revision, *settings = spec.split("+")
        return revision, dict(item.split("=", 1) for item in settings)


def _short(revision: str) -> str:
    return subprocess.run(
        ["git", "rev-parse", "--short", revision],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def _get_charge(bench: Bench) -> Callable[[int], Awaitable[None]]:
    """GetCharge of the charges captured so far, in turn (served from the ledger)."""

    async def get(i: int) -> None:
        ids = bench.pool.captured
        await bench.api.charges.GetCharge(
            charge_pb2.GetChargeRequest(charge_id=ids[i % len(ids)]), timeout=30
        )

    return get


async def compare(
    seconds: float, concurrency: int, specs: list[str], rounds: int, *, rpc: str = "CreateCharge"
) -> list[str]:
    """CreateCharge through the service of each variant, all running side by side on ONE stack
    (same emulator, Postgres and load generator) and driven in turn, round after round (the order
    rotates): on a shared machine whose speed drifts, every variant is measured in the same
    stretches of time. CPU per call is over all of a variant's rounds (every process of its
    service); calls/s and p99 are the rounds' medians."""
    options = Options.parse(["--quick"])
    with contextlib.ExitStack() as trees, tempfile.TemporaryDirectory(prefix="bench-cmp-") as tmp:
        variants = []
        for spec in specs:
            revision, env = Variant.parse(spec)
            if revision == ".":
                name, source = "this checkout", REPO
            else:
                name, source = _short(revision), trees.enter_context(_tree(revision))
            label = name + "".join(f" {k}={v}" for k, v in env.items())
            variants.append(Variant(spec, label, source, env))
        async with running_stack(Path(tmp)) as stack, contextlib.AsyncExitStack() as running:
            for n, variant in enumerate(variants):
                env = {**stack.service.env, **variant.env}
                if variant.source != REPO and rpc != "CreateCharge":
                    raise SystemExit(
                        f"--rpc {rpc} reads charges from this checkout's database: compare "
                        "variants of `.` only"
                    )
                if variant.source != REPO:
                    # An earlier revision refuses a database migrated by a newer one.
                    database = await create_database(stack.server_url, f"bench_cmp{n}")
                    running.push_async_callback(drop_database, stack.server_url, database)
                    env["DATABASE_URL"] = database
                service = Service(
                    env,
                    free_port(),
                    REPO / ".data" / "bench-logs" / f"compare-{n}.log",
                )
                running.push_async_callback(service.terminate)
                await service.start(cwd=variant.source)
                await service.wait_serving()
                pool = await running.enter_async_context(channels(service.target, concurrency))
                variant.service = service
                variant.bench = Bench(options, stack, stubs_for(pool, service.target))
            first = variants[0].bench
            assert first is not None
            for variant in variants:
                assert variant.bench is not None
                variant.bench.pool = first.pool
                await first.prepare_slots(400)
                await closed_loop(
                    variant.bench._create_charge,
                    concurrency=concurrency,
                    max_calls=200,
                    max_seconds=5,
                )
            per_round = 0
            for n in range(rounds):
                order = variants[n % len(variants) :] + variants[: n % len(variants)]
                best = max([f["throughput_per_s"] for v in variants for f in v.rounds] or [300])
                per_round = int(best * seconds * 1.5) + 100
                await first.prepare_slots(per_round * len(variants))
                for variant in order:
                    assert variant.bench is not None
                    assert variant.service is not None
                    pids = variant.service.pids
                    before = sum(cpu_seconds(pid) for pid in pids())
                    run = await closed_loop(
                        variant.bench._create_charge
                        if rpc == "CreateCharge"
                        else _get_charge(variant.bench),
                        concurrency=concurrency,
                        max_calls=per_round if rpc == "CreateCharge" else 1_000_000,
                        max_seconds=seconds,
                    )
                    cpu = sum(cpu_seconds(pid) for pid in pids()) - before
                    variant.rounds.append({**run.summary(), "cpu_s": cpu})
                log(
                    f"  round {n + 1}: "
                    + "; ".join(
                        f"{v.name} {v.rounds[-1]['throughput_per_s']}/s "
                        f"{v.rounds[-1]['cpu_s'] / max(v.rounds[-1]['calls_ok'], 1) * 1000:.3f} ms"
                        for v in variants
                    )
                )
    sig = signature_cost(300)["cpu_ms_per_signature"]
    rows = []

    def per_call(figures: dict[str, Any]) -> float:
        return float(figures["cpu_s"]) / max(int(figures["calls_ok"]), 1) * 1000

    for variant in variants:
        ok = sum(f["calls_ok"] for f in variant.rounds)
        cpu_ms = sum(f["cpu_s"] for f in variant.rounds) / max(ok, 1) * 1000
        # The machine's speed drifts between rounds; within a round every variant ran within
        # seconds of the others, so the per-round ratio to the first variant is the steadier
        # figure.
        ratios = sorted(
            per_call(mine) / per_call(first)
            for mine, first in zip(variant.rounds, variants[0].rounds, strict=True)
        )
        quartile = max(len(ratios) // 4, 0)
        rate = statistics.median(f["throughput_per_s"] for f in variant.rounds)
        p99 = statistics.median(f["p99_ms"] for f in variant.rounds)
        errors = sum(f["calls_failed"] for f in variant.rounds)
        rows.append(
            f"| {variant.name} | {rate:.1f} | {p99:.1f} | {cpu_ms:.3f} | "
            f"{statistics.median(ratios) - 1:+.1%} ({ratios[quartile] - 1:+.0%} .. "
            f"{ratios[-1 - quartile] - 1:+.0%}) | {cpu_ms / sig:.2f} | {errors} |"
        )
    return [
        f"### Before/after: {rpc}, closed loop, {concurrency} callers, {rounds} alternating "
        f"rounds of {seconds:g} s",
        "",
        "Every variant's service ran side by side on one stack and was driven in turn (`python -m "
        "bench.profile --compare ...`); CPU is every process of that service, per call over all "
        'its rounds; "vs first" is the median over rounds of its CPU per call divided by the '
        "first variant's in the same round; calls/s and p99 are the medians of the rounds; x sig "
        f"divides by one signature ({sig} ms) measured after the rounds.",
        "",
        "| service | calls/s | p99 ms | CPU ms/call | CPU vs first: median of rounds (quartiles) "
        "| x sig | errors |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        *rows,
        "",
    ]


MARKER = "<!-- everything below is generated by python -m bench.profile -->"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--output", type=Path, default=RESULTS)
    p.add_argument("--no-profile", action="store_true", help="skip the py-spy profiles")
    p.add_argument(
        "--compare",
        default="",
        help="comma-separated variants REV[+VAR=value...] (`.` is this checkout) to measure side "
        "by side in alternating rounds, e.g. 3baf487,.,.+GRPC_WORKERS=2",
    )
    p.add_argument("--compare-seconds", type=float, default=4.0)
    p.add_argument("--compare-rounds", type=int, default=6)
    p.add_argument(
        "--rpc",
        choices=("CreateCharge", "GetCharge"),
        default="CreateCharge",
        help="the call --compare drives (GetCharge: of captured charges, from the ledger)",
    )
    a = p.parse_args(argv)
    a.output.mkdir(parents=True, exist_ok=True)
    lines: list[str] = []
    if not a.no_profile:
        lines += asyncio.run(run_profile(a.seconds, a.concurrency, a.output))
    specs = [v for v in a.compare.split(",") if v]
    if specs:
        lines += asyncio.run(
            compare(a.compare_seconds, a.concurrency, specs, a.compare_rounds, rpc=a.rpc)
        )
    target = a.output / "profile.md"
    findings = ""
    if target.exists() and MARKER in target.read_text():
        findings = target.read_text().split(MARKER, 1)[0]
    target.write_text(findings + MARKER + "\n\n" + "\n".join(lines))
    log(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
