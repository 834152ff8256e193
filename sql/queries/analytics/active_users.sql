-- Daily, weekly and monthly active users as of $2: distinct users (sketched)
-- in the 24 hours, 7 days and 30 days before it, read as three consecutive
-- slots of one activity_tiles() call (the 23 days before the week, the 6
-- before the last day, the last day), so that each row is read once: the
-- DAU is the last slot's users, the WAU the last two's, the MAU all three's.
-- $1 is unused (kept for one parameter list).
SELECT coalesce(round(activity_unique_users(r.users) FILTER (WHERE t.slot = 3)), 0)::bigint AS dau,
       coalesce(round(activity_unique_users(r.users) FILTER (WHERE t.slot >= 2)), 0)::bigint AS wau,
       coalesce(round(activity_unique_users(r.users)), 0)::bigint AS mau
FROM activity_tiles(ARRAY[$2::timestamptz - interval '720 hours', $2::timestamptz - interval '168 hours',
                          $2::timestamptz - interval '24 hours', $2::timestamptz],
                    pieces => true, every_type => $4::text IS NULL) AS t
CROSS JOIN LATERAL (
    SELECT users
    FROM activity_tile_rows($3::uuid[], t.grain, t.tile_from, t.tile_to, $4::text)
    OFFSET 0  -- one index range per tile (README)
) AS r
WHERE $1::timestamptz IS NOT NULL
