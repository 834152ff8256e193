-- Top lists (top communities, top users, top entities) that stay fast over
-- long ranges and stay exact.
--
-- A top list over [from, to) is the sum of many per-bucket counts, ranked.
-- Summing every community's (or user's) count over 90 days is proportional
-- to the data; instead the queries (sql/queries/analytics/top_*.sql) use the
-- threshold rule of Fagin's algorithms: for every whole clean UTC day of the
-- range they read only the day's M + 1 largest counts (an index in count
-- order), take the first M of each day as candidates, and sum the
-- candidates' exact totals. Someone outside every day's first M has at most
-- the (M + 1)-th count of each day, so when the last of the top `limit`
-- candidates has more than the sum of those, no one else can be in the
-- list and the answer is exact. When it is not (flat data, where everyone
-- has about as much as everyone else), the API sums every count instead:
-- always exact, fast when activity is skewed, as it is on real platforms.
--
-- Day rows of users and entities, summed over every event type, written by
-- the compactor (rollups_compact_day.sql) with the day rows of
-- rollup_events; like those they answer only for days that are not dirty.

CREATE TABLE rollup_user_days (
    community_id UUID NOT NULL,
    day          TIMESTAMPTZ NOT NULL,
    user_id      UUID NOT NULL,
    events       BIGINT NOT NULL,
    PRIMARY KEY (community_id, user_id, day)
);
-- A day's users, most active first: the candidates.
CREATE INDEX rollup_user_days_rank_idx ON rollup_user_days (community_id, day, events DESC) INCLUDE (user_id);
-- Compaction replaces a whole day.
CREATE INDEX rollup_user_days_day_idx ON rollup_user_days (day);

CREATE TABLE rollup_entity_days (
    community_id UUID NOT NULL,
    day          TIMESTAMPTZ NOT NULL,
    entity_type  TEXT NOT NULL,
    entity_id    TEXT NOT NULL,
    events       BIGINT NOT NULL,
    PRIMARY KEY (community_id, entity_type, entity_id, day)
);
CREATE INDEX rollup_entity_days_rank_idx ON rollup_entity_days (community_id, day, events DESC) INCLUDE (entity_type, entity_id);
CREATE INDEX rollup_entity_days_day_idx ON rollup_entity_days (day);
-- Compaction reads a day's 15-minute entity rows.
CREATE INDEX rollup_entities_bucket_idx ON rollup_entities (bucket);

-- A day's communities, most active first (every type together), and one
-- community's days: the candidates of top communities and their totals.
CREATE INDEX rollup_events_day_rank_idx ON rollup_events (bucket, events DESC) INCLUDE (community_id)
    WHERE grain = 1440 AND event_type = '*';
CREATE INDEX rollup_events_community_days_idx ON rollup_events (community_id, bucket) INCLUDE (events)
    WHERE grain = 1440 AND event_type = '*';

GRANT SELECT ON rollup_user_days, rollup_entity_days TO activity_api;
ALTER TABLE rollup_user_days ENABLE ROW LEVEL SECURITY;
ALTER TABLE rollup_entity_days ENABLE ROW LEVEL SECURITY;
CREATE POLICY api_read ON rollup_user_days FOR SELECT TO activity_api USING (
    activity_scope_all() OR community_id = ANY (activity_scope_communities())
);
CREATE POLICY api_read ON rollup_entity_days FOR SELECT TO activity_api USING (
    activity_scope_all() OR community_id = ANY (activity_scope_communities())
);

-- Days compacted before these tables existed have no rows in them yet: mark
-- them dirty, so queries read their 15-minute rows until the compactor has
-- written their day rows.
INSERT INTO rollup_dirty_days (day)
SELECT DISTINCT activity_day(bucket) FROM rollup_events WHERE grain = 1440
ON CONFLICT DO NOTHING;
