-- Moves the rows a restore staged in restore_rows (a temporary table) into
-- activities, in the month [$1, $2): each event_id once, and none that is
-- already there (a second restore, or rows that arrived after the archive).
-- Run after restore_references.sql. Rollups are not touched: they outlived
-- the raw rows. Returns the rows inserted.
WITH fresh AS (
    SELECT DISTINCT ON (r.event_id) r.*
    FROM restore_rows AS r
    WHERE NOT EXISTS (
        SELECT 1 FROM activities AS a
        WHERE a.created_at >= $1::timestamptz AND a.created_at < $2::timestamptz AND a.event_id = r.event_id
    )
    ORDER BY r.event_id, r.id
),
ids AS (
    INSERT INTO activity_event_ids (event_id, created_at)
    SELECT event_id, created_at FROM fresh
    ON CONFLICT DO NOTHING
),
inserted AS (
    INSERT INTO activities (id, event_id, user_id, community_id, event_type, entity_type,
                            entity_id, metadata, ip_address, user_agent, created_at)
    SELECT id, event_id, user_id, community_id, event_type, entity_type,
           entity_id, metadata::jsonb, ip_address, user_agent, created_at
    FROM fresh
    RETURNING 1
)
SELECT count(*) FROM inserted
