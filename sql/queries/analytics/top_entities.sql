-- The entities with the most events in the communities $3 ($5: how many),
-- exactly, without summing every entity's counts when it need not: the
-- threshold rule of sql/migrations/0003_top_lists.sql, over week lists
-- where it can (0007_week_lists.sql), as top_users.sql does (its comment
-- explains the steps). $6: sum every count at once (few events). $4 is
-- unused (entity rows are not kept per event type).
WITH tiles AS MATERIALIZED (
    SELECT grain, tile_from, tile_to FROM activity_tiles(ARRAY[$1::timestamptz, $2::timestamptz])
),
lists AS MATERIALIZED (
    SELECT coalesce(array_agg(tile_from) FILTER (WHERE grain = 10080), '{}') AS weeks,
           coalesce(array_agg(tile_from) FILTER (WHERE grain = 1440), '{}') AS days
    FROM tiles
),
rest AS MATERIALIZED (
    SELECT r.entity_type, r.entity_id, sum(r.events)::bigint AS events
    FROM tiles AS t
    CROSS JOIN LATERAL (
        SELECT entity_type, entity_id, events FROM rollup_entities
        WHERE t.grain < 1440 AND community_id = ANY ($3::uuid[])
          AND bucket >= t.tile_from AND bucket < t.tile_to
        OFFSET 0  -- one index range per tile (README)
    ) AS r
    WHERE $4::text IS NULL
    GROUP BY r.entity_type, r.entity_id
),
ranked AS MATERIALIZED (
    SELECT d.entity_type, d.entity_id, d.events, d.place
    FROM lists AS l
    CROSS JOIN unnest(l.days) AS k (day)
    CROSS JOIN unnest($3::uuid[]) AS c (id)
    CROSS JOIN LATERAL (
        SELECT entity_type, entity_id, events, row_number() OVER (ORDER BY events DESC) AS place
        FROM rollup_entity_days
        WHERE community_id = c.id AND day = k.day
        ORDER BY events DESC
        LIMIT 4 * $5::bigint + 1
    ) AS d
    UNION ALL
    SELECT w.entity_type, w.entity_id, w.events, w.place
    FROM lists AS l
    CROSS JOIN unnest(l.weeks) AS k (week)
    CROSS JOIN unnest($3::uuid[]) AS c (id)
    CROSS JOIN LATERAL (
        SELECT entity_type, entity_id, events, row_number() OVER (ORDER BY events DESC) AS place
        FROM rollup_entity_weeks
        WHERE community_id = c.id AND week = k.week
        ORDER BY events DESC
        LIMIT 4 * $5::bigint + 1
    ) AS w
),
candidates AS (
    SELECT entity_type, entity_id FROM ranked WHERE place <= 4 * $5::bigint
    UNION
    SELECT entity_type, entity_id FROM (SELECT entity_type, entity_id FROM rest ORDER BY events DESC LIMIT 4 * $5::bigint) AS r
),
bound AS MATERIALIZED (
    SELECT coalesce((SELECT sum(events) FROM ranked WHERE place = 4 * $5::bigint + 1), 0)
         + coalesce((SELECT events FROM rest ORDER BY events DESC OFFSET 4 * $5::bigint LIMIT 1), 0) AS most
),
pruned AS MATERIALIZED (
    SELECT x.entity_type, x.entity_id, sum(x.events)::bigint AS events
    FROM (
        SELECT entity_type, entity_id, events FROM rest
        WHERE (entity_type, entity_id) IN (SELECT entity_type, entity_id FROM candidates)
        UNION ALL
        SELECT u.entity_type, u.entity_id, u.events FROM rollup_entity_days AS u, lists AS l
        WHERE u.community_id = ANY ($3::uuid[]) AND u.day = ANY (l.days)
          AND (u.entity_type, u.entity_id) IN (SELECT entity_type, entity_id FROM candidates)
        UNION ALL
        SELECT u.entity_type, u.entity_id, u.events FROM rollup_entity_weeks AS u, lists AS l
        WHERE u.community_id = ANY ($3::uuid[]) AND u.week = ANY (l.weeks)
          AND (u.entity_type, u.entity_id) IN (SELECT entity_type, entity_id FROM candidates)
    ) AS x
    GROUP BY x.entity_type, x.entity_id
    ORDER BY events DESC, x.entity_type, x.entity_id
    LIMIT $5::bigint
),
proof AS MATERIALIZED (
    SELECT NOT $6::boolean
           AND ((SELECT most FROM bound) = 0
                OR ((SELECT count(*) FROM pruned) = $5::bigint
                    AND (SELECT min(events) FROM pruned) > (SELECT most FROM bound))) AS proven
),
everyone AS (
    SELECT x.entity_type, x.entity_id, sum(x.events)::bigint AS events
    FROM (
        SELECT entity_type, entity_id, events FROM rest
        UNION ALL
        SELECT u.entity_type, u.entity_id, u.events FROM rollup_entity_days AS u, lists AS l
        WHERE u.community_id = ANY ($3::uuid[]) AND u.day = ANY (l.days)
        UNION ALL
        SELECT u.entity_type, u.entity_id, u.events FROM rollup_entity_weeks AS u, lists AS l
        WHERE u.community_id = ANY ($3::uuid[]) AND u.week = ANY (l.weeks)
    ) AS x
    WHERE NOT (SELECT proven FROM proof)
    GROUP BY x.entity_type, x.entity_id
    ORDER BY events DESC, x.entity_type, x.entity_id
    LIMIT $5::bigint
)
SELECT entity_type, entity_id, events, (SELECT proven FROM proof) AS proven FROM pruned
WHERE (SELECT proven FROM proof)
UNION ALL
SELECT entity_type, entity_id, events, false FROM everyone
ORDER BY events DESC, entity_type, entity_id
