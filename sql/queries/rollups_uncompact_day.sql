-- Removes the rows compaction wrote for the UTC day $1 (hour, quarter-day and day rows of
-- rollup_events and rollup_community_ranks, day rows of users and entities), before
-- rollups_compact_day.sql sums them anew.
WITH events AS (
    DELETE FROM rollup_events
    WHERE grain IN (60, 360, 1440) AND bucket >= $1::timestamptz AND bucket < $1::timestamptz + interval '24 hours'
),
ranks AS (
    DELETE FROM rollup_community_ranks
    WHERE bucket >= $1::timestamptz AND bucket < $1::timestamptz + interval '24 hours'
),
users AS (
    DELETE FROM rollup_user_days WHERE day = $1::timestamptz
)
DELETE FROM rollup_entity_days WHERE day = $1::timestamptz
