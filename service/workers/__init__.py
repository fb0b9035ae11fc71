"""Background work outside the request path: the IPN receiver, the reconciler and the settlement
worker."""

from ._ipn import IPN_ATTEMPTS, OBJECT_TYPES, IpnReceiver, Notification, ipn_backoff_s
from ._reconciler import PassResult, Reconciler, ReconcilerSettings
from ._settlement import SettlementPass, SettlementWorker
from ._sns import SnsError, SnsVerifier, string_to_sign

__all__ = [
    "IPN_ATTEMPTS",
    "OBJECT_TYPES",
    "IpnReceiver",
    "Notification",
    "PassResult",
    "Reconciler",
    "ReconcilerSettings",
    "SettlementPass",
    "SettlementWorker",
    "SnsError",
    "SnsVerifier",
    "ipn_backoff_s",
    "string_to_sign",
]
