"""`python -m bench._experiment`: `python -m service` with proposed changes patched in at start-up.

Used only by ``python -m bench.profile --compare`` to measure a change to ``service/`` before it is
made there. ``BENCH_PATCHES`` is a comma-separated list of:

- ``no-pool-reset``: asyncpg pool connections are not reset with ``SELECT pg_advisory_unlock_all();
  CLOSE ALL; UNLISTEN *; RESET ALL`` on every release (asyncpg still rolls back an open
  transaction). Proposed for ``service/ledger/_pool.py`` ``Ledger.connect``: pass
  ``reset=_keep_session`` (an ``async def`` that does nothing) to ``asyncpg.create_pool``.
- ``no-tracing``: no recording tracer provider and no asyncpg/aiohttp instrumentation (the gRPC
  interceptor then creates non-recording spans). Proposed for ``service/telemetry.py``
  ``configure_telemetry``: install the SDK ``TracerProvider`` and call ``instrument_libraries()``
  only when a trace exporter is configured (``OTEL_EXPORTER_OTLP_ENDPOINT``).
"""

from __future__ import annotations

import os
import sys
from typing import Any

PATCHES = frozenset(p for p in os.environ.get("BENCH_PATCHES", "").split(",") if p)


def _apply() -> None:
    if "no-pool-reset" in PATCHES:
        import asyncpg

        original = asyncpg.create_pool

        async def _keep_session(connection: Any) -> None:
            return None

        def create_pool(*args: Any, **kwargs: Any) -> Any:
            kwargs.setdefault("reset", _keep_session)
            return original(*args, **kwargs)

        asyncpg.create_pool = create_pool
    if "no-tracing" in PATCHES:
        from opentelemetry import trace

        import service.telemetry as telemetry

        telemetry.instrument_libraries = lambda: None
        trace.set_tracer_provider = lambda *_a, **_k: None
    unknown = PATCHES - {"no-pool-reset", "no-tracing"}
    if unknown:
        raise SystemExit(f"unknown BENCH_PATCHES: {sorted(unknown)}")


if __name__ == "__main__":
    _apply()
    from service.__main__ import main

    sys.exit(main())
