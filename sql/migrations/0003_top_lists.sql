-- Top lists (top communities, top users, top entities) that stay fast over
-- long ranges and stay exact.
--
-- A top list over [from, to) is the sum of many per-bucket counts, ranked.
-- Summing every community's (or user's) count over 90 days is proportional
-- to the data; instead the queries (sql/queries/analytics/top_*.sql) use the
-- threshold rule of Fagin's algorithms: for every whole clean UTC day of the
-- range they read only the day's M + 1 largest counts (an index in count
-- order), take the first M of each day as candidates, and sum the
-- candidates' exact totals. Someone outside every day's first M has at most
-- the (M + 1)-th count of each day, so when the last of the top `limit`
-- candidates has more than the sum of those, no one else can be in the
-- list and the answer is exact. When it is not (flat data, where everyone
-- has about as much as everyone else), the API sums every count instead:
-- always exact, fast when activity is skewed, as it is on real platforms.
--
-- Day rows of users and entities, summed over every event type, written by
-- the compactor (rollups_compact_day.sql) with the day rows of
-- rollup_events; like those they answer only for days that are not dirty.

CREATE TABLE rollup_user_days (
    community_id UUID NOT NULL,
    day          TIMESTAMPTZ NOT NULL,
    user_id      UUID NOT NULL,
    events       BIGINT NOT NULL,
    -- A candidate's days, read from the index alone.
    PRIMARY KEY (community_id, user_id, day) INCLUDE (events)
);
-- A day's users, most active first: the candidates.
CREATE INDEX rollup_user_days_rank_idx ON rollup_user_days (community_id, day, events DESC) INCLUDE (user_id);
-- Compaction replaces a whole day.
CREATE INDEX rollup_user_days_day_idx ON rollup_user_days (day);

CREATE TABLE rollup_entity_days (
    community_id UUID NOT NULL,
    day          TIMESTAMPTZ NOT NULL,
    entity_type  TEXT NOT NULL,
    entity_id    TEXT NOT NULL,
    events       BIGINT NOT NULL,
    PRIMARY KEY (community_id, entity_type, entity_id, day) INCLUDE (events)
);
CREATE INDEX rollup_entity_days_rank_idx ON rollup_entity_days (community_id, day, events DESC) INCLUDE (entity_type, entity_id);
CREATE INDEX rollup_entity_days_day_idx ON rollup_entity_days (day);

-- No index on rollup_events names `events`: the consumer updates `events`
-- of its 15-minute rows in every batch, and such an index (even a partial
-- one on rows it never touches) makes every one of those updates non-HOT,
-- with new entries in every index (measured: bench/ingest 19,000 → 14,500
-- events/s). Top communities read each hour's and day's '*' rows through
-- rollup_events_grain_bucket_idx and rank them.

GRANT SELECT ON rollup_user_days, rollup_entity_days TO activity_api;
ALTER TABLE rollup_user_days ENABLE ROW LEVEL SECURITY;
ALTER TABLE rollup_entity_days ENABLE ROW LEVEL SECURITY;
CREATE POLICY api_read ON rollup_user_days FOR SELECT TO activity_api USING (
    activity_scope_all() OR community_id = ANY (activity_scope_communities())
);
CREATE POLICY api_read ON rollup_entity_days FOR SELECT TO activity_api USING (
    activity_scope_all() OR community_id = ANY (activity_scope_communities())
);

-- Hours, compacted on their own while their day goes on (today): the batch
-- that writes to a recent hour marks it, as it marks the day, and the compactor
-- sums each dirty hour that is over into its hour rows and unmarks it (and
-- unmarks a day's hours when it compacts the day). Queries read a dirty
-- day's clean hours from their hour rows (activity_tiles() below), so a
-- range over today reads hour rows for all but the current hour.
-- An hour's advisory lock is (HOUR_LOCK_NAMESPACE in
-- consumer/src/store/rollups.rs, activity_hour_lock(hour)): hours since 1970.
-- Only hours since the start of yesterday are marked and locked by writers
-- (so a batch of old events takes a lock per day, not per hour); the
-- compactor sums hours of the current day only, and queries trust hour marks
-- only for the current day (a dirty day that is over is read from its
-- 15-minute rows until the compactor sums it whole).
CREATE FUNCTION activity_hour_lock(hour TIMESTAMPTZ) RETURNS INTEGER
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS
$$ SELECT floor(extract(epoch FROM hour) / 3600)::integer $$;

CREATE TABLE rollup_dirty_hours (
    hour   TIMESTAMPTZ PRIMARY KEY,
    since  TIMESTAMPTZ NOT NULL DEFAULT now()
);
GRANT SELECT ON rollup_dirty_hours TO activity_api;
ALTER TABLE rollup_dirty_hours ENABLE ROW LEVEL SECURITY;
CREATE POLICY api_read ON rollup_dirty_hours FOR SELECT TO activity_api USING (true);
-- Today's hours were never marked (queries trust hour marks for today
-- only): mark those with rows.
INSERT INTO rollup_dirty_hours (hour)
SELECT DISTINCT date_bin('1 hour', bucket, TIMESTAMPTZ '2000-01-01 00:00:00+00')
FROM rollup_events
WHERE grain = 15 AND bucket >= activity_day(now())
ON CONFLICT DO NOTHING;

-- Quarter-day rows (grain 360: 00:00, 06:00, 12:00, 18:00 UTC), written
-- with the hour and day rows when a day is compacted: a day in a zone that
-- is not UTC covers parts of two UTC days, which are then read from at most
-- a few hour rows and three quarter-day rows instead of 24 hour rows (each
-- a HyperLogLog sketch of up to 10 kB to merge).
ALTER TABLE rollup_events DROP CONSTRAINT rollup_events_grain_check,
    ADD CONSTRAINT rollup_events_grain_check CHECK (grain IN (15, 60, 360, 1440));

-- How a query reads [lo, hi) (15-minute boundaries) from rollup_events: as
-- tiles, each a range of buckets of one grain, covering every instant of
-- [lo, hi) exactly once. A UTC day that is not dirty is read from its day
-- row when the range covers it whole, and otherwise from quarter-day rows
-- and hour rows for its whole hours. A dirty day's whole hours are read
-- from their hour rows, except dirty hours (the current one, or one with
-- events not compacted yet), read from their 15-minute rows; an hour that
-- is not dirty has current hour rows or no events at all. The ends of the
-- range are 15-minute rows. All in absolute time (date_bin, 24 hours),
-- whatever the session's TimeZone.
CREATE OR REPLACE FUNCTION activity_tiles(lo TIMESTAMPTZ, hi TIMESTAMPTZ)
RETURNS TABLE (grain SMALLINT, tile_from TIMESTAMPTZ, tile_to TIMESTAMPTZ)
-- PL/pgSQL, not SQL: a SQL function would be inlined and planned as a guess
-- of 1,000 tiles, which made the planner hash-join whole rollup tables
-- instead of reading each tile through the index. Call it with jit off
-- (the API's transactions are): the planner guesses 1,000 rows per
-- generate_series, enough to make it JIT-compile the query (300 ms) for the
-- few rows it reads. Not a SET clause here: with one, each call cost 0.3 ms
-- instead of 0.03 ms inside the API's transactions (measured: a 7-day hourly
-- series took 50 ms instead of 5).
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
    hourly AS (
        SELECT d, a, b, clean,
               date_bin('1 hour', a + interval '1 hour' - interval '1 microsecond',
                        TIMESTAMPTZ '2000-01-01 00:00:00+00') AS ha,
               date_bin('1 hour', b, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS hb,
               clean AND a = d AND b = d + interval '24 hours' AS whole
        FROM days
    ),
    shaped AS (
        SELECT *,
               date_bin('6 hours', ha + interval '6 hours' - interval '1 microsecond',
                        TIMESTAMPTZ '2000-01-01 00:00:00+00') AS qa,
               date_bin('6 hours', hb, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS qb,
               clean AND NOT whole AND ha < hb AS partial
        FROM hourly
    ),
    hours AS (
        SELECT s.d, h,
               s.d >= activity_day(now())
               AND NOT EXISTS (SELECT 1 FROM rollup_dirty_hours AS x WHERE x.hour = h) AS clean
        FROM shaped AS s
        CROSS JOIN LATERAL generate_series(s.ha, s.hb - interval '1 hour', interval '1 hour') AS h
        WHERE NOT s.clean
    ),
    -- Runs of consecutive hours alike: one tile each.
    runs AS (
        SELECT clean, min(h) AS f, max(h) + interval '1 hour' AS u
        FROM (SELECT d, h, clean,
                     h - interval '1 hour' * row_number() OVER (PARTITION BY d, clean ORDER BY h) AS run
              FROM hours) AS x
        GROUP BY d, clean, run
    )
    SELECT t.g::smallint, t.f, t.u
    FROM shaped AS s
    CROSS JOIN LATERAL (VALUES
        (1440, s.a, s.b, s.whole),
        (15, s.a, s.ha, NOT s.whole AND s.ha < s.hb),
        (15, s.hb, s.b, NOT s.whole AND s.ha < s.hb),
        (15, s.a, s.b, NOT s.whole AND s.ha >= s.hb),
        (60, s.ha, s.qa, s.partial AND s.qa < s.qb),
        (360, s.qa, s.qb, s.partial AND s.qa < s.qb),
        (60, s.qb, s.hb, s.partial AND s.qa < s.qb),
        (60, s.ha, s.hb, s.partial AND s.qa >= s.qb)
    ) AS t (g, f, u, used)
    WHERE t.used AND t.f < t.u
    UNION ALL
    SELECT CASE WHEN r.clean THEN 60 ELSE 15 END::smallint, r.f, r.u
    FROM runs AS r;
END
$$;

-- Days compacted before these tables existed have no rows in them yet: mark
-- them dirty, so queries read their 15-minute rows until the compactor has
-- written their day rows.
INSERT INTO rollup_dirty_days (day)
SELECT DISTINCT activity_day(bucket) FROM rollup_events WHERE grain = 1440
ON CONFLICT DO NOTHING;
