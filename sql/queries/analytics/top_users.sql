-- The most active users of the communities $3 ($5: how many), exactly,
-- without summing every user's counts when it need not: the threshold rule
-- of sql/migrations/0003_top_lists.sql, over week lists where it can
-- (sql/migrations/0007_week_lists.sql). One statement (one snapshot):
--   weeks      the weeks (Monday 00:00 UTC) whose 7 days are whole clean
--              days of the range (activity_tiles()' week tiles): read from
--              their week rows;
--   days       the other whole clean days: read from their day rows;
--   rest       every user's exact count outside the whole clean days (the
--              range's ends, dirty days), from the 15-minute rows;
--   ranked     each week's and day's 4 × $5 + 1 most active users (index
--              order);
--   candidates each list's first 4 × $5, and the first 4 × $5 of rest;
--   bound      the most anyone else can have: the sum of each list's
--              (4 × $5 + 1)-th count and rest's;
--   pruned     the candidates' exact totals, ranked; proven when the last
--              of them has more than bound (or no one else has any event).
-- When it is not proven, everyone's counts are summed (everyone), and only
-- then: the one-time filter on `proven` keeps PostgreSQL from reading them
-- otherwise. $6: sum every count at once, without trying the rule (the
-- API passes true when the range holds few events: summing them costs less
-- than reading each list; analytics-api/src/routes.rs). $4 is unused (day
-- and week rows are every type together).
WITH tiles AS MATERIALIZED (
    SELECT grain, tile_from, tile_to FROM activity_tiles(ARRAY[$1::timestamptz, $2::timestamptz])
),
lists AS MATERIALIZED (
    SELECT coalesce(array_agg(tile_from) FILTER (WHERE grain = 10080), '{}') AS weeks,
           coalesce(array_agg(tile_from) FILTER (WHERE grain = 1440), '{}') AS days
    FROM tiles
),
rest AS MATERIALIZED (
    SELECT r.user_id, sum(r.events)::bigint AS events
    FROM tiles AS t
    CROSS JOIN LATERAL (
        SELECT user_id, events FROM rollup_users
        WHERE t.grain < 1440 AND community_id = ANY ($3::uuid[])
          AND bucket >= t.tile_from AND bucket < t.tile_to
        OFFSET 0  -- one index range per tile (README)
    ) AS r
    WHERE $4::text IS NULL
    GROUP BY r.user_id
),
ranked AS MATERIALIZED (
    SELECT d.user_id, d.events, d.place
    FROM lists AS l
    CROSS JOIN unnest(l.days) AS k (day)
    CROSS JOIN unnest($3::uuid[]) AS c (id)
    CROSS JOIN LATERAL (
        SELECT user_id, events, row_number() OVER (ORDER BY events DESC) AS place
        FROM rollup_user_days
        WHERE community_id = c.id AND day = k.day
        ORDER BY events DESC
        LIMIT 4 * $5::bigint + 1
    ) AS d
    UNION ALL
    SELECT w.user_id, w.events, w.place
    FROM lists AS l
    CROSS JOIN unnest(l.weeks) AS k (week)
    CROSS JOIN unnest($3::uuid[]) AS c (id)
    CROSS JOIN LATERAL (
        SELECT user_id, events, row_number() OVER (ORDER BY events DESC) AS place
        FROM rollup_user_weeks
        WHERE community_id = c.id AND week = k.week
        ORDER BY events DESC
        LIMIT 4 * $5::bigint + 1
    ) AS w
),
candidates AS (
    SELECT user_id FROM ranked WHERE place <= 4 * $5::bigint
    UNION
    SELECT user_id FROM (SELECT user_id FROM rest ORDER BY events DESC LIMIT 4 * $5::bigint) AS r
),
bound AS MATERIALIZED (
    SELECT coalesce((SELECT sum(events) FROM ranked WHERE place = 4 * $5::bigint + 1), 0)
         + coalesce((SELECT events FROM rest ORDER BY events DESC OFFSET 4 * $5::bigint LIMIT 1), 0) AS most
),
pruned AS MATERIALIZED (
    SELECT x.user_id, sum(x.events)::bigint AS events
    FROM (
        SELECT user_id, events FROM rest
        WHERE user_id IN (SELECT user_id FROM candidates)
        UNION ALL
        SELECT u.user_id, u.events FROM rollup_user_days AS u, lists AS l
        WHERE u.community_id = ANY ($3::uuid[]) AND u.day = ANY (l.days)
          AND u.user_id IN (SELECT user_id FROM candidates)
        UNION ALL
        SELECT u.user_id, u.events FROM rollup_user_weeks AS u, lists AS l
        WHERE u.community_id = ANY ($3::uuid[]) AND u.week = ANY (l.weeks)
          AND u.user_id IN (SELECT user_id FROM candidates)
    ) AS x
    GROUP BY x.user_id
    ORDER BY events DESC, x.user_id
    LIMIT $5::bigint
),
proof AS MATERIALIZED (
    SELECT NOT $6::boolean
           AND ((SELECT most FROM bound) = 0
                OR ((SELECT count(*) FROM pruned) = $5::bigint
                    AND (SELECT min(events) FROM pruned) > (SELECT most FROM bound))) AS proven
),
everyone AS (
    SELECT x.user_id, sum(x.events)::bigint AS events
    FROM (
        SELECT user_id, events FROM rest
        UNION ALL
        SELECT u.user_id, u.events FROM rollup_user_days AS u, lists AS l
        WHERE u.community_id = ANY ($3::uuid[]) AND u.day = ANY (l.days)
        UNION ALL
        SELECT u.user_id, u.events FROM rollup_user_weeks AS u, lists AS l
        WHERE u.community_id = ANY ($3::uuid[]) AND u.week = ANY (l.weeks)
    ) AS x
    WHERE NOT (SELECT proven FROM proof)
    GROUP BY x.user_id
    ORDER BY events DESC, x.user_id
    LIMIT $5::bigint
)
SELECT user_id, events, (SELECT proven FROM proof) AS proven FROM pruned
WHERE (SELECT proven FROM proof)
UNION ALL
SELECT user_id, events, false FROM everyone
ORDER BY events DESC, user_id
