-- Write keys of the HTTP collector (`activity keys`). Only a SHA-256 of each
-- key is kept: the key itself is shown once, when it is created.
CREATE TABLE write_keys (
    id                  UUID PRIMARY KEY,
    name                TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    key_hash            BYTEA NOT NULL UNIQUE CHECK (length(key_hash) = 32),
    -- The first characters of the key, to recognise it in `keys list`.
    key_prefix          TEXT NOT NULL,
    -- NULL: every community; otherwise the only communities it may write.
    communities         UUID[],
    -- NULL: the collector's defaults.
    events_per_second   INTEGER CHECK (events_per_second > 0),
    requests_per_second INTEGER CHECK (requests_per_second > 0),
    created_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    revoked_at          TIMESTAMPTZ
);
