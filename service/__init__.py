"""Amazon Pay gRPC payment service: signs Amazon Pay API v2 calls and keeps a Postgres ledger."""
