-- Sums the 15-minute rollup_events rows of the UTC day $1 into its hour
-- rows, quarter-day rows (grain 360) and day row, per event type and for
-- every type together ('*', rows only compaction writes), each of those
-- buckets' communities into rollup_community_ranks, its users and
-- entities into their day rows (and into their week's rows) (every type together: the top lists'
-- candidates), and unmarks the day and its hours. Run by rollups.rs after
-- rollups_uncompact_day.sql, in the same transaction, holding the day's
-- lock exclusively (or every rollup table's). Returns the 15-minute rows
-- read.
WITH quarters AS (
    SELECT community_id, event_type, events, users,
           date_bin('1 hour', bucket, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS hour,
           date_bin('6 hours', bucket, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS quarter
    FROM rollup_events
    WHERE grain = 15 AND bucket >= $1::timestamptz AND bucket < $1::timestamptz + interval '24 hours'
),
hours AS (
    INSERT INTO rollup_events (community_id, grain, bucket, event_type, events, users)
    SELECT community_id, 60, hour, coalesce(event_type, '*'), sum(events), hll_union_agg(users)
    FROM quarters
    GROUP BY GROUPING SETS ((community_id, hour, event_type), (community_id, hour))
),
quarters_of_day AS (
    INSERT INTO rollup_events (community_id, grain, bucket, event_type, events, users)
    SELECT community_id, 360, quarter, coalesce(event_type, '*'), sum(events), hll_union_agg(users)
    FROM quarters
    GROUP BY GROUPING SETS ((community_id, quarter, event_type), (community_id, quarter))
),
days AS (
    INSERT INTO rollup_events (community_id, grain, bucket, event_type, events, users)
    SELECT community_id, 1440, $1::timestamptz, coalesce(event_type, '*'), sum(events), hll_union_agg(users)
    FROM quarters
    GROUP BY GROUPING SETS ((community_id, event_type), (community_id))
),
community_ranks AS (
    INSERT INTO rollup_community_ranks (grain, bucket, community_id, events)
    SELECT g.grain, g.bucket, q.community_id, sum(q.events)
    FROM quarters AS q
    CROSS JOIN LATERAL (VALUES (60, q.hour), (360, q.quarter), (1440, $1::timestamptz)) AS g (grain, bucket)
    WHERE q.community_id NOT IN (activity_all_communities(), '00000000-0000-0000-0000-000000000000')
    GROUP BY 1, 2, 3
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
),
-- Added to the week's rows (rollups_uncompact_day.sql took the day's old
-- rows out of them).
user_weeks AS (
    INSERT INTO rollup_user_weeks AS w (community_id, week, user_id, events)
    SELECT community_id, activity_week($1::timestamptz), user_id, events FROM day_users
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
),
entity_weeks AS (
    INSERT INTO rollup_entity_weeks AS w (community_id, week, entity_type, entity_id, events)
    SELECT community_id, activity_week($1::timestamptz), entity_type, entity_id, events FROM day_entities
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
