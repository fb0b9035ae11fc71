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
from ._settlement import (
    RULES,
    SETTLEMENT_OUTCOMES,
    MatchRule,
    PeriodSummary,
    RunSummary,
    Settlements,
    SettlementSettings,
    match_line,
    rule_for,
)

__all__ = [
    "ERASE_BUYER_DATA",
    "GETTERS",
    "KINDS",
    "OWED_READ_ATTEMPTS",
    "QUARANTINED",
    "RULES",
    "SETTLEMENT_OUTCOMES",
    "SPECS",
    "Admission",
    "AmazonCall",
    "BreakerSettings",
    "BuyerDataErasure",
    "CircuitBreaker",
    "CircuitOpen",
    "ErasureResult",
    "Kind",
    "MatchRule",
    "Merchant",
    "MerchantRegistry",
    "ObjectNotFound",
    "Outcome",
    "Overloaded",
    "Payments",
    "PeriodSummary",
    "ReadResult",
    "RunSummary",
    "SettlementSettings",
    "Settlements",
    "StoredFailure",
    "UnknownMerchant",
    "amazon_idempotency_key",
    "match_line",
    "record_of",
    "rule_for",
]
