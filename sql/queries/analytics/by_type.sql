-- Events (exact) and unique users (sketched) per event type ($4: only that one).
SELECT r.event_type, sum(r.events)::bigint AS events,
       coalesce(round(activity_unique_users(r.users)), 0)::bigint AS unique_users
FROM activity_tiles(ARRAY[$1::timestamptz, $2::timestamptz], pieces => true) AS t
CROSS JOIN LATERAL (
    SELECT event_type, events, users FROM rollup_events
    WHERE community_id = ANY (coalesce($3::uuid[], ARRAY[activity_all_communities()]))
      AND grain = t.grain AND bucket >= t.tile_from AND bucket < t.tile_to
      AND activity_type_rows(t.grain, event_type, $4::text, true)
    OFFSET 0  -- one index range per tile (README)
) AS r
GROUP BY r.event_type
ORDER BY events DESC, r.event_type
