-- Sums the 15-minute rollup_events rows of the hour $1 into its hour rows,
-- per event type and for every type together ('*'), and its communities'
-- counts into rollup_community_ranks, and unmarks the hour:
-- the hours of a day still going on (whole days: rollups_compact_day.sql).
-- Run by rollups.rs after deleting the hour's rows, in the same transaction,
-- holding the hour's lock exclusively. Returns the 15-minute rows read.
WITH quarters AS (
    SELECT community_id, event_type, events, users
    FROM rollup_events
    WHERE grain = 15 AND bucket >= $1::timestamptz AND bucket < $1::timestamptz + interval '1 hour'
),
hours AS (
    INSERT INTO rollup_events (community_id, grain, bucket, event_type, events, users)
    SELECT community_id, 60, $1::timestamptz, coalesce(event_type, '*'), sum(events), hll_union_agg(users)
    FROM quarters
    GROUP BY GROUPING SETS ((community_id, event_type), (community_id))
),
community_ranks AS (
    INSERT INTO rollup_community_ranks (grain, bucket, community_id, events)
    SELECT 60, $1::timestamptz, community_id, sum(events)
    FROM quarters
    WHERE community_id NOT IN (activity_all_communities(), '00000000-0000-0000-0000-000000000000')
    GROUP BY community_id
),
unmarked AS (
    DELETE FROM rollup_dirty_hours WHERE hour = $1::timestamptz
)
SELECT count(*) FROM quarters
