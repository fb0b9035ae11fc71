-- Reads the reconciler owes: the charge permission and charge a completed checkout session named
-- while the ledger lacks them (written with the session, so a crash right after Complete cannot
-- lose them), and, through `objects.needs_refresh`, final objects another outcome changed. Each
-- failed read backs off here (`due_at`, `attempts`), so an object Amazon no longer has cannot
-- starve the others, and is given up after a bounded number of attempts. Replaces a scan of every
-- completed checkout session on every reconciler pass.
CREATE TABLE owed_reads (
    merchant   text        NOT NULL,
    kind       text        NOT NULL CHECK (kind IN ('checkout_session', 'charge_permission', 'charge', 'refund')),
    object_id  text        NOT NULL,
    attempts   integer     NOT NULL DEFAULT 0,
    due_at     timestamptz NOT NULL DEFAULT now(),
    last_error text,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (merchant, kind, object_id)
);
CREATE INDEX owed_reads_due_idx ON owed_reads (due_at);

INSERT INTO owed_reads (merchant, kind, object_id)
SELECT DISTINCT s.merchant, r.kind, r.object_id
FROM objects s
CROSS JOIN LATERAL (VALUES
    ('charge_permission', s.snapshot->>'chargePermissionId'),
    ('charge', s.snapshot->>'chargeId')) AS r(kind, object_id)
WHERE s.kind = 'checkout_session' AND s.state = 'Completed'
  AND r.object_id IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM objects o WHERE o.merchant = s.merchant
                  AND o.kind = r.kind AND o.object_id = r.object_id)
ON CONFLICT DO NOTHING;
