"""`Repository`: every query of the ledger behind one object, composed of one mixin per concern.

- `_objects`: objects, their events and the positions events are delivered in
- `_operations`: idempotency records, and completion with its objects and events
- `_ipn`: the IPN inbox
- `_polling`: polling leases, owed reads and the backlog gauges
- `_erasure`: buyer PII erasure and retention
- `_settlement`: settlement reports, lines and their outcomes, misses, disbursements
"""

from __future__ import annotations

from ._erasure import ErasureQueries
from ._ipn import IpnQueries
from ._operations import OperationQueries
from ._polling import PollingQueries
from ._settlement import SettlementQueries

__all__ = ["Repository"]


class Repository(OperationQueries, IpnQueries, PollingQueries, ErasureQueries, SettlementQueries):
    """The ledger's queries. Methods take the pool; none holds a connection between calls."""
