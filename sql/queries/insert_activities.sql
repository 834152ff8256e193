-- Claims each event_id in activity_event_ids and inserts into activities only
-- the rows whose id was new: an id seen before (redelivery, client retry,
-- replay) is skipped whatever its created_at. Returns nothing; the command
-- tag's row count is the number of events stored.
WITH input AS (
    SELECT *
    FROM unnest(
        $1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::text[],
        $6::text[], $7::text[], $8::text[], $9::text[], $10::timestamptz[]
    ) AS t (event_id, user_id, community_id, event_type, entity_type,
            entity_id, metadata, ip_address, user_agent, created_at)
),
fresh AS (
    INSERT INTO activity_event_ids (event_id, created_at)
    SELECT event_id, created_at FROM input
    -- One lock order for every batch: concurrent batches holding the same
    -- ids wait for each other instead of deadlocking.
    ORDER BY event_id
    ON CONFLICT (event_id) DO NOTHING
    RETURNING event_id
)
INSERT INTO activities (event_id, user_id, community_id, event_type, entity_type,
                        entity_id, metadata, ip_address, user_agent, created_at)
SELECT i.event_id, i.user_id, i.community_id, i.event_type, i.entity_type,
       i.entity_id, i.metadata::jsonb, i.ip_address, i.user_agent, i.created_at
FROM input AS i
JOIN fresh AS f USING (event_id)
