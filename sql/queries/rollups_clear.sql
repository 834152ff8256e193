-- Empties every rollup bucket in [$1, $2), of every grain, before
-- rollups_rebuild.sql refills them (see there).
WITH gone_events AS (
    DELETE FROM rollup_events
    WHERE (grain = 15 OR grain = ANY (activity_compacted_grains())) AND bucket >= $1 AND bucket < $2
),
gone_cuts AS (
    DELETE FROM rollup_day_cuts WHERE day >= $1 AND day < $2
),
gone_ranks AS (
    DELETE FROM rollup_community_ranks WHERE bucket >= $1 AND bucket < $2
),
gone_users AS (
    DELETE FROM rollup_users WHERE bucket >= $1 AND bucket < $2
),
gone_entities AS (
    DELETE FROM rollup_entities WHERE bucket >= $1 AND bucket < $2
)
SELECT 1
