-- Refills every 15-minute rollup bucket in [$1, $2) from the rows in
-- activities, once rollups_clear.sql emptied them (the days touched are then
-- compacted: rollups_compact_day.sql).
-- Run for one week's part of a rebuild's range at a time, in one
-- transaction after LOCK TABLE on every rollup table and
-- rollup_dirty_days IN EXCLUSIVE MODE (rollups.rs): consumers wait (their insert statement
-- locks the rollups before it writes activities), so none of their rows is
-- counted twice or missed. $1 and $2 are bucket boundaries.
WITH source AS (
    SELECT coalesce(community_id, '00000000-0000-0000-0000-000000000000'::uuid) AS community_id,
           activity_bucket(created_at) AS bucket,
           event_type, user_id, entity_type, entity_id
    FROM activities
    WHERE created_at >= $1 AND created_at < $2
),
events_rolled AS (
    INSERT INTO rollup_events (community_id, grain, bucket, event_type, events, users)
    SELECT k.community_id, 15, bucket, event_type, count(*),
           hll_add_agg(hll_hash_bytea(uuid_send(user_id)), 14) FILTER (WHERE user_id IS NOT NULL)
    FROM source
    CROSS JOIN LATERAL (VALUES (source.community_id), (activity_all_communities())) AS k (community_id)
    GROUP BY 1, 3, 4
    ORDER BY 1, 2, 3, 4  -- key order (rollups_compact_day.sql)
),
users_rolled AS (
    INSERT INTO rollup_users (community_id, bucket, user_id, event_type, events)
    SELECT community_id, bucket, user_id, event_type, count(*) FROM source
    WHERE user_id IS NOT NULL GROUP BY 1, 2, 3, 4
    ORDER BY 1, 2, 3, 4
),
entities_rolled AS (
    INSERT INTO rollup_entities (community_id, bucket, entity_type, entity_id, events)
    SELECT community_id, bucket, entity_type, entity_id, count(*) FROM source
    WHERE entity_type IS NOT NULL AND entity_id IS NOT NULL GROUP BY 1, 2, 3, 4
    ORDER BY 1, 2, 3, 4
)
SELECT count(*) FROM source
