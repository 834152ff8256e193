-- Events (exact) and unique users (sketched) per event type ($4: only that one).
SELECT r.event_type, sum(r.events)::bigint AS events,
       coalesce(round(activity_unique_users(r.users)), 0)::bigint AS unique_users
FROM activity_tiles(ARRAY[$1::timestamptz, $2::timestamptz], pieces => true) AS t
CROSS JOIN LATERAL (
    SELECT event_type, events, users
    FROM activity_tile_rows($3::uuid[], t.grain, t.tile_from, t.tile_to, $4::text, per_type => true)
    OFFSET 0  -- one index range per tile (README)
) AS r
GROUP BY r.event_type
ORDER BY events DESC, r.event_type
