-- Events and unique users per event type.
SELECT e.event_type, e.events, coalesce(u.users, 0) AS unique_users
FROM (SELECT event_type, sum(events)::bigint AS events FROM rollup_events
      WHERE bucket >= $1::timestamptz AND bucket < $2::timestamptz
  AND ($3::uuid[] IS NULL OR community_id = ANY ($3::uuid[]))
  AND ($4::text IS NULL OR event_type = $4::text) GROUP BY event_type) AS e
LEFT JOIN (SELECT event_type, count(DISTINCT user_id) AS users FROM rollup_users
           WHERE bucket >= $1::timestamptz AND bucket < $2::timestamptz
  AND ($3::uuid[] IS NULL OR community_id = ANY ($3::uuid[]))
  AND ($4::text IS NULL OR event_type = $4::text) GROUP BY event_type) AS u USING (event_type)
ORDER BY e.events DESC, e.event_type
