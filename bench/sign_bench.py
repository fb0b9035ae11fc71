"""Micro-benchmark: signed Amazon Pay requests per second with 1 and 2 signing threads.

Run: ``.venv/bin/python bench/sign_bench.py [--requests N] [--key PATH]``. Not part of the tests.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from service.amazonpay import PrivateKey, RequestSigner, canonical_request

HEADERS = {
    "accept": "application/json",
    "content-type": "application/json",
    "x-amz-pay-date": "20240101T000000Z",
    "x-amz-pay-host": "pay-api.amazon.com",
    "x-amz-pay-region": "na",
    "x-amz-pay-idempotency-key": "bench-key",
    "user-agent": "bench",
}
BODY = b'{"chargePermissionId":"S01-1234567-1234567","chargeAmount":{"amount":"14.00","currencyCode":"USD"}}'
DEFAULT_KEY = (
    Path(__file__).resolve().parents[1]
    / "tests"
    / "data"
    / "signing-vectors"
    / "test-key-private.pem"
)


def load_key(path: Path | None) -> PrivateKey:
    if path is not None and path.exists():
        return PrivateKey.from_file(path)
    generated = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = generated.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return PrivateKey.from_pem(pem)


def sign_once(signer: RequestSigner) -> str:
    canonical = canonical_request(
        "POST", "/sandbox/v2/charges", None, HEADERS, BODY, path_is_canonical=True
    )
    return signer.authorization(canonical)


async def run(signer: RequestSigner, threads: int, requests: int) -> float:
    """Signed requests per second with ``threads`` signing threads, the loop never signing."""
    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        await asyncio.gather(*(loop.run_in_executor(pool, sign_once, signer) for _ in range(50)))
        started = time.perf_counter()
        await asyncio.gather(
            *(loop.run_in_executor(pool, sign_once, signer) for _ in range(requests))
        )
        elapsed = time.perf_counter() - started
    return requests / elapsed


def cpu_per_signature(signer: RequestSigner, requests: int) -> float:
    started = time.thread_time()
    for _ in range(requests):
        sign_once(signer)
    return (time.thread_time() - started) / requests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--key", type=Path, default=DEFAULT_KEY)
    args = parser.parse_args()
    signer = RequestSigner("BENCHKEY", load_key(args.key))

    cpu = cpu_per_signature(signer, max(args.requests // 4, 100))
    one = asyncio.run(run(signer, 1, args.requests))
    two = asyncio.run(run(signer, 2, args.requests))

    print(f"CPU per signed request (canonicalize + RSA-2048 PSS): {cpu * 1000:.3f} ms")
    print()
    print(f"{'signing threads':>16} | {'signed req/s':>12} | {'vs 1 thread':>11}")
    print(f"{'-' * 16}-+-{'-' * 12}-+-{'-' * 11}")
    print(f"{1:>16} | {one:>12.0f} | {1.0:>10.2f}x")
    print(f"{2:>16} | {two:>12.0f} | {two / one:>10.2f}x")
    print()
    print(
        f"single-thread ceiling from CPU cost: {1 / cpu:.0f} req/s; 1-thread efficiency: "
        f"{one * cpu:.2f}"
    )


if __name__ == "__main__":
    main()
