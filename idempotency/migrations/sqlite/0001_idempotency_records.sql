-- tower-idempotency's SqlStore on SQLite: one row per idempotency key.
-- SqlStore::migrate runs this (safe to repeat); to apply it with your own tool, keep the
-- column names and types. Times are milliseconds since the Unix epoch.
CREATE TABLE IF NOT EXISTS idempotency_records (
    -- SHA-256 of the caller's scope and the key (32 bytes); never the raw key.
    key_hash BLOB PRIMARY KEY,
    -- The scope's 64-bit id (the same bits as an unsigned value), to count or purge a caller's rows.
    scope INTEGER NOT NULL,
    -- SHA-256 of the request (32 bytes).
    fingerprint BLOB NOT NULL,
    -- The holder's fencing token (16 bytes).
    token BLOB NOT NULL,
    -- 0 in flight, 1 committed by the handler's own transaction, 2 completed.
    state INTEGER NOT NULL,
    -- The completed outcome (postcard; only ever extended compatibly).
    record BLOB,
    -- When the holder's lease ends.
    lease_until INTEGER NOT NULL,
    -- When the row stops counting (the lease for a claim, the TTL for a result).
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;
-- The sweep's index.
CREATE INDEX IF NOT EXISTS idempotency_records_expires ON idempotency_records (expires_at);
