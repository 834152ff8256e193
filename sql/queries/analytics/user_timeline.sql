-- A page of one user's activity, newest first. The cursor is the last row of
-- the previous page: ($5 created_at, $6 id), or NULLs for the first page.
SELECT id, event_id, event_type, community_id, entity_type, entity_id, metadata, created_at
FROM activities
WHERE user_id = $1 AND created_at >= $2 AND created_at < $3
  AND ($4::uuid[] IS NULL OR community_id = ANY ($4::uuid[]))
  AND ($5::timestamptz IS NULL OR (created_at, id) < ($5::timestamptz, $6::bigint))
ORDER BY created_at DESC, id DESC
LIMIT $7
