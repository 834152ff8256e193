-- One user's events in the range (from the raw rows: one user's activity is
-- small, and the (user_id, created_at) index finds it).
SELECT count(*) AS events, min(created_at) AS first_seen, max(created_at) AS last_seen
FROM activities
WHERE user_id = $1 AND created_at >= $2 AND created_at < $3
  AND ($4::uuid[] IS NULL OR community_id = ANY ($4::uuid[]))
