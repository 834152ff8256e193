-- Rollups the analytics API reads, maintained in the same transaction that
-- stores the events (sql/queries/insert_activities.sql), and row-level
-- security for the API's role.
--
-- Buckets are 15 minutes of UTC time. Every time zone in use today is offset
-- from UTC by a multiple of 15 minutes (Asia/Kolkata +05:30, Asia/Kathmandu
-- +05:45), so any hour, day, week or month in any zone is a whole number of
-- buckets: time series in any zone are exact sums of rollup rows.
--
-- Events without a community are counted under the nil UUID (NO_COMMUNITY in
-- the API), since a primary key column cannot be NULL.

CREATE TABLE rollup_events (
    community_id UUID NOT NULL,
    bucket       TIMESTAMPTZ NOT NULL,
    event_type   TEXT NOT NULL,
    events       BIGINT NOT NULL,
    PRIMARY KEY (community_id, bucket, event_type)
);
CREATE INDEX rollup_events_bucket_idx ON rollup_events (bucket);

-- One row per user active in a community in a bucket, per event type: exact
-- unique users (overall and per type), DAU/WAU/MAU and top users.
CREATE TABLE rollup_users (
    community_id UUID NOT NULL,
    bucket       TIMESTAMPTZ NOT NULL,
    user_id      UUID NOT NULL,
    event_type   TEXT NOT NULL,
    events       BIGINT NOT NULL,
    PRIMARY KEY (community_id, bucket, user_id, event_type)
);
CREATE INDEX rollup_users_bucket_idx ON rollup_users (bucket);

-- Events per entity (repository, hackathon, ...) per community per bucket: top entities.
CREATE TABLE rollup_entities (
    community_id UUID NOT NULL,
    bucket       TIMESTAMPTZ NOT NULL,
    entity_type  TEXT NOT NULL,
    entity_id    TEXT NOT NULL,
    events       BIGINT NOT NULL,
    PRIMARY KEY (community_id, bucket, entity_type, entity_id)
);

-- What the consumer has stored, per topic partition: the API's freshness.
CREATE TABLE consumer_progress (
    topic       TEXT NOT NULL,
    partition   INTEGER NOT NULL,
    next_offset BIGINT NOT NULL,
    stored_at   TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (topic, partition)
);

CREATE FUNCTION activity_bucket(at TIMESTAMPTZ) RETURNS TIMESTAMPTZ
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS
$$ SELECT date_bin('15 minutes', at, TIMESTAMPTZ '2000-01-01 00:00:00+00') $$;

-- The API's role. It cannot log in: the API connects with DATABASE_READ_URL
-- and switches to it (SET LOCAL ROLE) in every transaction, after setting the
-- caller's scope:
--   activity.scope_all          'on' for an admin
--   activity.scope_communities  comma-separated community UUIDs
--   activity.scope_user         the user whose own rows may be read
-- Roles are cluster-wide, so several databases on one server share it.
DO $$
BEGIN
    CREATE ROLE activity_api NOLOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END
$$;

-- Only the parents: partitions are created later and granted nothing, so the
-- role cannot read a partition by name (where no policy would apply).
GRANT USAGE ON SCHEMA public TO activity_api;
GRANT SELECT ON activities, users, communities, rollup_events, rollup_users,
    rollup_entities, consumer_progress TO activity_api;

CREATE FUNCTION activity_scope_all() RETURNS BOOLEAN
LANGUAGE sql STABLE AS
$$ SELECT coalesce(current_setting('activity.scope_all', true), '') = 'on' $$;

CREATE FUNCTION activity_scope_communities() RETURNS UUID[]
LANGUAGE sql STABLE AS
$$ SELECT coalesce(string_to_array(nullif(current_setting('activity.scope_communities', true), ''), ',')::uuid[], '{}') $$;

CREATE FUNCTION activity_scope_user() RETURNS UUID
LANGUAGE sql STABLE AS
$$ SELECT nullif(current_setting('activity.scope_user', true), '')::uuid $$;

ALTER TABLE activities ENABLE ROW LEVEL SECURITY;
ALTER TABLE rollup_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE rollup_users ENABLE ROW LEVEL SECURITY;
ALTER TABLE rollup_entities ENABLE ROW LEVEL SECURITY;
ALTER TABLE communities ENABLE ROW LEVEL SECURITY;
ALTER TABLE users ENABLE ROW LEVEL SECURITY;

-- The table owner (the consumer, migrations) is not subject to these.
CREATE POLICY api_read ON activities FOR SELECT TO activity_api USING (
    activity_scope_all()
    OR community_id = ANY (activity_scope_communities())
    OR user_id = activity_scope_user()
);
CREATE POLICY api_read ON rollup_events FOR SELECT TO activity_api USING (
    activity_scope_all() OR community_id = ANY (activity_scope_communities())
);
CREATE POLICY api_read ON rollup_users FOR SELECT TO activity_api USING (
    activity_scope_all() OR community_id = ANY (activity_scope_communities())
);
CREATE POLICY api_read ON rollup_entities FOR SELECT TO activity_api USING (
    activity_scope_all() OR community_id = ANY (activity_scope_communities())
);
CREATE POLICY api_read ON communities FOR SELECT TO activity_api USING (
    activity_scope_all() OR id = ANY (activity_scope_communities())
);
-- A user's row (email) is visible to an admin and to the user alone.
CREATE POLICY api_read ON users FOR SELECT TO activity_api USING (
    activity_scope_all() OR id = activity_scope_user()
);
-- Freshness is not tenant data.
ALTER TABLE consumer_progress ENABLE ROW LEVEL SECURITY;
CREATE POLICY api_read ON consumer_progress FOR SELECT TO activity_api USING (true);
