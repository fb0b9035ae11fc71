"""The Postgres ledger: migrations, the pool, and every SQL statement the service runs.

No gRPC and no HTTP in here, and no asyncpg outside it: callers ask `is_unavailable` whether an
error means the database cannot be reached.
"""

from ._embedded import EmbeddedPostgres
from ._erasure import Erasure, ErasureRefused
from ._errors import is_unavailable
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
from ._objects import EventFilter, InvalidPageToken, ObjectFilter, Page, StableEvents
from ._operations import Operation, OperationConflict
from ._pii import PII_FIELDS, PiiKeyError, PiiKeyring, PiiVault, buyer_hash_of
from ._polling import Backlog
from ._pool import Ledger, reencrypt_pii
from ._records import (
    EVENT_KINDS,
    EVENT_SOURCES,
    OBJECT_KINDS,
    Event,
    ObjectRecord,
    Position,
    StoredObject,
)
from ._repository import Repository
from ._settlement import (
    FINDING_KIND,
    LINE_OUTCOMES,
    Disbursement,
    LedgerEntry,
    LinesWritten,
    MissRecord,
    ReportRecord,
    SettlementCounts,
    SettlementCursor,
    SettlementLineRecord,
    SettlementRun,
    StoredReport,
)
from ._tools import (
    LedgerAudit,
    audit_ledger,
    create_database,
    drop_database,
    row_read_probe,
    seed_captured_charges,
    seed_object_copies,
    statement_probe,
)

__all__ = [
    "CHANNEL",
    "EVENT_KINDS",
    "EVENT_SOURCES",
    "FINDING_KIND",
    "LINE_OUTCOMES",
    "OBJECT_KINDS",
    "PII_FIELDS",
    "Backlog",
    "Disbursement",
    "EmbeddedPostgres",
    "Erasure",
    "ErasureRefused",
    "Event",
    "EventFilter",
    "EventHub",
    "InstanceLease",
    "InvalidPageToken",
    "Ledger",
    "LedgerAudit",
    "LedgerEntry",
    "LinesWritten",
    "Migration",
    "MigrationError",
    "MissRecord",
    "ObjectFilter",
    "ObjectRecord",
    "Operation",
    "OperationConflict",
    "Page",
    "PiiKeyError",
    "PiiKeyring",
    "PiiVault",
    "Position",
    "ReportRecord",
    "Repository",
    "SettlementCounts",
    "SettlementCursor",
    "SettlementLineRecord",
    "SettlementRun",
    "StableEvents",
    "StoredObject",
    "StoredReport",
    "StreamLimitReached",
    "Subscription",
    "apply_migrations",
    "audit_ledger",
    "buyer_hash_of",
    "create_database",
    "drop_database",
    "grant_service_role",
    "instance_alive",
    "is_unavailable",
    "load_migrations",
    "migrate_database",
    "reencrypt_pii",
    "require_migrated",
    "row_read_probe",
    "seed_captured_charges",
    "seed_object_copies",
    "statement_probe",
]
