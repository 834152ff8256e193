-- The communities with the most events ($5: how many), from every
-- community's rows of every type, tile by tile (activity_tiles(); as in
-- totals.sql). Events without a community are not a community. $4 is unused
-- (top communities are over every event type).
SELECT c.community_id, m.name, c.events
FROM (
    SELECT r.community_id, sum(r.events)::bigint AS events
    FROM activity_tiles($1::timestamptz, $2::timestamptz) AS t
    CROSS JOIN LATERAL (
        SELECT community_id, events FROM rollup_events
        WHERE grain = t.grain AND bucket >= t.tile_from AND bucket < t.tile_to AND (t.grain = 15 OR event_type = '*')
          AND community_id NOT IN (activity_all_communities(), '00000000-0000-0000-0000-000000000000')
          AND ($3::uuid[] IS NULL OR community_id = ANY ($3::uuid[]))
          AND $4::text IS NULL
        OFFSET 0  -- one index range per tile (README)
    ) AS r
    GROUP BY r.community_id
) AS c
LEFT JOIN communities AS m ON m.id = c.community_id
ORDER BY c.events DESC, c.community_id
LIMIT $5
