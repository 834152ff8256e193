-- Events (exact) and unique users (HyperLogLog: exact below ~1,000 users,
-- standard error 0.81% above) in the range, of every type or of type $4,
-- read tile by tile (activity_tiles()): for every type, a 15-minute tile's
-- rows of each type, a longer tile's rows of every type together ('*').
SELECT coalesce(sum(r.events), 0)::bigint AS events,
       coalesce(round(activity_unique_users(r.users)), 0)::bigint AS unique_users
FROM activity_tiles(ARRAY[$1::timestamptz, $2::timestamptz], pieces => true, every_type => $4::text IS NULL) AS t
CROSS JOIN LATERAL (
    SELECT events, users
    FROM activity_tile_rows($3::uuid[], t.grain, t.tile_from, t.tile_to, $4::text)
    OFFSET 0  -- one index range per tile (README)
) AS r
