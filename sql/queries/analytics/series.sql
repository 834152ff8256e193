-- Events (exact) and unique users (sketched) per interval ($5: hour, day, week or month) in the
-- session's time zone, one row per interval in the range, empty ones too.
-- Hours are absolute hours aligned to the zone's offset (date_bin), so the
-- repeated hour when clocks go back is two buckets, not one; days, weeks and
-- months are calendar ones (date_trunc), 23 or 25 hours long across a DST change.
WITH slots AS (
    SELECT generate_series(
        CASE WHEN $5::text = 'hour' THEN date_bin('1 hour', $1::timestamptz, date_trunc('day', $1::timestamptz))
             ELSE date_trunc($5::text, $1::timestamptz) END,
        $2::timestamptz - interval '1 microsecond',
        CASE $5::text WHEN 'hour' THEN interval '1 hour' WHEN 'day' THEN interval '1 day'
                      WHEN 'week' THEN interval '1 week' ELSE interval '1 month' END
    ) AS start
),
counts AS (
    SELECT CASE WHEN $5::text = 'hour' THEN date_bin('1 hour', bucket, date_trunc('day', $1::timestamptz)) ELSE date_trunc($5::text, bucket) END AS start, sum(events)::bigint AS events
    FROM rollup_events WHERE bucket >= $1::timestamptz AND bucket < $2::timestamptz
  AND community_id = ANY (coalesce($3::uuid[], ARRAY[activity_all_communities()]))
  AND ($4::text IS NULL OR event_type = $4::text) GROUP BY 1
),
uniques AS (
    SELECT CASE WHEN $5::text = 'hour' THEN date_bin('1 hour', bucket, date_trunc('day', $1::timestamptz)) ELSE date_trunc($5::text, bucket) END AS start, round(hll_cardinality(hll_union_agg(users)))::bigint AS users
    FROM sketch_users WHERE bucket >= $1::timestamptz AND bucket < $2::timestamptz
  AND community_id = ANY (coalesce($3::uuid[], ARRAY[activity_all_communities()]))
  AND event_type = coalesce($4::text, '*') GROUP BY 1
)
SELECT s.start, coalesce(c.events, 0) AS events, coalesce(u.users, 0) AS unique_users
FROM slots AS s
LEFT JOIN counts AS c USING (start)
LEFT JOIN uniques AS u USING (start)
ORDER BY s.start
