-- After the charge: what Amazon actually paid out, and what buyers disputed.
--
-- * Disputes become a ledger object kind (objects + events + history, like charges).
-- * Settlement reports (one per settlement period), their lines with the outcome of matching each
--   against the ledger, the ledger captures and refunds Amazon never settled (`settlement_misses`),
--   disbursements, each run of the reconciliation, and a per-merchant cursor of what was fetched.
-- * Reconciliation findings are ledger events: kind `settlement_line`, source `settlement`.
--
-- This is the financial record: kept for years, never trimmed. The serving role may read, add and
-- update these tables but never DELETE from them (`KEPT_TABLES` in service/ledger/_migrate.py).

-- Wider checks, NOT VALID: every existing row satisfies the narrower one, so nothing is scanned
-- (events is partitioned and large) and the lock is held for an instant.
ALTER TABLE objects DROP CONSTRAINT objects_kind_check;
ALTER TABLE objects ADD CONSTRAINT objects_kind_check
    CHECK (kind IN ('checkout_session', 'charge_permission', 'charge', 'refund', 'dispute'))
    NOT VALID;

ALTER TABLE events DROP CONSTRAINT events_source_check;
ALTER TABLE events ADD CONSTRAINT events_source_check
    CHECK (source IN ('api', 'poll', 'ipn', 'recovery', 'settlement')) NOT VALID;

-- ListDisputes by state and the matching of chargeback lines by charge: disputes are few, so the
-- partial index is small, but building it reads `objects` once (run the migration off-peak).
CREATE INDEX objects_disputes_idx ON objects (merchant, created_at DESC, object_id)
    WHERE kind = 'dispute';
CREATE INDEX objects_dispute_charge_idx ON objects (merchant, charge_id) WHERE kind = 'dispute';

-- One row per settlement report Amazon listed (Get Reports, report type
-- _GET_FLAT_FILE_OFFAMAZONPAYMENTS[_SANDBOX]_SETTLEMENT_DATA_). A replica claims a due report
-- (`lease_owner`, `lease_expires_at`, SKIP LOCKED), streams its document and matches every line.
CREATE TABLE settlement_reports (
    merchant           text        NOT NULL,
    report_id          text        NOT NULL,
    report_type        text        NOT NULL,
    report_document_id text,
    amazon_created_at  timestamptz,
    -- from the document: the header's period and seller, the body's SettlementId
    settlement_id      text,
    seller_id          text,
    settlement_start   timestamptz,
    settlement_end     timestamptz,
    status             text        NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'reconciling', 'reconciled', 'failed')),
    line_count         integer     NOT NULL DEFAULT 0,
    attempts           integer     NOT NULL DEFAULT 0,
    last_error         text,
    due_at             timestamptz NOT NULL DEFAULT now(),
    lease_owner        text,
    lease_expires_at   timestamptz,
    snapshot           jsonb       NOT NULL,
    first_seen_at      timestamptz NOT NULL DEFAULT now(),
    reconciled_at      timestamptz,
    updated_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (merchant, report_id)
);
CREATE INDEX settlement_reports_due_idx ON settlement_reports (due_at)
    WHERE status IN ('pending', 'reconciling');
CREATE INDEX settlement_reports_list_idx
    ON settlement_reports (merchant, settlement_end DESC NULLS FIRST, report_id DESC);
CREATE INDEX settlement_reports_settlement_idx ON settlement_reports (merchant, settlement_id);

-- Every line of every settlement, once: (merchant, settlement, line) is the key, so a second run,
-- or three replicas at once, record nothing twice. Amounts keep Amazon's sign and scale.
CREATE TABLE settlement_lines (
    merchant              text        NOT NULL,
    settlement_id         text        NOT NULL,
    line_number           integer     NOT NULL,
    report_id             text        NOT NULL,
    posted_at             timestamptz NOT NULL,
    transaction_type      text        NOT NULL,
    amazon_transaction_id text,
    seller_reference_id   text,
    amount                numeric     NOT NULL,
    fee                   numeric     NOT NULL,
    net                   numeric     NOT NULL,
    currency_code         text        NOT NULL,
    outcome               text        NOT NULL CHECK (outcome IN
        ('matched', 'missing_in_ledger', 'amount_mismatch', 'currency_mismatch')),
    -- which rule matched it: capture, refund, chargeback, fee, adjustment, other
    match_rule            text        NOT NULL,
    ledger_kind           text,
    ledger_object_id      text,
    charge_permission_id  text,
    expected_amount       numeric,
    expected_currency     text,
    raw                   jsonb       NOT NULL,
    recorded_at           timestamptz NOT NULL DEFAULT now(),
    outcome_changed_at    timestamptz,
    PRIMARY KEY (merchant, settlement_id, line_number)
);
CREATE INDEX settlement_lines_object_idx ON settlement_lines (merchant, ledger_kind, ledger_object_id)
    WHERE ledger_object_id IS NOT NULL;
CREATE INDEX settlement_lines_unmatched_idx
    ON settlement_lines (merchant, posted_at DESC, settlement_id DESC, line_number DESC)
    WHERE outcome <> 'matched';

-- Ledger captures and refunds no settlement line names although settlements already cover the
-- settlement window after them (outcome missing_at_amazon). Settled later: `settled_in` says where.
CREATE TABLE settlement_misses (
    merchant             text        NOT NULL,
    ledger_kind          text        NOT NULL,
    ledger_object_id     text        NOT NULL,
    charge_permission_id text,
    transaction_type     text        NOT NULL,
    expected_amount      numeric,
    expected_currency    text,
    occurred_at          timestamptz NOT NULL,
    settle_by            timestamptz NOT NULL,
    detected_in          text        NOT NULL,
    detected_at          timestamptz NOT NULL DEFAULT now(),
    settled_in           text,
    settled_line         integer,
    resolved_at          timestamptz,
    PRIMARY KEY (merchant, ledger_kind, ledger_object_id)
);
CREATE INDEX settlement_misses_open_idx ON settlement_misses (merchant, occurred_at DESC)
    WHERE resolved_at IS NULL;

-- Payouts to the merchant's bank (Get Disbursements), one per settlement.
CREATE TABLE disbursements (
    merchant         text        NOT NULL,
    disbursement_id  text        NOT NULL,  -- amazonDisbursementReferenceId (on the bank statement)
    settlement_id    text,
    seller_id        text,
    amount           numeric     NOT NULL,
    currency_code    text        NOT NULL,
    transaction_time timestamptz,
    snapshot         jsonb       NOT NULL,
    first_seen_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (merchant, disbursement_id)
);
CREATE INDEX disbursements_list_idx
    ON disbursements (merchant, transaction_time DESC NULLS LAST, disbursement_id DESC);
CREATE INDEX disbursements_settlement_idx ON disbursements (merchant, settlement_id);

-- What was fetched from Amazon per merchant, and which replica is fetching (a lease).
CREATE TABLE settlement_cursors (
    merchant               text        PRIMARY KEY,
    reports_created_since  timestamptz,
    disbursements_since    timestamptz,
    misses_checked_through timestamptz,
    lease_owner            text,
    lease_expires_at       timestamptz,
    fetched_at             timestamptz,
    last_error             text,
    updated_at             timestamptz NOT NULL DEFAULT now()
);

-- One row per reconciliation of a report: who ran it, why, and what it changed (a second run of
-- the same report records no line: `lines_recorded` 0).
CREATE TABLE settlement_runs (
    run_id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    merchant         text        NOT NULL,
    report_id        text        NOT NULL,
    settlement_id    text,
    trigger          text        NOT NULL CHECK (trigger IN ('schedule', 'request')),
    owner            text        NOT NULL,
    started_at       timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz,
    lines_seen       integer     NOT NULL DEFAULT 0,
    lines_recorded   integer     NOT NULL DEFAULT 0,
    outcomes_changed integer     NOT NULL DEFAULT 0,
    error            text
);
CREATE INDEX settlement_runs_report_idx ON settlement_runs (merchant, report_id, run_id);
