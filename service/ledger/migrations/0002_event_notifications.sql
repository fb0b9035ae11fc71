-- Every committed event is announced on the `ledger_events` channel (delivered at commit, so a
-- listener never sees an event it cannot read). The payload carries only routing fields; the event
-- itself is read by id, because snapshots can exceed NOTIFY's 8000-byte limit.
CREATE FUNCTION notify_ledger_event() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify(
        'ledger_events',
        json_build_object(
            'id', NEW.event_id,
            'm', NEW.merchant,
            'k', NEW.kind,
            'o', NEW.object_id,
            'c', NEW.charge_permission_id
        )::text
    );
    RETURN NULL;
END;
$$;

CREATE TRIGGER events_notify
    AFTER INSERT ON events
    FOR EACH ROW EXECUTE FUNCTION notify_ledger_event();
