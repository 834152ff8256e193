-- Events (exact) and unique users (sketched) per interval ($5: hour, day,
-- week or month) in the session's time zone, one row per interval in the
-- range, empty ones too. An hour starts wherever the zone's clock shows a
-- whole hour, so the repeated hour when clocks go back is two buckets, not
-- one, and the hour that clocks skip part of is shorter or longer (Lord
-- Howe moves its clocks by 30 minutes: its 01:00 lasts 90 minutes on those
-- days); offsets are whole quarter-hours, so those instants are among the
-- range's 15-minute boundaries. Days, weeks and months are calendar ones,
-- stepped in local time (date_trunc and calendar arithmetic on timestamps
-- without a zone), 23 or 25 hours long across a DST change; each begins at
-- the first instant the clock shows its local start (activity_local_start(),
-- sql/migrations/0017_local_starts.sql: where clocks change at midnight,
-- the end of a skipped midnight or the first of two). The first interval
-- is the one holding $1. The intervals, clipped
-- to the range, are the slots of one activity_tiles() call
-- (sql/migrations/0010_series_tiles.sql), each read tile by tile.
WITH hours AS (
    SELECT h
    FROM generate_series($1::timestamptz - interval '3 hours', $2::timestamptz - interval '1 microsecond',
                         interval '15 minutes') AS h
    WHERE $5::text = 'hour' AND extract(minute FROM h) = 0 AND extract(second FROM h) = 0
),
slots AS MATERIALIZED (
    SELECT row_number() OVER (ORDER BY start)::integer AS slot, start
    FROM (
        SELECT coalesce(max(h), $1::timestamptz) AS start FROM hours WHERE h <= $1::timestamptz
        HAVING $5::text = 'hour'
        UNION ALL
        SELECT h FROM hours WHERE h > $1::timestamptz
        UNION ALL
        SELECT activity_local_start(s)
        FROM generate_series(
            date_trunc($5::text, $1::timestamptz::timestamp),
            ($2::timestamptz - interval '1 microsecond')::timestamp,
            CASE $5::text WHEN 'day' THEN interval '1 day' WHEN 'week' THEN interval '1 week'
                          ELSE interval '1 month' END
        ) AS s
        WHERE $5::text <> 'hour'
    ) AS starts
),
-- Slot i is [bounds[i], bounds[i + 1]): each interval's start, the first
-- clipped to the range, then the range's end.
tiles AS MATERIALIZED (
    SELECT t.slot, t.grain, t.tile_from, t.tile_to
    FROM (SELECT array_agg(greatest(start, $1::timestamptz) ORDER BY slot) || $2::timestamptz AS bounds
          FROM slots) AS b
    CROSS JOIN LATERAL activity_tiles(b.bounds, pieces => true, every_type => $4::text IS NULL) AS t
),
counted AS (
    SELECT t.slot, r.events, r.users
    FROM tiles AS t
    CROSS JOIN LATERAL (
        SELECT events, users
        FROM activity_tile_rows($3::uuid[], t.grain, t.tile_from, t.tile_to, $4::text)
        OFFSET 0  -- one index range per tile (README)
    ) AS r
)
SELECT s.start, coalesce(sum(r.events), 0)::bigint AS events,
       coalesce(round(activity_unique_users(r.users)), 0)::bigint AS unique_users
FROM slots AS s
LEFT JOIN counted AS r ON r.slot = s.slot
GROUP BY s.start
ORDER BY s.start
