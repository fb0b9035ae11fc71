"""Which errors mean "the database cannot be reached right now", so callers outside the ledger
never match driver classes or SQLSTATEs themselves."""

from __future__ import annotations

import asyncpg

__all__ = ["is_unavailable"]

# Raised while Postgres restarts or is out of reach: the connection gone or refused, the pool
# closed, or a pooled connection caught mid-operation by a shutdown (InternalClientError: "cannot
# switch to state"). OSError covers refused connections and TimeoutError.
_UNAVAILABLE = (
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    OSError,
    TimeoutError,
)

# admin_shutdown, crash_shutdown, cannot_connect_now, query_canceled (the statement timeout),
# too_many_connections.
_UNAVAILABLE_SQLSTATES = frozenset({"57P01", "57P02", "57P03", "57014", "53300"})


def is_unavailable(exc: BaseException) -> bool:
    """True when `exc` says the ledger database is unavailable (restarting, unreachable, shutting
    down, out of connections or too slow), so the same request may be retried later."""
    if isinstance(exc, _UNAVAILABLE):
        return True
    return isinstance(exc, asyncpg.PostgresError) and exc.sqlstate in _UNAVAILABLE_SQLSTATES
