-- Data lifecycle (README: "Retention"): tiers of partitions, the catalog of
-- archived ones, and holds on restored months.
--
-- Tiers by age in whole months (retention.hot_months, retention.warm_months):
--   hot   every index;
--   warm  only what the API reads old raw rows through: the primary key, the
--         (user_id, created_at) index (GET /user/{id}) and the BRIN on
--         created_at (rollup rebuilds, archiving);
--   cold  archived to object storage as Parquet, then dropped.
--
-- PostgreSQL cannot drop one partition's copy of an index defined on the
-- parent, so the three hot-only indexes move from the parent to each
-- partition, created by activity_hot_indexes() and dropped by
-- activity_warm_indexes().
DROP INDEX activities_community_type_created_idx;
DROP INDEX activities_type_created_idx;
DROP INDEX activities_metadata_gin;

CREATE FUNCTION activity_hot_indexes(partition TEXT) RETURNS VOID
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON %I (community_id, event_type, created_at)',
                   partition || '_community_type_created_idx', partition);
    EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON %I (event_type, created_at)',
                   partition || '_type_created_idx', partition);
    EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON %I USING gin (metadata jsonb_path_ops)',
                   partition || '_metadata_gin', partition);
END
$$;

CREATE FUNCTION activity_warm_indexes(partition TEXT) RETURNS VOID
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('DROP INDEX IF EXISTS %I', partition || '_community_type_created_idx');
    EXECUTE format('DROP INDEX IF EXISTS %I', partition || '_type_created_idx');
    EXECUTE format('DROP INDEX IF EXISTS %I', partition || '_metadata_gin');
END
$$;

-- As in 0001, and a new partition gets the hot indexes. A partition that
-- exists keeps its tier: a late event for a warm month adds no index back.
CREATE OR REPLACE FUNCTION activity_ensure_partition(at TIMESTAMPTZ) RETURNS TEXT
LANGUAGE plpgsql AS $$
DECLARE
    lower_utc TIMESTAMP := date_trunc('month', at AT TIME ZONE 'UTC');
    upper_utc TIMESTAMP := lower_utc + INTERVAL '1 month';
    partition TEXT := format('activities_p%s', to_char(lower_utc, 'YYYY_MM'));
BEGIN
    IF to_regclass(partition) IS NOT NULL THEN
        RETURN partition;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('activity_ensure_partition'));
    -- IF NOT EXISTS, not another to_regclass: taking an advisory lock does not
    -- refresh this session's catalog cache, so a partition another session
    -- has just created may still look missing here.
    EXECUTE format(
        'CREATE TABLE IF NOT EXISTS %I PARTITION OF activities FOR VALUES FROM (%L) TO (%L)',
        partition,
        to_char(lower_utc, 'YYYY-MM-DD HH24:MI:SS') || '+00',
        to_char(upper_utc, 'YYYY-MM-DD HH24:MI:SS') || '+00'
    );
    PERFORM activity_hot_indexes(partition);
    RETURN partition;
END;
$$;

DO $$
DECLARE
    p TEXT;
BEGIN
    FOR p IN SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
             WHERE i.inhparent = 'activities'::regclass LOOP
        PERFORM activity_hot_indexes(p);
    END LOOP;
END
$$;

-- One row per archive of a partition (a month can have several: rows that
-- arrived after its first archive are archived again later). The manifest in
-- object storage is the record a restore reads; this table is what the
-- database knows: which months' raw rows are gone (rollup rebuilds refuse
-- them) and what `partitions list` shows.
CREATE TABLE activity_archives (
    archive_id  TEXT PRIMARY KEY,            -- month=YYYY-MM/ids-FIRST-LAST
    month       TIMESTAMPTZ NOT NULL,
    manifest    TEXT,                        -- object key; NULL for an empty partition
    rows        BIGINT NOT NULL,
    bytes       BIGINT NOT NULL,
    archived_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    restored_at TIMESTAMPTZ                  -- set when the whole month was restored
);
CREATE INDEX activity_archives_month_idx ON activity_archives (month);

-- A restored month is not archived again before `until`.
CREATE TABLE retention_holds (
    month TIMESTAMPTZ PRIMARY KEY,
    until TIMESTAMPTZ NOT NULL
);
