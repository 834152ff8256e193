-- The communities with the most events ($5: how many): whole UTC days from
-- rollup_community_days, the partial days at the range's ends from
-- rollup_events. Events without a community are not a community. $4 is
-- unused (top communities are over every event type).
WITH bounds AS (
    SELECT CASE WHEN activity_day($1::timestamptz) = $1::timestamptz THEN $1::timestamptz
                ELSE activity_day($1::timestamptz) + interval '1 day' END AS whole_from,
           activity_day($2::timestamptz) AS whole_to
),
counted AS (
    SELECT d.community_id, d.events
    FROM rollup_community_days AS d, bounds AS b
    WHERE d.day >= b.whole_from AND d.day < b.whole_to
      AND ($3::uuid[] IS NULL OR d.community_id = ANY ($3::uuid[]))
    UNION ALL
    -- The partial days: two plain bucket ranges, so each is an index range
    -- scan (an empty one when the range holds no whole day at that end).
    SELECT r.community_id, r.events
    FROM bounds AS b, rollup_events AS r
    WHERE r.bucket >= $1::timestamptz AND r.bucket < least(b.whole_from, $2::timestamptz)
      AND r.community_id NOT IN (activity_all_communities(), '00000000-0000-0000-0000-000000000000')
      AND ($3::uuid[] IS NULL OR r.community_id = ANY ($3::uuid[]))
      AND $4::text IS NULL
    UNION ALL
    SELECT r.community_id, r.events
    FROM bounds AS b, rollup_events AS r
    WHERE r.bucket >= greatest(b.whole_to, b.whole_from, $1::timestamptz) AND r.bucket < $2::timestamptz
      AND r.community_id NOT IN (activity_all_communities(), '00000000-0000-0000-0000-000000000000')
      AND ($3::uuid[] IS NULL OR r.community_id = ANY ($3::uuid[]))
      AND $4::text IS NULL
)
SELECT c.community_id, m.name, c.events
FROM (SELECT community_id, sum(events)::bigint AS events FROM counted GROUP BY community_id) AS c
LEFT JOIN communities AS m ON m.id = c.community_id
ORDER BY c.events DESC, c.community_id
LIMIT $5
