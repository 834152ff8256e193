-- Unique users as HyperLogLog sketches (the hll extension, Debian's
-- postgresql-15-hll; available on RDS, Cloud SQL and Azure as well).
--
-- Exact COUNT(DISTINCT user_id) over rollup_users costs about as much as over
-- the raw rows when users are many and each is active rarely; a sketch per
-- bucket makes a range's unique users a union of a few thousand small
-- sketches. Sketches use log2m = 14 (standard error 0.81%); below ~1,000
-- users a sketch stores the hashes themselves and is exact.
--
-- One row per community (or ALL, every community together) per 15-minute
-- bucket per event type (or '*', every type together), so the API never
-- unions per-community sketches to answer for everything.
CREATE EXTENSION IF NOT EXISTS hll;

CREATE TABLE sketch_users (
    community_id UUID NOT NULL,
    bucket       TIMESTAMPTZ NOT NULL,
    event_type   TEXT NOT NULL,
    users        hll NOT NULL,
    PRIMARY KEY (community_id, event_type, bucket)
);

-- The community id of the "every community" rows.
CREATE FUNCTION activity_all_communities() RETURNS UUID
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS
$$ SELECT 'ffffffff-ffff-ffff-ffff-ffffffffffff'::uuid $$;

GRANT SELECT ON sketch_users TO activity_api;
ALTER TABLE sketch_users ENABLE ROW LEVEL SECURITY;
-- The "every community" rows are for admins only.
CREATE POLICY api_read ON sketch_users FOR SELECT TO activity_api USING (
    activity_scope_all() OR community_id = ANY (activity_scope_communities())
);
