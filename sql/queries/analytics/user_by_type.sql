SELECT event_type, count(*) AS events
FROM activities
WHERE user_id = $1 AND created_at >= $2 AND created_at < $3
  AND ($4::uuid[] IS NULL OR community_id = ANY ($4::uuid[]))
GROUP BY event_type
ORDER BY events DESC, event_type
