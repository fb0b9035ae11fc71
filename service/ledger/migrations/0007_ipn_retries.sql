-- IPN follow-ups that fail (Amazon answers 404 for an object it never had) are retried like owed
-- reads: claimed with SKIP LOCKED so replicas share the work, backed off per message (`due_at`,
-- `attempts`), and given up after a bounded number of attempts (`given_up_at`), so junk cannot
-- starve a genuine notification. `amazon_merchant_id` is the notification's MerchantID: it routes
-- a notification whose object the ledger does not know yet to the merchant account it came for.
ALTER TABLE ipn_messages
    ADD COLUMN amazon_merchant_id text,
    ADD COLUMN attempts           integer     NOT NULL DEFAULT 0,
    ADD COLUMN due_at             timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN last_error         text,
    ADD COLUMN given_up_at        timestamptz;

UPDATE ipn_messages SET due_at = received_at WHERE processed_at IS NULL;

DROP INDEX ipn_unprocessed_idx;
CREATE INDEX ipn_due_idx ON ipn_messages (due_at) WHERE processed_at IS NULL AND given_up_at IS NULL;
CREATE INDEX ipn_amazon_merchant_idx ON ipn_messages (amazon_merchant_id, merchant)
    WHERE processed_at IS NOT NULL;
