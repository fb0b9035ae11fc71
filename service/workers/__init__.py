"""Background work outside the request path: the IPN receiver and the reconciler."""

from ._ipn import IPN_ATTEMPTS, OBJECT_TYPES, IpnReceiver, Notification, ipn_backoff_s
from ._reconciler import PassResult, Reconciler, ReconcilerSettings
from ._sns import SnsError, SnsVerifier, string_to_sign

__all__ = [
    "IPN_ATTEMPTS",
    "OBJECT_TYPES",
    "IpnReceiver",
    "Notification",
    "PassResult",
    "Reconciler",
    "ReconcilerSettings",
    "SnsError",
    "SnsVerifier",
    "ipn_backoff_s",
    "string_to_sign",
]
