-- The communities with the most events ($5: how many). Events without a
-- community are not a community.
SELECT r.community_id, c.name, r.events
FROM (SELECT community_id, sum(events)::bigint AS events FROM rollup_events
      WHERE bucket >= $1::timestamptz AND bucket < $2::timestamptz
  AND ($3::uuid[] IS NULL OR community_id = ANY ($3::uuid[]))
  AND ($4::text IS NULL OR event_type = $4::text) AND community_id <> '00000000-0000-0000-0000-000000000000'
      GROUP BY community_id) AS r
LEFT JOIN communities AS c ON c.id = r.community_id
ORDER BY r.events DESC, r.community_id
LIMIT $5
