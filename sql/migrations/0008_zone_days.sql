-- Days in the time zones dashboards use, read as two rows each.
--
-- A day in a zone that is not UTC covers parts of two UTC days. Read from
-- the rows of 0002 it is hour, quarter-day and 15-minute rows of both, each
-- a HyperLogLog sketch to merge: a 90-day daily series cost 9 sketches a day
-- in America/New_York and 48 in Asia/Kolkata (15-minute rows are per event
-- type), 58 and 116 ms at 10M events, against 18 ms in UTC.
--
-- So the compactor also cuts each UTC day at the instants where a day
-- begins in one of the zones listed in rollup_zones (its cuts: minutes after
-- 00:00 UTC, 05:00 = 300 for New York in winter, 18:30 = 1110 for Kolkata),
-- and writes, per community and event type and for every type together
-- ('*'), a head row for the part before each cut and a tail row for the part
-- after it. A local day is then the tail of one UTC day and the head of the
-- next, 25 or 23 hours long across a DST change as well: two rows, whatever
-- the zone's offset, as a UTC day is one. Heads and tails are written and
-- replaced with the day's other compacted rows (rollups_compact_day.sql),
-- so like those they answer only while the day is not dirty; which cuts a
-- day has is in rollup_day_cuts (a zone added later cuts only the days
-- compacted after it: `activity rollups rebuild` cuts the older ones).
--
-- A head is a rollup_events row of grain c (its width in minutes) at the
-- day's 00:00; a tail one of grain -(1440 - c) at the cut: negative, so a
-- tail is never read as a head of the same width (the rows of one grain of
-- a day must not overlap, since queries read a tile as a range of buckets of
-- one grain). A head at 01:00 or 06:00 is the hour or quarter-day row
-- already there, and is not written twice. Cuts before 01:00 and after
-- 23:00 are not made (no zone in use today has one).
--
-- Quarter-hours of every type together, for the same reason: an hour in a
-- zone whose offset is not whole hours (Kolkata, Kathmandu) is quarter-hour
-- rows, one per event type, so a 7-day hourly series in Asia/Kolkata merged
-- up to 40 sketches an hour (130 ms at 10M events). The compactor also
-- writes a compacted day's quarter-hours of every type together ('*') as
-- rows of grain -15 (not 15: the consumer's rows of grain 15 stay one per
-- type, and a dirty day's, read per type, never meet a stale '*' row);
-- queries for every type read those for the quarter-hours of clean days.
--
-- Days compacted before this migration have neither, so they are marked
-- dirty here: the compactor compacts them again (from their 15-minute rows,
-- which outlive archived raw rows), and until then queries read them the
-- way they did.
INSERT INTO rollup_dirty_days (day)
SELECT DISTINCT bucket FROM rollup_events WHERE grain = 1440
ON CONFLICT DO NOTHING;

CREATE TABLE rollup_zones (
    -- An unknown zone fails the check ("time zone … not recognized").
    zone TEXT PRIMARY KEY CHECK (now() AT TIME ZONE zone IS NOT NULL)
);
-- A deployment lists the zones its dashboards use (each cut costs two rows
-- per community and event type per day, and their compaction).
INSERT INTO rollup_zones (zone) VALUES
    ('America/Los_Angeles'), ('America/New_York'), ('Europe/London'),
    ('Europe/Berlin'), ('Asia/Kolkata'), ('Australia/Sydney');

CREATE TABLE rollup_day_cuts (
    day  TIMESTAMPTZ PRIMARY KEY,
    cuts SMALLINT[] NOT NULL
);
GRANT SELECT ON rollup_day_cuts TO activity_api;
ALTER TABLE rollup_day_cuts ENABLE ROW LEVEL SECURITY;
-- Compaction state, not tenant data.
CREATE POLICY api_read ON rollup_day_cuts FOR SELECT TO activity_api USING (true);

ALTER TABLE rollup_events DROP CONSTRAINT rollup_events_grain_check,
    ADD CONSTRAINT rollup_events_grain_check
    CHECK (grain IN (-15, 15, 360, 1440) OR (grain BETWEEN -1380 AND 1380 AND grain % 15 = 0 AND abs(grain) >= 60));

-- Every grain the compactor writes (all but 15): deleting a day's
-- compacted rows as `grain = ANY (activity_compacted_grains())` reads each
-- grain's range of the day through rollup_events_grain_bucket_idx, where
-- `grain <> 15` would read the whole index.
CREATE FUNCTION activity_compacted_grains() RETURNS SMALLINT[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS
$$ SELECT array_agg(g::smallint ORDER BY g) FROM generate_series(-1380, 1440, 15) AS g
   WHERE g IN (-15, 360, 1440) OR (g BETWEEN -1380 AND 1380 AND abs(g) >= 60) $$;

-- The cuts of the UTC day `day` for `zones`: the minutes after its 00:00 at
-- which a day begins in one of them, between 01:00 and 23:00. (A local
-- midnight in the day is the start of the local day of one of these five
-- instants: midnights are at least 23 hours apart.)
CREATE FUNCTION activity_cuts(day TIMESTAMPTZ, zones TEXT[]) RETURNS SMALLINT[]
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT coalesce(array_agg(DISTINCT x.m::smallint ORDER BY x.m::smallint), '{}')
    FROM unnest(zones) AS z
    CROSS JOIN generate_series(0, 4) AS k
    CROSS JOIN LATERAL (
        SELECT extract(epoch FROM date_trunc('day', least(day + k * interval '6 hours',
                                                          day + interval '24 hours' - interval '1 microsecond'), z)
                                  - day) / 60 AS m
    ) AS x
    WHERE x.m BETWEEN 60 AND 1380 AND x.m % 15 = 0
$$;

-- How a query reads [lo, hi) (15-minute boundaries) from rollup_events: as
-- tiles, each a range of buckets of one grain, covering every instant of
-- [lo, hi) exactly once. A UTC day that is not dirty is read from its day
-- row when the range covers it whole; with `pieces`, from its head or tail
-- row when the range covers it from its start to one of its cuts or from a
-- cut to its end (a query that ranks rows of a tile, top_communities.sql,
-- has no ranks of heads and tails and does not ask for them); and
-- otherwise from quarter-day rows and hour rows for its whole hours, and
-- its quarter-hour rows of every type together (grain -15) at the ends
-- when the query reads `every_type` together (otherwise grain 15). A
-- dirty day's whole hours are read from their hour rows, except dirty hours
-- (the current one, or one with events not compacted yet), read from their
-- 15-minute rows; an hour that is not dirty has current hour rows or no
-- events at all. The ends of the range are 15-minute rows. All in absolute
-- time (date_bin, 24 hours), whatever the session's TimeZone.
DROP FUNCTION activity_tiles(TIMESTAMPTZ, TIMESTAMPTZ);
CREATE FUNCTION activity_tiles(lo TIMESTAMPTZ, hi TIMESTAMPTZ, pieces BOOLEAN DEFAULT false,
                               every_type BOOLEAN DEFAULT false)
RETURNS TABLE (grain SMALLINT, tile_from TIMESTAMPTZ, tile_to TIMESTAMPTZ)
-- SQL, STRICT: PostgreSQL inlines a plain SQL function into the calling
-- query, where it was planned as a guess of 1,000 tiles (the planner then
-- hash-joined whole rollup tables instead of reading each tile through the
-- index), but never a STRICT one. Not inlined, its statement is planned once
-- per calling query, without the arguments' values, and that plan serves
-- every call of the query (a series calls it once per interval). It was
-- PL/pgSQL, whose cached plan each backend chose on its own history: after
-- five calls, a generic plan if it looked no dearer than the custom ones so
-- far, otherwise a custom plan for every call, planned anew (about 1 ms
-- each: a 90-day series in a backend that had chosen custom plans took 90 ms
-- more, so the same request was fast or slow by the connection it got).
-- Call it with jit off (the API's transactions are): the planner guesses
-- 1,000 rows per generate_series, enough to make it JIT-compile the query
-- (300 ms) for the few rows it reads; not a SET clause here: with one, each
-- call cost 0.3 ms instead of 0.03 ms inside the API's transactions.
LANGUAGE sql STABLE STRICT PARALLEL SAFE ROWS 8 AS $$
    -- Materialized: each day's marks are looked up once, not once per use.
    WITH days AS MATERIALIZED (
        SELECT d, greatest(d, lo) AS a, least(d + interval '24 hours', hi) AS b,
               NOT EXISTS (SELECT 1 FROM rollup_dirty_days AS x WHERE x.day = d) AS clean,
               CASE WHEN pieces THEN (SELECT x.cuts FROM rollup_day_cuts AS x WHERE x.day = d) END AS cuts
        FROM generate_series(activity_day(lo), hi - interval '1 microsecond',
                             interval '24 hours') AS d
        WHERE lo < hi
    ),
    cut AS (
        SELECT *,
               clean AND a = d AND b = d + interval '24 hours' AS whole,
               clean AND a = d AND b < d + interval '24 hours'
                     AND (extract(epoch FROM b - d) / 60)::smallint = ANY (cuts) AS head,
               clean AND a > d AND b = d + interval '24 hours'
                     AND (extract(epoch FROM a - d) / 60)::smallint = ANY (cuts) AS tail
        FROM days
    ),
    hourly AS (
        SELECT d, a, b, clean, whole, head, tail,
               whole OR coalesce(head, false) OR coalesce(tail, false) AS single,
               date_bin('1 hour', a + interval '1 hour' - interval '1 microsecond',
                        TIMESTAMPTZ '2000-01-01 00:00:00+00') AS ha,
               date_bin('1 hour', b, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS hb
        FROM cut
    ),
    shaped AS (
        SELECT *,
               date_bin('6 hours', ha + interval '6 hours' - interval '1 microsecond',
                        TIMESTAMPTZ '2000-01-01 00:00:00+00') AS qa,
               date_bin('6 hours', hb, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS qb,
               clean AND NOT single AND ha < hb AS partial,
               CASE WHEN clean AND every_type THEN -15 ELSE 15 END AS quarter
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
        ((extract(epoch FROM s.b - s.d) / 60)::integer, s.a, s.b, coalesce(s.head, false)),
        ((extract(epoch FROM s.a - s.d) / 60)::integer - 1440, s.a, s.b, coalesce(s.tail, false)),
        (s.quarter, s.a, s.ha, NOT s.single AND s.ha < s.hb),
        (s.quarter, s.hb, s.b, NOT s.single AND s.ha < s.hb),
        (s.quarter, s.a, s.b, NOT s.single AND s.ha >= s.hb),
        (60, s.ha, s.qa, s.partial AND s.qa < s.qb),
        (360, s.qa, s.qb, s.partial AND s.qa < s.qb),
        (60, s.qb, s.hb, s.partial AND s.qa < s.qb),
        (60, s.ha, s.hb, s.partial AND s.qa >= s.qb)
    ) AS t (g, f, u, used)
    WHERE t.used AND t.f < t.u
    UNION ALL
    SELECT CASE WHEN r.clean THEN 60 ELSE 15 END::smallint, r.f, r.u
    FROM runs AS r
$$;
