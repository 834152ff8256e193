-- The most active users ($5: how many).
SELECT user_id, sum(events)::bigint AS events
FROM rollup_users
WHERE bucket >= $1::timestamptz AND bucket < $2::timestamptz
  AND ($3::uuid[] IS NULL OR community_id = ANY ($3::uuid[]))
  AND ($4::text IS NULL OR event_type = $4::text)
GROUP BY user_id
ORDER BY events DESC, user_id
LIMIT $5
