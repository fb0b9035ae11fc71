"""Payment operations over the Amazon Pay client and the ledger: the exactly-once path, reads
with ledger fallback, and re-drive of interrupted operations. No gRPC in here."""

from ._erasure import ERASE_BUYER_DATA, BuyerDataErasure, ErasureResult
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
    "ERASE_BUYER_DATA",
    "GETTERS",
    "KINDS",
    "OWED_READ_ATTEMPTS",
    "QUARANTINED",
    "SPECS",
    "Admission",
    "AmazonCall",
    "BreakerSettings",
    "BuyerDataErasure",
    "CircuitBreaker",
    "CircuitOpen",
    "ErasureResult",
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
