-- Tiles of a whole time series in one call, planned once per connection.
--
-- A series asked activity_tiles() for each of its intervals: a 90-day
-- daily series called it 91 times, a 7-day hourly one 168 times, and every
-- call of a SQL function returning a set starts an executor of its own and
-- looks up its days' dirty marks and cuts again. And every query calling
-- it planned the function's body anew (a SQL function's plan lives only as
-- long as the calling query), about 2 ms, so each query of a report paid
-- that once. Measured in psql (\timing, Asia/Kolkata, some days dirty,
-- the machine busy loading a benchmark): the 168 calls of a 7-day hourly
-- series 22 ms, the 91 of a 90-day daily one 14-16 ms, one call over a day
-- 2-2.5 ms.
--
-- activity_tiles() now takes the boundaries of consecutive slots
-- (bounds[1] < bounds[2] < ...: slot i is [bounds[i], bounds[i + 1])) and
-- returns each slot's tiles with its number; a query of one range passes
-- ARRAY[from, to] (slot 1). Each UTC day's marks are looked up once for the
-- whole series, and a day cut by slot boundaries is tiled piece by piece
-- exactly as 0009 tiled a range, so every slot gets the tiles a call of its
-- own would give it (a test compares the two).
--
-- It is PL/pgSQL with plan_cache_mode = force_generic_plan: the body is
-- planned once per connection and the plan kept. (0008 made it a STRICT
-- SQL function because as PL/pgSQL with the default plan_cache_mode each
-- connection chose between a generic plan and a custom one planned on
-- every call from its own history. The generic plan is the one the SQL
-- function had: it was planned without its arguments' values.) work_mem is
-- fixed for the same reason: a plan made under the top lists' 32 MB cost
-- ten times as much (analytics-api/src/db.rs). And jit is off whoever
-- calls it (the API turns it off; psql and tests do not): the plan's
-- estimates are large, and JIT compiling it took 800 ms a call. The same 90-day daily,
-- 7-day hourly and one-day calls now take 3.2, 2.1 and 0.4-0.6 ms.
DROP FUNCTION activity_tiles(TIMESTAMPTZ, TIMESTAMPTZ, BOOLEAN, BOOLEAN);

CREATE FUNCTION activity_tiles(bounds TIMESTAMPTZ[], pieces BOOLEAN DEFAULT false,
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
               CASE WHEN clean AND every_type THEN -15 ELSE 15 END AS quarter
        FROM hourly
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
    SELECT r.slot, CASE WHEN r.clean THEN 60 ELSE 15 END::smallint, r.f, r.u
    FROM runs AS r
    UNION ALL
    SELECT slot, 10080::smallint, w, w + interval '168 hours'
    FROM weeks;
END
$$;
