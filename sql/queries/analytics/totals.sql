-- Events and unique users in the range.
SELECT (SELECT coalesce(sum(events), 0)::bigint FROM rollup_events
        WHERE bucket >= $1::timestamptz AND bucket < $2::timestamptz
  AND ($3::uuid[] IS NULL OR community_id = ANY ($3::uuid[]))
  AND ($4::text IS NULL OR event_type = $4::text)) AS events,
       (SELECT count(DISTINCT user_id) FROM rollup_users
        WHERE bucket >= $1::timestamptz AND bucket < $2::timestamptz
  AND ($3::uuid[] IS NULL OR community_id = ANY ($3::uuid[]))
  AND ($4::text IS NULL OR event_type = $4::text)) AS unique_users
