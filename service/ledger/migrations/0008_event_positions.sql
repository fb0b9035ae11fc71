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

-- The lowest transaction id that may still commit an event: the oldest transaction in progress in
-- the caller's snapshot, skipping those known to run in another database of the cluster (they cannot
-- write this ledger). A transaction whose database is unknown (finished since the snapshot, or hidden
-- from a role without pg_read_all_stats) still counts, so the frontier can lag but never overtake.
-- STABLE: it reads the snapshot of the statement that calls it.
CREATE FUNCTION ledger_event_frontier() RETURNS xid8
LANGUAGE sql STABLE AS $$
    SELECT coalesce(min(running.x), pg_snapshot_xmax(pg_current_snapshot()))
    FROM pg_snapshot_xip(pg_current_snapshot()) AS running(x)
    WHERE running.x::xid NOT IN (
        SELECT a.backend_xid FROM pg_stat_activity a
        WHERE a.backend_xid IS NOT NULL AND a.datname <> current_database()
        UNION ALL
        SELECT p.transaction FROM pg_prepared_xacts p WHERE p.database <> current_database()
    )
$$;
