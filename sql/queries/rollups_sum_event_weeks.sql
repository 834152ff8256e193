-- Sums the day rows of each week (Monday 00:00 UTC) that [$1, $2) touches
-- and none of whose days is dirty into that week's rollup_events rows
-- (grain 10080), per community and event type as the day rows are, and
-- ranks its communities (sql/migrations/0009_week_rows.sql), once rollups.rs
-- deleted those weeks' rows: after each day the compactor compacts, and
-- once for every week a rebuild touched. Returns the week rows written.
WITH weeks AS (
    SELECT w FROM generate_series(activity_week($1::timestamptz), $2::timestamptz - interval '1 microsecond',
                                  interval '168 hours') AS w
    WHERE NOT EXISTS (SELECT 1 FROM rollup_dirty_days AS x WHERE x.day >= w AND x.day < w + interval '168 hours')
),
summed AS MATERIALIZED (
    SELECT d.community_id, k.w AS week, d.event_type, sum(d.events) AS events, hll_union_agg(d.users) AS users
    FROM weeks AS k
    JOIN rollup_events AS d ON d.grain = 1440 AND d.bucket >= k.w AND d.bucket < k.w + interval '168 hours'
    GROUP BY 1, 2, 3
),
written AS (
    INSERT INTO rollup_events (community_id, grain, bucket, event_type, events, users)
    SELECT community_id, 10080, week, event_type, events, users FROM summed
    ORDER BY 1, 3, 4  -- key order (rollups_compact_day.sql)
),
ranked AS (
    INSERT INTO rollup_community_ranks (grain, bucket, community_id, events)
    SELECT 10080, week, community_id, events FROM summed
    WHERE event_type = '*' AND community_id NOT IN (activity_all_communities(), '00000000-0000-0000-0000-000000000000')
)
SELECT count(*) FROM summed
