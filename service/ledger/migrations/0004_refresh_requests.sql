-- A final object whose snapshot another object's outcome changed (a captured charge whose refund
-- settled: refundedAmount) is marked here, in the same transaction as that outcome, so the
-- reconciler re-reads it even if the immediate re-read failed or its process died.
ALTER TABLE objects ADD COLUMN needs_refresh boolean NOT NULL DEFAULT false;
CREATE INDEX objects_needs_refresh_idx ON objects (merchant, kind, object_id) WHERE needs_refresh;
