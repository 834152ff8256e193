-- The next rows of a partition detached for archiving, in primary key order,
-- after ($1, $2) (keyset pagination on the primary key (id, created_at)).
-- The table name is filled in by archive.rs from a validated name.
SELECT id, event_id, user_id, community_id, event_type, entity_type, entity_id,
       metadata::text AS metadata, ip_address, user_agent, created_at
FROM {table}
WHERE (id, created_at) > ($1::bigint, $2::timestamptz)
ORDER BY id, created_at
LIMIT $3
