-- The benchmarks' bulk load: $1 events over the $4 seconds before $3
-- (the analytics benchmark: the 90 days before now), for 2,000 communities of very different sizes (the largest gets
-- about a tenth of all events, most get a few hundred) and 1,000,000 users
-- as unequally active as on real platforms (the same cubic law: the most
-- active 1% of users do about a fifth of the events, the ten most active 2%
-- of them), in the realistic mix of the ten event types. Rollups are then rebuilt from
-- these rows (`Store::rebuild_rollups`), the same definition the consumer
-- maintains incrementally (tests/e2e/analytics.rs checks they agree).
-- Run after load_profiles.sql, in slices ($2 = first row number).
WITH raw AS (
    SELECT i,
           floor(2000 * power(random(), 3))::int AS c,
           floor(1000000 * power(random(), 3))::int AS u,
           random() AS t,
           $3::timestamptz - random() * make_interval(secs => $4::float8) AS at
    FROM generate_series($2::bigint, $2::bigint + $1::bigint - 1) AS i
),
typed AS (
    SELECT *, CASE
        WHEN t < 0.42 THEN 'user.login'
        WHEN t < 0.54 THEN 'member.activated'
        WHEN t < 0.65 THEN 'github.push'
        WHEN t < 0.75 THEN 'webhook.triggered'
        WHEN t < 0.81 THEN 'github.pr.opened'
        WHEN t < 0.87 THEN 'member.created'
        WHEN t < 0.92 THEN 'event.created'
        WHEN t < 0.96 THEN 'user.signup'
        WHEN t < 0.98 THEN 'hackathon.created'
        ELSE 'community.created' END AS event_type
    FROM raw
),
ids AS (
    INSERT INTO activity_event_ids (event_id, created_at)
    SELECT md5('e' || i)::uuid, at FROM typed
)
INSERT INTO activities (event_id, user_id, community_id, event_type, entity_type, entity_id,
                        metadata, ip_address, user_agent, created_at)
SELECT md5('e' || i)::uuid,
       CASE WHEN event_type = 'webhook.triggered' THEN NULL ELSE md5('u' || u)::uuid END,
       md5('c' || c)::uuid,
       event_type,
       CASE WHEN event_type LIKE 'github.%' THEN 'repository'
            WHEN event_type = 'event.created' THEN 'event'
            WHEN event_type = 'hackathon.created' THEN 'hackathon' END,
       CASE WHEN event_type LIKE 'github.%' THEN 'repo' || (c * 10 + u % 10)
            WHEN event_type IN ('event.created', 'hackathon.created') THEN 'e' || (i % 5000) END,
       jsonb_build_object('n', i % 100, 'source', 'bench'),
       '10.0.' || (u % 250) || '.' || (i % 250),
       'Mozilla/5.0 (X11; Linux x86_64)',
       at
FROM typed
