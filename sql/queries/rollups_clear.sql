-- Empties every rollup bucket in [$1, $2), before rollups_rebuild.sql
-- refills them (see there).
WITH gone_events AS (
    DELETE FROM rollup_events WHERE bucket >= $1 AND bucket < $2
),
gone_users AS (
    DELETE FROM rollup_users WHERE bucket >= $1 AND bucket < $2
),
gone_entities AS (
    DELETE FROM rollup_entities WHERE bucket >= $1 AND bucket < $2
),
gone_sketches AS (
    DELETE FROM sketch_users WHERE bucket >= $1 AND bucket < $2
)
SELECT 1
