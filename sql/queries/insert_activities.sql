-- Claims each event_id in activity_event_ids and inserts into activities only
-- the rows whose id was new: an id seen before (redelivery, client retry,
-- replay) is skipped whatever its created_at. The rollups are incremented
-- from exactly the rows inserted, in the same statement, so they always agree
-- with activities. Returns the number of events stored.
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
),
stored AS (
    INSERT INTO activities (event_id, user_id, community_id, event_type, entity_type,
                            entity_id, metadata, ip_address, user_agent, created_at)
    SELECT i.event_id, i.user_id, i.community_id, i.event_type, i.entity_type,
           i.entity_id, i.metadata::jsonb, i.ip_address, i.user_agent, i.created_at
    FROM input AS i
    JOIN fresh AS f USING (event_id)
    RETURNING coalesce(community_id, '00000000-0000-0000-0000-000000000000'::uuid) AS community_id,
              activity_bucket(created_at) AS bucket,
              event_type, user_id, entity_type, entity_id
),
-- Rollup rows are upserted in key order, for the same reason. Each event
-- counts in its community's row and in every community's, for its type, with
-- its user in the rows' sketches (sql/migrations/0002).
events_rolled AS (
    INSERT INTO rollup_events AS r (community_id, grain, bucket, event_type, events, users)
    SELECT k.community_id, 15, bucket, event_type, count(*),
           hll_add_agg(hll_hash_bytea(uuid_send(user_id)), 14) FILTER (WHERE user_id IS NOT NULL)
    FROM stored
    CROSS JOIN LATERAL (VALUES (stored.community_id), (activity_all_communities())) AS k (community_id)
    GROUP BY 1, 3, 4
    ORDER BY 1, 3, 4
    ON CONFLICT (community_id, grain, bucket, event_type)
    DO UPDATE SET events = r.events + excluded.events,
                  users = coalesce(hll_union(r.users, excluded.users), r.users, excluded.users)
),
-- The days and hours written to lose their day and hour rows until the
-- compactor sums them again (the caller holds the hours' shared locks:
-- sql/migrations/0002 and 0003).
dirtied AS (
    INSERT INTO rollup_dirty_days (day)
    SELECT DISTINCT activity_day(bucket) FROM stored
    ORDER BY 1
    ON CONFLICT (day) DO NOTHING
),
hours_dirtied AS (
    INSERT INTO rollup_dirty_hours (hour)
    SELECT DISTINCT date_bin('1 hour', bucket, TIMESTAMPTZ '2000-01-01 00:00:00+00') FROM stored
    WHERE bucket >= activity_day(now()) - interval '1 day'
    ORDER BY 1
    ON CONFLICT (hour) DO NOTHING
),
users_rolled AS (
    INSERT INTO rollup_users AS r (community_id, bucket, user_id, event_type, events)
    SELECT community_id, bucket, user_id, event_type, count(*)
    FROM stored
    WHERE user_id IS NOT NULL
    GROUP BY 1, 2, 3, 4
    ORDER BY 1, 2, 3, 4
    ON CONFLICT (community_id, bucket, user_id, event_type)
    DO UPDATE SET events = r.events + excluded.events
),
entities_rolled AS (
    INSERT INTO rollup_entities AS r (community_id, bucket, entity_type, entity_id, events)
    SELECT community_id, bucket, entity_type, entity_id, count(*)
    FROM stored
    WHERE entity_type IS NOT NULL AND entity_id IS NOT NULL
    GROUP BY 1, 2, 3, 4
    ORDER BY 1, 2, 3, 4
    ON CONFLICT (community_id, bucket, entity_type, entity_id)
    DO UPDATE SET events = r.events + excluded.events
)
SELECT count(*) FROM stored
