-- Refills (after rollups_clear_days.sql) the per-day community totals of every UTC day touching [$1, $2)
-- from rollup_events (already rebuilt for that range; days reaching outside
-- it are summed whole from rollup_events, which is exact there too).
WITH days AS (
    SELECT activity_day($1::timestamptz) AS first,
           activity_day($2::timestamptz - interval '1 microsecond') + interval '1 day' AS last
)
INSERT INTO rollup_community_days (day, community_id, events)
SELECT activity_day(bucket), community_id, sum(events)
FROM rollup_events
WHERE bucket >= (SELECT first FROM days) AND bucket < (SELECT last FROM days)
  AND community_id NOT IN (activity_all_communities(), '00000000-0000-0000-0000-000000000000')
GROUP BY 1, 2
