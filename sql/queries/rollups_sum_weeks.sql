-- Sums the user and entity day rows of every week (Monday 00:00 UTC) that
-- [$1, $2) touches into week rows, once rollups.rs deleted those weeks' rows
-- (sql/migrations/0007_week_lists.sql): what a rebuild does after
-- compacting the days of its range (the compactor adds and takes out day
-- rows instead, which does not repair a damaged week). Returns the user
-- day rows read.
WITH span AS (
    SELECT activity_week($1::timestamptz) AS first,
           activity_week($2::timestamptz - interval '1 microsecond') + interval '168 hours' AS last
),
days AS (
    SELECT community_id, activity_week(day) AS week, user_id, events
    FROM rollup_user_days, span
    WHERE day >= span.first AND day < span.last
),
user_weeks AS (
    INSERT INTO rollup_user_weeks (community_id, week, user_id, events)
    SELECT community_id, week, user_id, sum(events)
    FROM days
    GROUP BY community_id, week, user_id
    ORDER BY 1, 3, 2  -- key order (rollups_compact_day.sql)
),
entity_weeks AS (
    INSERT INTO rollup_entity_weeks (community_id, week, entity_type, entity_id, events)
    SELECT community_id, activity_week(day), entity_type, entity_id, sum(events)
    FROM rollup_entity_days, span
    WHERE day >= span.first AND day < span.last
    GROUP BY community_id, activity_week(day), entity_type, entity_id
    ORDER BY 1, 3, 4, 2
)
SELECT count(*) FROM days
