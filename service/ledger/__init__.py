"""The Postgres ledger: migrations, the pool, and (later) every SQL statement the service runs.

No gRPC and no HTTP in here.
"""

from ._embedded import EmbeddedPostgres
from ._instance import InstanceLease, instance_alive
from ._migrate import (
    Migration,
    MigrationError,
    apply_migrations,
    grant_service_role,
    load_migrations,
    migrate_database,
    require_migrated,
)
from ._notify import CHANNEL, EventHub, StreamLimitReached, Subscription
from ._pii import PII_FIELDS, PiiKeyError, PiiKeyring, PiiVault, buyer_hash_of
from ._pool import Ledger
from ._repository import (
    EVENT_SOURCES,
    OBJECT_KINDS,
    Backlog,
    Erasure,
    ErasureRefused,
    Event,
    EventFilter,
    InvalidPageToken,
    ObjectFilter,
    ObjectRecord,
    Operation,
    OperationConflict,
    Page,
    Position,
    Repository,
    StableEvents,
    StoredObject,
)

__all__ = [
    "CHANNEL",
    "EVENT_SOURCES",
    "OBJECT_KINDS",
    "PII_FIELDS",
    "Backlog",
    "EmbeddedPostgres",
    "Erasure",
    "ErasureRefused",
    "Event",
    "EventFilter",
    "EventHub",
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
    "PiiKeyError",
    "PiiKeyring",
    "PiiVault",
    "Position",
    "Repository",
    "StableEvents",
    "StoredObject",
    "StreamLimitReached",
    "Subscription",
    "apply_migrations",
    "buyer_hash_of",
    "grant_service_role",
    "instance_alive",
    "load_migrations",
    "migrate_database",
    "require_migrated",
]
