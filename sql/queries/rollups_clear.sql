-- Empties every rollup bucket in [$1, $2), of every grain, before
-- rollups_rebuild.sql refills them (see there).
WITH gone_events AS (
    DELETE FROM rollup_events
    WHERE grain IN (15, 60, 360, 1440) AND bucket >= $1 AND bucket < $2
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
