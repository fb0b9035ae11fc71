-- Events in a resumable order. `event_id` is assigned at INSERT, and transactions commit out of id
-- order, so "every event after the last id I saw" could skip one that committed late. Each event now
-- records the transaction that wrote it (`tx`, pg_current_xact_id()); readers deliver only events
-- whose transaction is below every transaction that may still write one (`ledger_event_frontier`),
-- in (tx, event_id) order. That set only grows at its end, so resuming after an event's
-- (tx, event_id) loses nothing and repeats nothing. Writers pay nothing extra: the transaction id is
-- assigned by their first write anyway, and no lock is shared between them.

-- Events written before this migration all committed before it (it takes the table's lock), so they
-- share position 1, in event_id order. A constant default adds the column without a rewrite.
ALTER TABLE events ADD COLUMN tx xid8 NOT NULL DEFAULT '1';
ALTER TABLE events ALTER COLUMN tx SET DEFAULT pg_current_xact_id();

CREATE INDEX events_position_idx ON events (tx, event_id);

-- The lowest transaction id that may still commit an event: readers deliver events below it. It is
-- the oldest transaction in progress in the calling statement's own snapshot (STABLE: it reads that
-- snapshot), cluster-wide: which database a running transaction belongs to cannot be read
-- atomically with the snapshot (pg_stat_activity pairs a backend's database and transaction id
-- without a lock), and a wrong guess would let a reader overtake a transaction of this ledger.
CREATE FUNCTION ledger_event_frontier() RETURNS xid8
LANGUAGE sql STABLE AS $$
    SELECT pg_snapshot_xmin(pg_current_snapshot())
$$;
