-- Week rows of rollup_events: a long range reads a row per week, not per day.
--
-- A 90-day overview read 91 day rows (or heads and tails) per event type
-- for its events by type, per candidate community for its top communities,
-- and 30 for the monthly active users: at 10M events by type took 12-15 ms
-- and top communities 20-29 ms of its time. A week row (grain 10080, bucket
-- Monday 00:00 UTC, activity_week() of 0007) is the sum of the week's day
-- rows, per community and event type and for every type together ('*'),
-- and its communities are ranked in rollup_community_ranks like a day's.
-- activity_tiles() reads a week from its rows when the range covers its 7
-- UTC days whole and none of them is dirty, the rule 0007 made for the top
-- lists' week rows (activity_week_lists(), replaced here: the top lists
-- take their weeks from the tiles, so one function decides).
--
-- A week's rows are written by rollups_sum_weeks.sql, which deletes the
-- rows of the weeks it is given and writes again those none of whose days
-- is dirty: after each day the compactor compacts (holding the week's
-- lock), and once for every week a rebuild touched. So while all 7 days
-- are clean, the week's rows are the sum of their current day rows; a late
-- event marks its day dirty, and the week is read from its days (and their
-- 15-minute rows) until the day is compacted again and the week rewritten.
ALTER TABLE rollup_events DROP CONSTRAINT rollup_events_grain_check,
    ADD CONSTRAINT rollup_events_grain_check
    CHECK (grain IN (-15, 15, 360, 1440, 10080) OR (grain BETWEEN -1380 AND 1380 AND grain % 15 = 0 AND abs(grain) >= 60));
ALTER TABLE rollup_community_ranks DROP CONSTRAINT rollup_community_ranks_grain_check,
    ADD CONSTRAINT rollup_community_ranks_grain_check CHECK (grain IN (60, 360, 1440, 10080));

DROP FUNCTION activity_week_lists(TIMESTAMPTZ[]);

-- Weeks of clean days, from the day rows there are (rollups_sum_weeks.sql
-- does the same for the weeks it is given).
INSERT INTO rollup_events (community_id, grain, bucket, event_type, events, users)
SELECT community_id, 10080, activity_week(bucket), event_type, sum(events), hll_union_agg(users)
FROM rollup_events AS d
WHERE grain = 1440
  AND NOT EXISTS (SELECT 1 FROM rollup_dirty_days AS x
                  WHERE x.day >= activity_week(d.bucket) AND x.day < activity_week(d.bucket) + interval '168 hours')
GROUP BY community_id, activity_week(bucket), event_type;

INSERT INTO rollup_community_ranks (grain, bucket, community_id, events)
SELECT grain, bucket, community_id, events
FROM rollup_events
WHERE grain = 10080 AND event_type = '*'
  AND community_id NOT IN (activity_all_communities(), '00000000-0000-0000-0000-000000000000');

-- As in 0008, but a week whose 7 days are whole clean days of the range is
-- one tile of its week rows (grain 10080) instead of 7 of day rows.
CREATE OR REPLACE FUNCTION activity_tiles(lo TIMESTAMPTZ, hi TIMESTAMPTZ, pieces BOOLEAN DEFAULT false,
                               every_type BOOLEAN DEFAULT false)
RETURNS TABLE (grain SMALLINT, tile_from TIMESTAMPTZ, tile_to TIMESTAMPTZ)
-- SQL, STRICT, called with jit off: 0008 says why.
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
    weeks AS MATERIALIZED (
        SELECT activity_week(d) AS w FROM cut WHERE whole GROUP BY 1 HAVING count(*) = 7
    ),
    hourly AS (
        SELECT d, a, b, clean, whole AND activity_week(d) NOT IN (SELECT w FROM weeks) AS whole, head, tail,
               whole OR coalesce(head, false) OR coalesce(tail, false) OR activity_week(d) IN (SELECT w FROM weeks) AS single,
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
    UNION ALL
    SELECT 10080::smallint, w, w + interval '168 hours'
    FROM weeks
$$;
