"""The Postgres ledger: migrations, the pool, and (later) every SQL statement the service runs.

No gRPC and no HTTP in here.
"""

from ._embedded import EmbeddedPostgres
from ._instance import InstanceLease, instance_alive
from ._migrate import Migration, MigrationError, apply_migrations, load_migrations
from ._pool import Ledger
from ._repository import (
    EVENT_SOURCES,
    OBJECT_KINDS,
    Event,
    EventFilter,
    InvalidPageToken,
    ObjectFilter,
    ObjectRecord,
    Operation,
    OperationConflict,
    Page,
    Repository,
    StoredObject,
)

__all__ = [
    "EVENT_SOURCES",
    "OBJECT_KINDS",
    "EmbeddedPostgres",
    "Event",
    "EventFilter",
    "InstanceLease",
    "InvalidPageToken",
    "Ledger",
    "Migration",
    "MigrationError",
    "ObjectFilter",
    "ObjectRecord",
    "Operation",
    "OperationConflict",
    "Page",
    "Repository",
    "StoredObject",
    "apply_migrations",
    "instance_alive",
    "load_migrations",
]
