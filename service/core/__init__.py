"""Payment operations over the Amazon Pay client and the ledger: the exactly-once path, reads
with ledger fallback, and re-drive of interrupted operations. No gRPC in here."""

from ._guard import Admission, BreakerSettings, CircuitBreaker, CircuitOpen, Overloaded
from ._merchants import Merchant, MerchantRegistry, UnknownMerchant
from ._operations import (
    GETTERS,
    OWED_READ_ATTEMPTS,
    QUARANTINED,
    SPECS,
    AmazonCall,
    ObjectNotFound,
    Outcome,
    Payments,
    ReadResult,
    StoredFailure,
    amazon_idempotency_key,
)
from ._records import KINDS, Kind, record_of

__all__ = [
    "GETTERS",
    "KINDS",
    "OWED_READ_ATTEMPTS",
    "QUARANTINED",
    "SPECS",
    "Admission",
    "AmazonCall",
    "BreakerSettings",
    "CircuitBreaker",
    "CircuitOpen",
    "Kind",
    "Merchant",
    "MerchantRegistry",
    "ObjectNotFound",
    "Outcome",
    "Overloaded",
    "Payments",
    "ReadResult",
    "StoredFailure",
    "UnknownMerchant",
    "amazon_idempotency_key",
    "record_of",
]
