"""Typed async Python client of the Amazon Pay gRPC service (`payments.amazonpay.v1`).

Typed exceptions instead of raw RpcErrors, one idempotency key per logical call reused on its
retries, jittered retries of UNAVAILABLE / RESOURCE_EXHAUSTED (honouring RetryInfo), default
deadlines, TLS / mTLS / bearer tokens. `python -m amazonpay_client --help` is the on-call CLI.
"""

from . import _errors
from ._client import DEFAULT_TARGET, AmazonPayClient
from ._errors import *  # noqa: F403 - the exceptions, listed once in `_errors.__all__`
from ._retry import RetryEvent, RetryPolicy
from ._services import kind_enum, kind_name, outcome_enum, outcome_name, price
from ._transport import DEFAULT_READ_TIMEOUT, DEFAULT_WRITE_TIMEOUT, new_key

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_READ_TIMEOUT",
    "DEFAULT_TARGET",
    "DEFAULT_WRITE_TIMEOUT",
    "AmazonPayClient",
    "RetryEvent",
    "RetryPolicy",
    "kind_enum",
    "kind_name",
    "new_key",
    "outcome_enum",
    "outcome_name",
    "price",
]
__all__ += _errors.__all__
