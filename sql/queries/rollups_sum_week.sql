-- Sums the user and entity day rows of the week (Monday 00:00 UTC) that holds the UTC
-- day $1 into its week rows (sql/migrations/0007_week_lists.sql), after
-- rollups.rs deleted them: what a rebuild does for every week it touched,
-- after compacting its days (the compactor adds and takes out day rows
-- instead, which does not repair a damaged week). Returns the day rows read.
WITH days AS (
    SELECT community_id, user_id, events
    FROM rollup_user_days
    WHERE day >= activity_week($1::timestamptz) AND day < activity_week($1::timestamptz) + interval '7 days'
),
weeks AS (
    INSERT INTO rollup_user_weeks (community_id, week, user_id, events)
    SELECT community_id, activity_week($1::timestamptz), user_id, sum(events)
    FROM days
    GROUP BY community_id, user_id
),
entity_weeks AS (
    INSERT INTO rollup_entity_weeks (community_id, week, entity_type, entity_id, events)
    SELECT community_id, activity_week($1::timestamptz), entity_type, entity_id, sum(events)
    FROM rollup_entity_days
    WHERE day >= activity_week($1::timestamptz) AND day < activity_week($1::timestamptz) + interval '7 days'
    GROUP BY community_id, entity_type, entity_id
)
SELECT count(*) FROM days
