-- The entities with the most events ($5: how many). $4 is unused here
-- (rollup_entities is not kept per event type).
SELECT entity_type, entity_id, sum(events)::bigint AS events
FROM rollup_entities
WHERE bucket >= $1::timestamptz AND bucket < $2::timestamptz
  AND ($3::uuid[] IS NULL OR community_id = ANY ($3::uuid[]))
  AND $4::text IS NULL
GROUP BY entity_type, entity_id
ORDER BY events DESC, entity_type, entity_id
LIMIT $5
