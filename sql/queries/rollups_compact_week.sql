-- Sums the user day rows of the week (Monday 00:00 UTC) that holds the UTC
-- day $1 into its week rows (sql/migrations/0007_user_weeks.sql). Run by
-- rollups.rs right after rollups_compact_day.sql, in the same transaction,
-- holding the week's lock (compactors of two days of one week take turns),
-- after deleting the week's rows. Returns the day rows read.
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
)
SELECT count(*) FROM days
