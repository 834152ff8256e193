-- Top communities' candidates in a table of their own (top_communities.sql).
--
-- The threshold rule (0003_top_lists.sql) reads, for every hour, quarter-day
-- and day of a range, that bucket's communities most active first. It read
-- them from rollup_events' '*' rows, sorting each bucket's rows at query
-- time (a 90-day overview at 10M events: about 90 ms of its p95), because an
-- index there ordered by `events` would make every hot-path upsert of the
-- consumer a non-HOT update (0003). Only the compactor writes this table,
-- when it writes the hour, quarter-day and day rows it ranks
-- (rollups_compact_hour.sql, rollups_compact_day.sql), so the index costs
-- the consumer nothing. Counts of every event type together; neither the
-- every-community rows nor events without a community are here.
CREATE TABLE rollup_community_ranks (
    grain        SMALLINT NOT NULL CHECK (grain IN (60, 360, 1440)),
    bucket       TIMESTAMPTZ NOT NULL,
    community_id UUID NOT NULL,
    events       BIGINT NOT NULL,
    PRIMARY KEY (grain, bucket, community_id)
);
-- A bucket's communities, most active first.
CREATE INDEX rollup_community_ranks_rank_idx
    ON rollup_community_ranks (grain, bucket, events DESC) INCLUDE (community_id);

GRANT SELECT ON rollup_community_ranks TO activity_api;
ALTER TABLE rollup_community_ranks ENABLE ROW LEVEL SECURITY;
-- Admins only, like the every-community rows: a caller limited to some
-- communities sums their counts instead (top_communities.sql).
CREATE POLICY api_read ON rollup_community_ranks FOR SELECT TO activity_api USING (
    activity_scope_all()
);

-- What the compactor already wrote.
INSERT INTO rollup_community_ranks (grain, bucket, community_id, events)
SELECT grain, bucket, community_id, events
FROM rollup_events
WHERE grain IN (60, 360, 1440) AND event_type = '*'
  AND community_id NOT IN (activity_all_communities(), '00000000-0000-0000-0000-000000000000');
