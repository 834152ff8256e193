-- Rollups the analytics API reads, maintained in the same transaction that
-- stores the events (sql/queries/insert_activities.sql), and row-level
-- security for the API's role.
--
-- Buckets are 15 minutes of UTC time. Every time zone in use today is offset
-- from UTC by a multiple of 15 minutes (Asia/Kolkata +05:30, Asia/Kathmandu
-- +05:45), so any hour, day, week or month in any zone is a whole number of
-- buckets: time series in any zone are exact sums of rollup rows.
--
-- Events without a community are counted under the nil UUID (NO_COMMUNITY in
-- the API), since a primary key column cannot be NULL.
--
-- Unique users are HyperLogLog sketches (the hll extension, Debian's
-- postgresql-15-hll; also on RDS, Cloud SQL and Azure). An exact
-- COUNT(DISTINCT user_id) over a long range costs about as much as over the
-- raw rows when users are many and each is active rarely; a range's sketch is
-- the union of its buckets' sketches. log2m = 14: standard error 0.81%, and
-- exact below about 1,000 users (a small sketch stores the hashes themselves).
CREATE EXTENSION IF NOT EXISTS hll;

-- The community id of the rows for every community together.
CREATE FUNCTION activity_all_communities() RETURNS UUID
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS
$$ SELECT 'ffffffff-ffff-ffff-ffff-ffffffffffff'::uuid $$;

-- Events and unique users per community (and for every community together:
-- activity_all_communities()) per bucket per event type, so that no answer
-- sums across communities at query time. users is NULL when no event of the
-- row had a user. The key leads with the community, the grain and the
-- bucket, so one community's range is one contiguous index range (a query
-- for one type filters in the index).
--
-- grain is the bucket's width in minutes. The consumer writes 15-minute rows
-- only, one per event type. Once a UTC day is over, the compactor
-- (consumer/src/store/rollups.rs) sums its 15-minute rows into hour rows
-- (grain 60) and one day row (grain 1440), per type and for every type
-- together (event_type '*'), so a long range reads a few rows per day instead
-- of 96 per type; see activity_tiles() for how a query chooses. A query for
-- every type reads a 15-minute tile's rows of all types, a longer tile's '*'
-- rows.
CREATE TABLE rollup_events (
    community_id UUID NOT NULL,
    event_type   TEXT NOT NULL,
    grain        SMALLINT NOT NULL DEFAULT 15 CHECK (grain IN (15, 60, 1440)),
    bucket       TIMESTAMPTZ NOT NULL,
    events       BIGINT NOT NULL,
    users        hll,
    PRIMARY KEY (community_id, grain, bucket, event_type)
);
-- Top communities, compaction and rebuilds read a range of every community.
CREATE INDEX rollup_events_grain_bucket_idx ON rollup_events (grain, bucket, event_type);

-- UTC days whose hour and day rows are missing or out of date: a day is
-- marked when the consumer stores an event in it (ON CONFLICT DO NOTHING,
-- so an existing mark costs no lock) and unmarked when the compactor has
-- summed it. Writers of a day hold a shared advisory lock on it
-- (activity_day_lock) for their transaction and the compactor an exclusive
-- one, so a day is never unmarked while an uncommitted write to it exists
-- (the compactor reads the 15-minute rows after it has the lock).
CREATE TABLE rollup_dirty_days (
    day    TIMESTAMPTZ PRIMARY KEY,
    since  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- A UTC day's advisory lock is (DAY_LOCK_NAMESPACE in consumer/src/store/rollups.rs,
-- activity_day_lock(day)): days since 1970.
CREATE FUNCTION activity_day_lock(day TIMESTAMPTZ) RETURNS INTEGER
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS
$$ SELECT floor(extract(epoch FROM day) / 86400)::integer $$;

-- One row per user active in a community in a bucket, per event type: top users.
CREATE TABLE rollup_users (
    community_id UUID NOT NULL,
    bucket       TIMESTAMPTZ NOT NULL,
    user_id      UUID NOT NULL,
    event_type   TEXT NOT NULL,
    events       BIGINT NOT NULL,
    PRIMARY KEY (community_id, bucket, user_id, event_type)
);
CREATE INDEX rollup_users_bucket_idx ON rollup_users (bucket);

-- Events per entity (repository, hackathon, ...) per community per bucket: top entities.
CREATE TABLE rollup_entities (
    community_id UUID NOT NULL,
    bucket       TIMESTAMPTZ NOT NULL,
    entity_type  TEXT NOT NULL,
    entity_id    TEXT NOT NULL,
    events       BIGINT NOT NULL,
    PRIMARY KEY (community_id, bucket, entity_type, entity_id)
);

-- What the consumer has stored, per topic partition: the API's freshness.
CREATE TABLE consumer_progress (
    topic       TEXT NOT NULL,
    partition   INTEGER NOT NULL,
    next_offset BIGINT NOT NULL,
    stored_at   TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (topic, partition)
);

CREATE FUNCTION activity_bucket(at TIMESTAMPTZ) RETURNS TIMESTAMPTZ
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS
$$ SELECT date_bin('15 minutes', at, TIMESTAMPTZ '2000-01-01 00:00:00+00') $$;

CREATE FUNCTION activity_day(at TIMESTAMPTZ) RETURNS TIMESTAMPTZ
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS
$$ SELECT date_bin('1 day', at, TIMESTAMPTZ '2000-01-01 00:00:00+00') $$;

-- How a query reads [lo, hi) (15-minute boundaries) from rollup_events: as
-- tiles, each a range of buckets of one grain, covering every instant of
-- [lo, hi) exactly once. A UTC day that is not dirty is read from its day
-- row when the range covers it whole, and otherwise from hour rows for its
-- whole hours and 15-minute rows at the ends; a dirty day (today, or one
-- with late events not compacted yet) from its 15-minute rows. All in
-- absolute time (date_bin, 24 hours), whatever the session's TimeZone.
CREATE FUNCTION activity_tiles(lo TIMESTAMPTZ, hi TIMESTAMPTZ)
RETURNS TABLE (grain SMALLINT, tile_from TIMESTAMPTZ, tile_to TIMESTAMPTZ)
-- PL/pgSQL, not SQL: a SQL function would be inlined and planned as a guess
-- of 1,000 tiles, which made the planner hash-join whole rollup tables
-- instead of reading each tile through the index.
LANGUAGE plpgsql STABLE PARALLEL SAFE ROWS 8 AS $$
BEGIN
    RETURN QUERY
    WITH days AS (
        SELECT d, greatest(d, lo) AS a, least(d + interval '24 hours', hi) AS b,
               NOT EXISTS (SELECT 1 FROM rollup_dirty_days AS x WHERE x.day = d) AS clean
        FROM generate_series(activity_day(lo), hi - interval '1 microsecond',
                             interval '24 hours') AS d
        WHERE lo < hi
    ),
    shaped AS (
        SELECT a, b,
               date_bin('1 hour', a + interval '1 hour' - interval '1 microsecond',
                        TIMESTAMPTZ '2000-01-01 00:00:00+00') AS ha,
               date_bin('1 hour', b, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS hb,
               clean AND a = d AND b = d + interval '24 hours' AS whole,
               clean AND NOT (a = d AND b = d + interval '24 hours') AS partial
        FROM days
    )
    SELECT t.g::smallint, t.f, t.u
    FROM shaped AS s
    CROSS JOIN LATERAL (VALUES
        (1440, s.a, s.b, s.whole),
        (15, s.a, s.ha, s.partial AND s.ha < s.hb),
        (60, s.ha, s.hb, s.partial AND s.ha < s.hb),
        (15, s.hb, s.b, s.partial AND s.ha < s.hb),
        (15, s.a, s.b, NOT s.whole AND NOT (s.partial AND s.ha < s.hb))
    ) AS t (g, f, u, used)
    WHERE t.used AND t.f < t.u;
END
$$;

-- Whether a rollup_events row of a tile of `grain` answers for `wanted`: the
-- one place that knows which rows answer for which event types. per_type:
-- one set of rows per type (wanted: only that one). Otherwise every type
-- together (wanted NULL: a 15-minute tile's rows of all types, a longer
-- tile's '*' rows) or the type wanted. Plain SQL, so it is inlined into the
-- queries' index conditions.
CREATE FUNCTION activity_type_rows(grain SMALLINT, event_type TEXT, wanted TEXT, per_type BOOLEAN)
RETURNS BOOLEAN
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS
$$ SELECT CASE WHEN per_type THEN event_type <> '*' AND (wanted IS NULL OR event_type = wanted)
               WHEN wanted IS NULL THEN grain = 15 OR event_type = '*'
               ELSE event_type = wanted END $$;

-- The API's role. It cannot log in: the API connects with DATABASE_READ_URL
-- and switches to it (SET LOCAL ROLE) in every transaction, after setting the
-- caller's scope:
--   activity.scope_all          'on' for an admin
--   activity.scope_communities  comma-separated community UUIDs
--   activity.scope_user         the user whose own rows may be read
-- Roles are cluster-wide, so several databases on one server share it.
DO $$
BEGIN
    CREATE ROLE activity_api NOLOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END
$$;

-- Only the parents: partitions are created later and granted nothing, so the
-- role cannot read a partition by name (where no policy would apply).
GRANT USAGE ON SCHEMA public TO activity_api;
GRANT SELECT ON activities, users, communities, rollup_events, rollup_dirty_days,
    rollup_users, rollup_entities, consumer_progress TO activity_api;

CREATE FUNCTION activity_scope_all() RETURNS BOOLEAN
LANGUAGE sql STABLE AS
$$ SELECT coalesce(current_setting('activity.scope_all', true), '') = 'on' $$;

CREATE FUNCTION activity_scope_communities() RETURNS UUID[]
LANGUAGE sql STABLE AS
$$ SELECT coalesce(string_to_array(nullif(current_setting('activity.scope_communities', true), ''), ',')::uuid[], '{}') $$;

CREATE FUNCTION activity_scope_user() RETURNS UUID
LANGUAGE sql STABLE AS
$$ SELECT nullif(current_setting('activity.scope_user', true), '')::uuid $$;

ALTER TABLE activities ENABLE ROW LEVEL SECURITY;
ALTER TABLE rollup_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE rollup_users ENABLE ROW LEVEL SECURITY;
ALTER TABLE rollup_entities ENABLE ROW LEVEL SECURITY;
ALTER TABLE communities ENABLE ROW LEVEL SECURITY;
ALTER TABLE users ENABLE ROW LEVEL SECURITY;

-- The table owner (the consumer, migrations) is not subject to these.
CREATE POLICY api_read ON activities FOR SELECT TO activity_api USING (
    activity_scope_all()
    OR community_id = ANY (activity_scope_communities())
    OR user_id = activity_scope_user()
);
-- The rows for every community together are for admins only.
CREATE POLICY api_read ON rollup_events FOR SELECT TO activity_api USING (
    activity_scope_all() OR (community_id = ANY (activity_scope_communities())
                             AND community_id <> activity_all_communities())
);
CREATE POLICY api_read ON rollup_users FOR SELECT TO activity_api USING (
    activity_scope_all() OR community_id = ANY (activity_scope_communities())
);
CREATE POLICY api_read ON rollup_entities FOR SELECT TO activity_api USING (
    activity_scope_all() OR community_id = ANY (activity_scope_communities())
);
CREATE POLICY api_read ON communities FOR SELECT TO activity_api USING (
    activity_scope_all() OR id = ANY (activity_scope_communities())
);
-- A user's row (email) is visible to an admin and to the user alone.
CREATE POLICY api_read ON users FOR SELECT TO activity_api USING (
    activity_scope_all() OR id = activity_scope_user()
);
-- Freshness and compaction state are not tenant data.
ALTER TABLE consumer_progress ENABLE ROW LEVEL SECURITY;
CREATE POLICY api_read ON consumer_progress FOR SELECT TO activity_api USING (true);
ALTER TABLE rollup_dirty_days ENABLE ROW LEVEL SECURITY;
CREATE POLICY api_read ON rollup_dirty_days FOR SELECT TO activity_api USING (true);
