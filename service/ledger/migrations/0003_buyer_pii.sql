-- Buyer PII (buyer, addresses, payment descriptors) lives here, AES-GCM encrypted, and snapshots in
-- objects, events and operations hold only references {"$pii": "<pii_id>"}. Erasing a buyer's data
-- clears these rows: the append-only history and the financial record stay untouched.
CREATE TABLE pii_values (
    pii_id               uuid        PRIMARY KEY,
    merchant             text        NOT NULL,
    kind                 text        NOT NULL,
    object_id            text        NOT NULL,
    charge_permission_id text,
    -- SHA-256 of Amazon's buyerId, so data can be erased by buyer without storing the id in clear
    buyer_hash           bytea,
    key_id               text,
    -- 12-byte nonce || ciphertext || 16-byte tag; NULL once erased
    ciphertext           bytea,
    created_at           timestamptz NOT NULL DEFAULT now(),
    erased_at            timestamptz
);

CREATE INDEX pii_charge_permission_idx ON pii_values (merchant, charge_permission_id);
CREATE INDEX pii_buyer_idx ON pii_values (merchant, buyer_hash) WHERE buyer_hash IS NOT NULL;
CREATE INDEX pii_object_idx ON pii_values (merchant, kind, object_id);
CREATE INDEX pii_retention_idx ON pii_values (created_at) WHERE erased_at IS NULL;
CREATE INDEX pii_key_idx ON pii_values (key_id) WHERE erased_at IS NULL;

ALTER TABLE objects ADD COLUMN buyer_data_erased_at timestamptz;
