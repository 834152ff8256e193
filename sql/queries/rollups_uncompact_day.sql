-- Removes the rows compaction wrote for the UTC day $1 (hour, quarter-day, day, head and tail rows of
-- rollup_events and rollup_community_ranks, not its week's, day rows of users and entities), and
-- takes the day's user and entity rows out of their week's (sql/migrations/0007; when $2 is true,
-- as for rollups_compact_day.sql's $2), before
-- rollups_compact_day.sql sums them anew (the week's lock held: rollups.rs).
WITH events AS (
    DELETE FROM rollup_events
    WHERE grain = ANY (activity_compacted_grains()) AND bucket >= $1::timestamptz AND bucket < $1::timestamptz + interval '24 hours'
),
ranks AS (
    DELETE FROM rollup_community_ranks
    WHERE grain = ANY ('{60, 360, 1440}') AND bucket >= $1::timestamptz AND bucket < $1::timestamptz + interval '24 hours'
),
-- Reads the day rows as they were before this statement deletes them.
weeks AS (
    UPDATE rollup_user_weeks AS w SET events = w.events - d.events
    FROM rollup_user_days AS d
    WHERE $2::boolean AND d.day = $1::timestamptz AND w.community_id = d.community_id
      AND w.user_id = d.user_id AND w.week = activity_week($1::timestamptz)
),
entity_weeks AS (
    UPDATE rollup_entity_weeks AS w SET events = w.events - d.events
    FROM rollup_entity_days AS d
    WHERE $2::boolean AND d.day = $1::timestamptz AND w.community_id = d.community_id
      AND w.entity_type = d.entity_type AND w.entity_id = d.entity_id
      AND w.week = activity_week($1::timestamptz)
),
users AS (
    DELETE FROM rollup_user_days WHERE day = $1::timestamptz
)
DELETE FROM rollup_entity_days WHERE day = $1::timestamptz
