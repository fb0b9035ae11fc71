"""The Postgres ledger: migrations, the pool, and (later) every SQL statement the service runs.

No gRPC and no HTTP in here.
"""

from ._embedded import EmbeddedPostgres
from ._migrate import Migration, MigrationError, apply_migrations, load_migrations
from ._pool import Ledger

__all__ = [
    "EmbeddedPostgres",
    "Ledger",
    "Migration",
    "MigrationError",
    "apply_migrations",
    "load_migrations",
]
