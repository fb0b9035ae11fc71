-- The ledger: every Amazon Pay object we have seen, its append-only history, the idempotency
-- records of calls that move money, and received IPN messages. Amazon deletes its objects after 30
-- days; these tables keep them for years.

CREATE TABLE objects (
    merchant              text        NOT NULL,
    kind                  text        NOT NULL
        CHECK (kind IN ('checkout_session', 'charge_permission', 'charge', 'refund')),
    object_id             text        NOT NULL,
    checkout_session_id   text,
    charge_permission_id  text,
    charge_id             text,
    state                 text        NOT NULL,
    reason_code           text,
    is_final              boolean     NOT NULL DEFAULT false,
    amount                numeric,  -- unconstrained: keeps the scale Amazon sent ("14.00")
    currency_code         text,
    merchant_reference_id text,
    snapshot              jsonb       NOT NULL,
    -- Amazon's creationTimestamp when known, else when we first saw the object
    created_at            timestamptz NOT NULL,
    amazon_expires_at     timestamptz,
    first_seen_at         timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    version               bigint      NOT NULL DEFAULT 1,
    -- reconciler bookkeeping: when to poll next and which replica holds the lease
    next_poll_at          timestamptz,
    poll_attempts         integer     NOT NULL DEFAULT 0,
    lease_owner           text,
    lease_expires_at      timestamptz,
    PRIMARY KEY (merchant, kind, object_id)
);

CREATE INDEX objects_list_idx ON objects (merchant, created_at DESC, kind, object_id);
CREATE INDEX objects_charge_permission_idx ON objects (charge_permission_id) WHERE charge_permission_id IS NOT NULL;
CREATE INDEX objects_merchant_reference_idx ON objects (merchant, merchant_reference_id)
    WHERE merchant_reference_id IS NOT NULL;
CREATE INDEX objects_pending_idx ON objects (next_poll_at) WHERE NOT is_final;

-- Append-only history, partitioned by month so years of events stay fast. Rows are never updated
-- or deleted: the triggers below refuse it for every role, including the service's own.
CREATE TABLE events (
    event_id             bigint GENERATED ALWAYS AS IDENTITY,
    recorded_at          timestamptz NOT NULL DEFAULT now(),
    merchant             text        NOT NULL,
    kind                 text        NOT NULL,
    object_id            text        NOT NULL,
    charge_permission_id text,
    state                text        NOT NULL,
    reason_code          text,
    previous_state       text,
    source               text        NOT NULL CHECK (source IN ('api', 'poll', 'ipn', 'recovery')),
    snapshot             jsonb       NOT NULL,
    PRIMARY KEY (event_id, recorded_at)
) PARTITION BY RANGE (recorded_at);

-- Rows outside every monthly partition still land somewhere; ensure_event_partitions() keeps the
-- monthly ones created ahead of time so this stays empty.
CREATE TABLE events_default PARTITION OF events DEFAULT;

CREATE INDEX events_object_idx ON events (merchant, kind, object_id, event_id);
CREATE INDEX events_event_id_idx ON events (event_id);

CREATE FUNCTION ensure_event_partitions(months_ahead integer) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    month_start date := date_trunc('month', now())::date;
    created integer := 0;
    name text;
BEGIN
    FOR i IN 0..months_ahead LOOP
        name := format('events_%s', to_char(month_start + make_interval(months => i), 'YYYY_MM'));
        IF to_regclass(name) IS NULL THEN
            EXECUTE format(
                'CREATE TABLE %I PARTITION OF events FOR VALUES FROM (%L) TO (%L)',
                name,
                month_start + make_interval(months => i),
                month_start + make_interval(months => i + 1)
            );
            created := created + 1;
        END IF;
    END LOOP;
    RETURN created;
END;
$$;

SELECT ensure_event_partitions(3);

CREATE FUNCTION events_are_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger events are append-only: % is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER events_no_update_or_delete
    BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_are_append_only();

CREATE TRIGGER events_no_truncate
    BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_are_append_only();

-- Idempotency records: one row per (merchant, operation, caller key). The stored response is
-- replayed for the same request; a pending row is re-driven with the same Amazon key.
CREATE TABLE operations (
    merchant               text        NOT NULL,
    operation              text        NOT NULL,
    idempotency_key        text        NOT NULL,
    request_hash           bytea       NOT NULL,
    amazon_idempotency_key text        NOT NULL,
    status                 text        NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed')),
    request                jsonb       NOT NULL,
    -- Amazon's answer ({status, requestId, body}); the gRPC response is rebuilt from it, so a
    -- replay is identical to the first answer
    response               jsonb,
    error                  jsonb,
    object_kind            text,
    object_id              text,
    attempts               integer     NOT NULL DEFAULT 0,
    created_at             timestamptz NOT NULL DEFAULT now(),
    updated_at             timestamptz NOT NULL DEFAULT now(),
    lease_owner            text,
    lease_expires_at       timestamptz,
    PRIMARY KEY (merchant, operation, idempotency_key)
);

CREATE INDEX operations_pending_idx ON operations (updated_at) WHERE status = 'pending';

-- Instant Payment Notifications, unique by Amazon's NotificationId so a redelivery is a no-op.
CREATE TABLE ipn_messages (
    notification_id      text        PRIMARY KEY,
    message_id           text        NOT NULL,
    merchant             text,
    object_type          text        NOT NULL,
    object_id            text        NOT NULL,
    charge_permission_id text,
    notification_type    text        NOT NULL,
    topic_arn            text,
    received_at          timestamptz NOT NULL DEFAULT now(),
    processed_at         timestamptz,
    envelope             jsonb       NOT NULL
);

CREATE INDEX ipn_unprocessed_idx ON ipn_messages (received_at) WHERE processed_at IS NULL;
