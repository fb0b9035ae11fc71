"""Background work outside the request path: the IPN receiver and the reconciler."""

from ._ipn import OBJECT_TYPES, IpnReceiver
from ._reconciler import PassResult, Reconciler, ReconcilerSettings
from ._sns import SnsError, SnsVerifier, string_to_sign

__all__ = [
    "OBJECT_TYPES",
    "IpnReceiver",
    "PassResult",
    "Reconciler",
    "ReconcilerSettings",
    "SnsError",
    "SnsVerifier",
    "string_to_sign",
]
