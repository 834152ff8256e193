-- Sums the 15-minute rollup_events rows of the UTC day $1 into its hour
-- rows, quarter-day rows (grain 360), day row and heads and tails at its
-- cuts (sql/migrations/0008_zone_days.sql), per event type and for
-- every type together ('*', rows only compaction writes), each of those
-- buckets' communities into rollup_community_ranks, the day's quarter-hours
-- and half-hours of every type together (grains -15 and 30,
-- sql/migrations/0014_half_hours.sql), its users and
-- entities into their day rows (and into their week's rows) (every type together: the top lists'
-- candidates), and unmarks the day and its hours. Run by rollups.rs after
-- rollups_uncompact_day.sql, in the same transaction, holding the day's
-- lock exclusively (or every rollup table's). Returns the 15-minute rows
-- read.
--
-- Each insert is ordered by its table's key: the rows of a day land on
-- every community's part of each key index, and in key order each leaf page
-- is visited once rather than once per row (measured at 1M events: a day's
-- compaction 2.25-2.43 s unordered, 1.81-1.97 s ordered).
WITH quarters AS (
    SELECT community_id, event_type, bucket, events, users,
           date_bin('1 hour', bucket, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS hour
    FROM rollup_events
    WHERE grain = 15 AND bucket >= $1::timestamptz AND bucket < $1::timestamptz + interval '24 hours'
),
-- Quarter-hours of every type together (grain -15, sql/migrations/0008_zone_days.sql).
every_type_quarters AS (
    INSERT INTO rollup_events (community_id, grain, bucket, event_type, events, users)
    SELECT community_id, -15, bucket, '*', sum(events), hll_union_agg(users)
    FROM quarters
    GROUP BY community_id, bucket
    ORDER BY 1, 2, 3, 4
),
-- Half-hours of every type together (grain 30, sql/migrations/0014_half_hours.sql).
every_type_halves AS (
    INSERT INTO rollup_events (community_id, grain, bucket, event_type, events, users)
    SELECT community_id, 30, date_bin('30 minutes', bucket, TIMESTAMPTZ '2000-01-01 00:00:00+00'), '*',
           sum(events), hll_union_agg(users)
    FROM quarters
    GROUP BY 1, 3
    ORDER BY 1, 2, 3, 4
),
-- Per type: every longer row below is summed from these (a sketch merged
-- once per hour, not once per 15 minutes).
hourly AS MATERIALIZED (
    SELECT community_id, event_type, hour, sum(events) AS events, hll_union_agg(users) AS users,
           date_bin('6 hours', hour, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS quarter
    FROM quarters
    GROUP BY community_id, event_type, hour
),
hours AS (
    INSERT INTO rollup_events (community_id, grain, bucket, event_type, events, users)
    SELECT community_id, 60, hour, coalesce(event_type, '*'), sum(events), hll_union_agg(users)
    FROM hourly
    GROUP BY GROUPING SETS ((community_id, hour, event_type), (community_id, hour))
    ORDER BY 1, 2, 3, 4
),
quarters_of_day AS (
    INSERT INTO rollup_events (community_id, grain, bucket, event_type, events, users)
    SELECT community_id, 360, quarter, coalesce(event_type, '*'), sum(events), hll_union_agg(users)
    FROM hourly
    GROUP BY GROUPING SETS ((community_id, quarter, event_type), (community_id, quarter))
    ORDER BY 1, 2, 3, 4
),
days AS (
    INSERT INTO rollup_events (community_id, grain, bucket, event_type, events, users)
    SELECT community_id, 1440, $1::timestamptz, coalesce(event_type, '*'), sum(events), hll_union_agg(users)
    FROM hourly
    GROUP BY GROUPING SETS ((community_id, event_type), (community_id))
    ORDER BY 1, 2, 3, 4
),
-- Heads and tails at the day's cuts (sql/migrations/0008_zone_days.sql):
-- each the whole hours on its side of the cut and the 15-minute rows of the
-- hour the cut falls in. The heads at 01:00 and 06:00 are the hour and
-- quarter-day rows above.
cuts AS MATERIALIZED (
    SELECT unnest(activity_cuts($1::timestamptz, ARRAY(SELECT zone FROM rollup_zones))) AS cut
),
pieces AS (
    INSERT INTO rollup_events (community_id, grain, bucket, event_type, events, users)
    SELECT s.community_id, p.grain, p.bucket, coalesce(s.event_type, '*'), sum(s.events), hll_union_agg(s.users)
    FROM cuts AS c
    CROSS JOIN LATERAL (VALUES
        (c.cut, $1::timestamptz, $1::timestamptz + make_interval(mins => c.cut)),
        (c.cut - 1440, $1::timestamptz + make_interval(mins => c.cut), $1::timestamptz + interval '24 hours')
    ) AS p (grain, bucket, stop)
    CROSS JOIN LATERAL (
        SELECT community_id, event_type, events, users FROM hourly
        WHERE hour >= p.bucket AND hour + interval '1 hour' <= p.stop
        UNION ALL
        SELECT community_id, event_type, events, users FROM quarters
        -- Only a cut inside an hour has a part-hour (not read for the others).
        WHERE c.cut % 60 <> 0 AND bucket >= p.bucket AND bucket < p.stop
          AND NOT (hour >= p.bucket AND hour + interval '1 hour' <= p.stop)
    ) AS s
    WHERE p.grain NOT IN (60, 360)
    GROUP BY GROUPING SETS ((p.grain, p.bucket, s.community_id, s.event_type), (p.grain, p.bucket, s.community_id))
    ORDER BY 1, 2, 3, 4
),
day_cuts AS (
    INSERT INTO rollup_day_cuts (day, cuts)
    SELECT $1::timestamptz, coalesce(array_agg(cut ORDER BY cut), '{}') FROM cuts
    -- A day without rows has nothing to cut (a rebuild compacts every day of its range).
    HAVING EXISTS (SELECT 1 FROM quarters)
    ON CONFLICT (day) DO UPDATE SET cuts = excluded.cuts
),
community_ranks AS (
    INSERT INTO rollup_community_ranks (grain, bucket, community_id, events)
    SELECT g.grain, g.bucket, h.community_id, sum(h.events)
    FROM hourly AS h
    CROSS JOIN LATERAL (VALUES (60, h.hour), (360, h.quarter), (1440, $1::timestamptz)) AS g (grain, bucket)
    WHERE h.community_id NOT IN (activity_all_communities(), '00000000-0000-0000-0000-000000000000')
    GROUP BY 1, 2, 3
    ORDER BY 1, 2, 3
),
day_users AS MATERIALIZED (
    SELECT community_id, user_id, sum(events) AS events
    FROM rollup_users
    WHERE bucket >= $1::timestamptz AND bucket < $1::timestamptz + interval '24 hours'
    GROUP BY community_id, user_id
),
user_days AS (
    INSERT INTO rollup_user_days (community_id, day, user_id, events)
    SELECT community_id, $1::timestamptz, user_id, events FROM day_users
    ORDER BY 1, 3
),
-- Added to the week's rows (rollups_uncompact_day.sql took the day's old
-- rows out of them), when $2 is true: a rebuild passes false and sums its
-- weeks once at the end (rollups_sum_weeks.sql), instead of updating each
-- week row once per day of it.
user_weeks AS (
    INSERT INTO rollup_user_weeks AS w (community_id, week, user_id, events)
    SELECT community_id, activity_week($1::timestamptz), user_id, events FROM day_users
    WHERE $2::boolean
    ON CONFLICT (community_id, user_id, week) DO UPDATE SET events = w.events + excluded.events
),
-- From the raw rows (the day's partition, by created_at): an index on
-- rollup_entities' bucket would cost every batch more than this costs once.
day_entities AS MATERIALIZED (
    SELECT coalesce(community_id, '00000000-0000-0000-0000-000000000000'::uuid) AS community_id,
           entity_type, entity_id, count(*) AS events
    FROM activities
    WHERE created_at >= $1::timestamptz AND created_at < $1::timestamptz + interval '24 hours'
      AND entity_type IS NOT NULL AND entity_id IS NOT NULL
    GROUP BY 1, 2, 3
),
entity_days AS (
    INSERT INTO rollup_entity_days (community_id, day, entity_type, entity_id, events)
    SELECT community_id, $1::timestamptz, entity_type, entity_id, events FROM day_entities
    ORDER BY 1, 3, 4
),
entity_weeks AS (
    INSERT INTO rollup_entity_weeks AS w (community_id, week, entity_type, entity_id, events)
    SELECT community_id, activity_week($1::timestamptz), entity_type, entity_id, events FROM day_entities
    WHERE $2::boolean
    ON CONFLICT (community_id, entity_type, entity_id, week) DO UPDATE SET events = w.events + excluded.events
),
unmarked AS (
    DELETE FROM rollup_dirty_days WHERE day = $1::timestamptz
),
hours_unmarked AS (
    DELETE FROM rollup_dirty_hours
    WHERE hour >= $1::timestamptz AND hour < $1::timestamptz + interval '24 hours'
)
SELECT count(*) FROM quarters
