-- The communities with the most events ($5: how many), tile by tile
-- (activity_tiles()): a 15-minute tile's rows of every type, a longer tile's
-- rows of every type together ('*', an equality the index checks, so rows of
-- single types are never fetched). Events without a community are not a
-- community. $4 is unused (top communities are over every event type).
SELECT c.community_id, m.name, c.events
FROM (
    SELECT r.community_id, sum(r.events)::bigint AS events
    FROM activity_tiles($1::timestamptz, $2::timestamptz) AS t
    CROSS JOIN LATERAL (
        SELECT community_id, events FROM rollup_events
        WHERE t.grain = 15 AND grain = 15 AND bucket >= t.tile_from AND bucket < t.tile_to
          AND community_id NOT IN (activity_all_communities(), '00000000-0000-0000-0000-000000000000')
          AND ($3::uuid[] IS NULL OR community_id = ANY ($3::uuid[]))
        UNION ALL
        SELECT community_id, events FROM rollup_events
        WHERE t.grain > 15 AND grain = t.grain AND bucket >= t.tile_from AND bucket < t.tile_to
          AND event_type = '*'
          AND community_id NOT IN (activity_all_communities(), '00000000-0000-0000-0000-000000000000')
          AND ($3::uuid[] IS NULL OR community_id = ANY ($3::uuid[]))
        OFFSET 0  -- one index range per tile (README)
    ) AS r
    WHERE $4::text IS NULL
    GROUP BY r.community_id
) AS c
LEFT JOIN communities AS m ON m.id = c.community_id
ORDER BY c.events DESC, c.community_id
LIMIT $5
