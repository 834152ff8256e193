-- The communities with the most events ($5: how many), exactly, by the
-- threshold rule of sql/migrations/0003_top_lists.sql (top_users.sql
-- explains the steps; here each list's first 2 × $5 are candidates, not
-- 4 × $5: communities' sizes lie far apart, and every candidate costs a
-- range read per tile). Counts of every type together: a 15-minute tile's
-- rows of every type (rest), an hour's, quarter-day's or whole clean day's
-- or week's '*' rows (listed: each its own list, read most active first
-- from rollup_community_ranks, sql/migrations/0006_community_ranks.sql). Events without a community
-- are not a community. For a caller limited to some communities ($3 not
-- NULL) their counts are simply summed, as they are when the list is not
-- proven or $6 is true (few events: see top_users.sql). $4 is unused (every
-- event type).
WITH tiles AS MATERIALIZED (
    SELECT grain, tile_from, tile_to FROM activity_tiles(ARRAY[$1::timestamptz, $2::timestamptz])
),
listed AS MATERIALIZED (
    SELECT t.grain, b AS bucket
    FROM tiles AS t
    CROSS JOIN LATERAL generate_series(t.tile_from, t.tile_to - make_interval(mins => t.grain),
                                       make_interval(mins => t.grain)) AS b
    WHERE t.grain > 15
),
rest AS MATERIALIZED (
    SELECT r.community_id, sum(r.events)::bigint AS events
    FROM tiles AS t
    CROSS JOIN LATERAL (
        SELECT community_id, events FROM rollup_events
        WHERE t.grain = 15 AND grain = 15 AND bucket >= t.tile_from AND bucket < t.tile_to
          AND community_id NOT IN (activity_all_communities(), '00000000-0000-0000-0000-000000000000')
          AND ($3::uuid[] IS NULL OR community_id = ANY ($3::uuid[]))
        OFFSET 0  -- one index range per tile (README)
    ) AS r
    WHERE $4::text IS NULL
    GROUP BY r.community_id
),
ranked AS MATERIALIZED (
    SELECT d.community_id, d.events, d.place
    FROM listed AS l
    CROSS JOIN LATERAL (
        SELECT community_id, events, row_number() OVER (ORDER BY events DESC) AS place
        FROM rollup_community_ranks
        WHERE $3::uuid[] IS NULL AND grain = l.grain AND bucket = l.bucket
        ORDER BY events DESC
        LIMIT 2 * $5::bigint + 1
    ) AS d
),
candidates AS (
    SELECT community_id FROM ranked WHERE place <= 2 * $5::bigint
    UNION
    SELECT community_id FROM (SELECT community_id FROM rest ORDER BY events DESC LIMIT 2 * $5::bigint) AS r
),
bound AS MATERIALIZED (
    SELECT coalesce((SELECT sum(events) FROM ranked WHERE place = 2 * $5::bigint + 1), 0)
         + coalesce((SELECT events FROM rest ORDER BY events DESC OFFSET 2 * $5::bigint LIMIT 1), 0) AS most
),
pruned AS MATERIALIZED (
    SELECT x.community_id, sum(x.events)::bigint AS events
    FROM (
        SELECT community_id, events FROM rest
        WHERE community_id IN (SELECT community_id FROM candidates)
        UNION ALL
        SELECT c.community_id, e.events
        FROM candidates AS c
        CROSS JOIN tiles AS t
        CROSS JOIN LATERAL (
            SELECT events FROM rollup_events
            WHERE t.grain > 15 AND community_id = c.community_id AND grain = t.grain
              AND bucket >= t.tile_from AND bucket < t.tile_to AND event_type = '*'
            OFFSET 0
        ) AS e
    ) AS x
    GROUP BY x.community_id
    ORDER BY events DESC, x.community_id
    LIMIT $5::bigint
),
proof AS MATERIALIZED (
    SELECT $3::uuid[] IS NULL AND NOT $6::boolean
           AND ((SELECT most FROM bound) = 0
                OR ((SELECT count(*) FROM pruned) = $5::bigint
                    AND (SELECT min(events) FROM pruned) > (SELECT most FROM bound))) AS proven
),
everyone AS (
    SELECT x.community_id, sum(x.events)::bigint AS events
    FROM (
        SELECT community_id, events FROM rest
        UNION ALL
        SELECT e.community_id, e.events
        FROM tiles AS t
        CROSS JOIN LATERAL (
            SELECT community_id, events FROM rollup_events
            WHERE t.grain > 15 AND grain = t.grain AND bucket >= t.tile_from AND bucket < t.tile_to
              AND event_type = '*'
              AND community_id NOT IN (activity_all_communities(), '00000000-0000-0000-0000-000000000000')
              AND ($3::uuid[] IS NULL OR community_id = ANY ($3::uuid[]))
            OFFSET 0
        ) AS e
    ) AS x
    WHERE NOT (SELECT proven FROM proof)
    GROUP BY x.community_id
    ORDER BY events DESC, x.community_id
    LIMIT $5::bigint
),
top AS (
    SELECT community_id, events, true AS proven FROM pruned WHERE (SELECT proven FROM proof)
    UNION ALL
    SELECT community_id, events, false FROM everyone
)
SELECT top.community_id, m.name, top.events, top.proven
FROM top
LEFT JOIN communities AS m ON m.id = top.community_id
ORDER BY top.events DESC, top.community_id
