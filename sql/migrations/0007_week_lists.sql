-- Week lists of users and entities, so that the threshold rule (0003_top_lists.sql) proves
-- the top users (and entities) of mid-sized communities.
--
-- The rule's bound is the sum, over the lists it reads, of each list's
-- (4 × limit + 1)-th count. With a list per day, a community whose users
-- are each active a few times a day adds at least 1 per day: 90 or more over
-- 90 days, more than its tenth user's total, so the rule could not prove
-- the list and every count was summed (bench/analytics at 10M events: 80 to
-- 130 ms for communities with 60,000 to 120,000 events in 90 days). A
-- week's list has a larger (4 × limit + 1)-th count but there are a
-- seventh as many lists, and the sum is much smaller.
--
-- Weeks start on Mondays, 00:00 UTC (activity_week()). A week's row of a
-- user is the sum of the user's day rows of that week: when the compactor
-- replaces a day's rows it takes the old ones out of the week's rows
-- (rollups_uncompact_day.sql) and adds the new ones (rollups_compact_day.sql),
-- in the same transaction, holding the week's lock (rollups.rs); a rebuild
-- sums every week it touched again from the day rows
-- (rollups_sum_weeks.sql), repairing them. A query reads a week's list only
-- when the range covers the week whole and none of its days is dirty, so
-- the week row is the sum of current day rows. Costs measured at 10M
-- events: 209 MB (users) and 24 MB (entities) per million events; a day's
-- compaction 11.0 s against 7.4 and 10.2 s without weeks (two runs), and a
-- day compacted again after late events about 8 s more (taking its old
-- rows out of the weeks).
CREATE FUNCTION activity_week(at TIMESTAMPTZ) RETURNS TIMESTAMPTZ
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS
$$ SELECT date_bin('7 days', at, TIMESTAMPTZ '2000-01-03 00:00:00+00') $$;

-- The lists a top query reads for the whole clean UTC days of its range:
-- the weeks all 7 of whose days are among them (their week rows), and the
-- other days (their day rows). The one place that decides when a week's
-- rows answer for its days.
CREATE FUNCTION activity_week_lists(whole_days TIMESTAMPTZ[],
                                    OUT weeks TIMESTAMPTZ[], OUT days TIMESTAMPTZ[])
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    WITH whole AS (
        SELECT activity_week(d) AS week FROM unnest(whole_days) AS d
        GROUP BY 1 HAVING count(DISTINCT d) = 7
    )
    SELECT coalesce((SELECT array_agg(week ORDER BY week) FROM whole), '{}'),
           coalesce((SELECT array_agg(d ORDER BY d) FROM unnest(whole_days) AS d
                     WHERE activity_week(d) NOT IN (SELECT week FROM whole)), '{}')
$$;

CREATE TABLE rollup_user_weeks (
    community_id UUID NOT NULL,
    week         TIMESTAMPTZ NOT NULL,
    user_id      UUID NOT NULL,
    events       BIGINT NOT NULL,
    -- A candidate's weeks, read from the index alone.
    PRIMARY KEY (community_id, user_id, week) INCLUDE (events)
);
-- A week's users, most active first: the candidates.
CREATE INDEX rollup_user_weeks_rank_idx ON rollup_user_weeks (community_id, week, events DESC) INCLUDE (user_id);

GRANT SELECT ON rollup_user_weeks TO activity_api;
ALTER TABLE rollup_user_weeks ENABLE ROW LEVEL SECURITY;
CREATE POLICY api_read ON rollup_user_weeks FOR SELECT TO activity_api USING (
    activity_scope_all() OR community_id = ANY (activity_scope_communities())
);

-- The days compacted so far.
INSERT INTO rollup_user_weeks (community_id, week, user_id, events)
SELECT community_id, activity_week(day), user_id, sum(events)
FROM rollup_user_days
GROUP BY 1, 2, 3;

-- Entities the same way: a week's row of an entity is the sum of its day
-- rows of that week (top_entities.sql reads week lists as top_users.sql does).
CREATE TABLE rollup_entity_weeks (
    community_id UUID NOT NULL,
    week         TIMESTAMPTZ NOT NULL,
    entity_type  TEXT NOT NULL,
    entity_id    TEXT NOT NULL,
    events       BIGINT NOT NULL,
    PRIMARY KEY (community_id, entity_type, entity_id, week) INCLUDE (events)
);
CREATE INDEX rollup_entity_weeks_rank_idx ON rollup_entity_weeks (community_id, week, events DESC) INCLUDE (entity_type, entity_id);

GRANT SELECT ON rollup_entity_weeks TO activity_api;
ALTER TABLE rollup_entity_weeks ENABLE ROW LEVEL SECURITY;
CREATE POLICY api_read ON rollup_entity_weeks FOR SELECT TO activity_api USING (
    activity_scope_all() OR community_id = ANY (activity_scope_communities())
);

INSERT INTO rollup_entity_weeks (community_id, week, entity_type, entity_id, events)
SELECT community_id, activity_week(day), entity_type, entity_id, sum(events)
FROM rollup_entity_days
GROUP BY 1, 2, 3, 4;
