-- Half-hours of every type together, for the zones whose offset is a
-- whole hour and a half (Asia/Kolkata, Asia/Colombo, Asia/Tehran,
-- Asia/Kabul, Asia/Yangon, America/St_Johns, Australia/Adelaide and
-- Darwin).
--
-- An hour there is [hh:30, hh+1:30) UTC: no hour row covers it, so a query
-- of every type read it as four quarter-hours of every type together
-- (grain -15, sql/migrations/0008_zone_days.sql). A 7-day hourly overview
-- in Asia/Kolkata merged 672 sketches and was the slowest request of the
-- analytics benchmark (62-74 ms at 10M events, the same overview in UTC
-- 27 ms).
--
-- The compactor now also writes a compacted day's half-hours of every type
-- together (grain 30, event_type '*', at hh:00 and hh:30 UTC), and
-- activity_tiles() reads the part of a piece of quarter-hours of a clean
-- day that whole half-hours cover from them: such an hour is two rows, as
-- are the ends of a Kolkata day outside rollup_zones' cuts and the
-- half-hour ends of ranges. Queries of one type, and dirty days, read
-- quarter-hours as before. Like the quarter-hours of every type, half-hours
-- are rows only compaction writes (activity_compacted_grains()), replaced
-- with the day's other compacted rows.
--
-- The days compacted before this migration get theirs here, summed from
-- their quarter-hours of every type (which exist exactly for those days).
ALTER TABLE rollup_events DROP CONSTRAINT rollup_events_grain_check,
    ADD CONSTRAINT rollup_events_grain_check
    CHECK (grain IN (-15, 15, 30, 360, 1440, 10080)
           OR (grain BETWEEN -1380 AND 1380 AND grain % 15 = 0 AND abs(grain) >= 60));

CREATE OR REPLACE FUNCTION activity_compacted_grains() RETURNS SMALLINT[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS
$$ SELECT array_agg(g::smallint ORDER BY g) FROM generate_series(-1380, 1440, 15) AS g
   WHERE g IN (-15, 30, 360, 1440) OR (g BETWEEN -1380 AND 1380 AND abs(g) >= 60) $$;

INSERT INTO rollup_events (community_id, grain, bucket, event_type, events, users)
SELECT community_id, 30, date_bin('30 minutes', bucket, TIMESTAMPTZ '2000-01-01 00:00:00+00'), '*',
       sum(events), hll_union_agg(users)
FROM rollup_events
WHERE grain = -15
GROUP BY 1, 3;

-- activity_tiles() of 0010 with the half-hour tiles: the quarter-hour
-- tiles of every type of a clean day are cut where half-hours begin and end.
CREATE OR REPLACE FUNCTION activity_tiles(bounds TIMESTAMPTZ[], pieces BOOLEAN DEFAULT false,
                               every_type BOOLEAN DEFAULT false)
RETURNS TABLE (slot INTEGER, grain SMALLINT, tile_from TIMESTAMPTZ, tile_to TIMESTAMPTZ)
LANGUAGE plpgsql STABLE STRICT PARALLEL SAFE ROWS 8
SET plan_cache_mode = force_generic_plan SET work_mem = '4MB' SET jit = off AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    WITH slots AS MATERIALIZED (
        SELECT i AS slot, bounds[i] AS lo, bounds[i + 1] AS hi
        FROM generate_series(1, cardinality(bounds) - 1) AS i
        WHERE bounds[i] < bounds[i + 1]
    ),
    -- Materialized: each day's marks are looked up once, not once per use
    -- or per slot.
    marks AS MATERIALIZED (
        SELECT d, NOT EXISTS (SELECT 1 FROM rollup_dirty_days AS x WHERE x.day = d) AS clean,
               CASE WHEN pieces THEN (SELECT x.cuts FROM rollup_day_cuts AS x WHERE x.day = d) END AS cuts
        FROM generate_series(activity_day((SELECT min(lo) FROM slots)),
                             (SELECT max(hi) FROM slots) - interval '1 microsecond',
                             interval '24 hours') AS d
    ),
    -- Each slot's part of each UTC day it overlaps.
    days AS MATERIALIZED (
        SELECT s.slot, m.d, greatest(m.d, s.lo) AS a, least(m.d + interval '24 hours', s.hi) AS b,
               m.clean, m.cuts
        FROM slots AS s
        JOIN marks AS m ON m.d < s.hi AND m.d + interval '24 hours' > s.lo
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
    weeks AS MATERIALIZED (
        SELECT slot, activity_week(d) AS w FROM cut WHERE whole GROUP BY 1, 2 HAVING count(*) = 7
    ),
    hourly AS (
        SELECT slot, d, a, b, clean, whole AND (slot, activity_week(d)) NOT IN (SELECT slot, w FROM weeks) AS whole,
               head, tail,
               whole OR coalesce(head, false) OR coalesce(tail, false)
                     OR (slot, activity_week(d)) IN (SELECT slot, w FROM weeks) AS single,
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
               CASE WHEN clean AND every_type THEN -15 ELSE 15 END AS quarter,
               -- The half-hours between a piece's quarter-hours (grain 30,
               -- every type together, clean days): the first half-hour
               -- boundary at or after a, the last at or before b.
               CASE WHEN clean AND every_type
                    THEN date_bin('30 minutes', a + interval '30 minutes' - interval '1 microsecond',
                                  TIMESTAMPTZ '2000-01-01 00:00:00+00') END AS a30,
               CASE WHEN clean AND every_type
                    THEN date_bin('30 minutes', b, TIMESTAMPTZ '2000-01-01 00:00:00+00') END AS b30
        FROM hourly
    ),
    -- Where each piece of quarter-hours gives way to half-hours: the piece
    -- before the first whole hour is [a, m1) of quarter-hours and [m1, ha)
    -- of half-hours, the one after the last [hb, m2) and [m2, b), a slot
    -- with no whole hour [a, m1), [m1, m2) and [m2, b). Without half-hours,
    -- m1 and m2 leave the half-hour tiles empty.
    split AS (
        SELECT *,
               CASE WHEN NOT single AND ha < hb THEN least(coalesce(a30, ha), ha)
                    ELSE least(coalesce(a30, b), b) END AS m1,
               CASE WHEN NOT single AND ha < hb THEN greatest(coalesce(b30, hb), hb)
                    ELSE greatest(coalesce(b30, b), least(coalesce(a30, b), b)) END AS m2
        FROM shaped
    ),
    hours AS (
        SELECT s.slot, s.d, h,
               s.d >= activity_day(now())
               AND NOT EXISTS (SELECT 1 FROM rollup_dirty_hours AS x WHERE x.hour = h) AS clean
        FROM shaped AS s
        CROSS JOIN LATERAL generate_series(s.ha, s.hb - interval '1 hour', interval '1 hour') AS h
        WHERE NOT s.clean
    ),
    -- Runs of consecutive hours alike: one tile each.
    runs AS (
        SELECT slot, clean, min(h) AS f, max(h) + interval '1 hour' AS u
        FROM (SELECT slot, d, h, clean,
                     h - interval '1 hour' * row_number() OVER (PARTITION BY slot, d, clean ORDER BY h) AS run
              FROM hours) AS x
        GROUP BY slot, d, clean, run
    )
    SELECT s.slot, t.g::smallint, t.f, t.u
    FROM split AS s
    CROSS JOIN LATERAL (VALUES
        (1440, s.a, s.b, s.whole),
        ((extract(epoch FROM s.b - s.d) / 60)::integer, s.a, s.b, coalesce(s.head, false)),
        ((extract(epoch FROM s.a - s.d) / 60)::integer - 1440, s.a, s.b, coalesce(s.tail, false)),
        (s.quarter, s.a, s.m1, NOT s.single AND s.ha < s.hb),
        (30, s.m1, s.ha, NOT s.single AND s.ha < s.hb),
        (30, s.hb, s.m2, NOT s.single AND s.ha < s.hb),
        (s.quarter, s.m2, s.b, NOT s.single AND s.ha < s.hb),
        (s.quarter, s.a, s.m1, NOT s.single AND s.ha >= s.hb),
        (30, s.m1, s.m2, NOT s.single AND s.ha >= s.hb),
        (s.quarter, s.m2, s.b, NOT s.single AND s.ha >= s.hb),
        (60, s.ha, s.qa, s.partial AND s.qa < s.qb),
        (360, s.qa, s.qb, s.partial AND s.qa < s.qb),
        (60, s.qb, s.hb, s.partial AND s.qa < s.qb),
        (60, s.ha, s.hb, s.partial AND s.qa >= s.qb)
    ) AS t (g, f, u, used)
    WHERE t.used AND t.f < t.u
    UNION ALL
    SELECT r.slot, CASE WHEN r.clean THEN 60 ELSE 15 END::smallint, r.f, r.u
    FROM runs AS r
    UNION ALL
    SELECT slot, 10080::smallint, w, w + interval '168 hours'
    FROM weeks;
END
$$;
