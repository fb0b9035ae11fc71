-- Amazon's x-amz-pay-request-id of our own call that observed each change (the id Amazon support
-- asks for). NULL for events no call of ours caused (IPN bodies, older rows). Nullable and
-- without a default: adding it rewrites no partition and takes no long lock.
ALTER TABLE events ADD COLUMN amazon_request_id text;
