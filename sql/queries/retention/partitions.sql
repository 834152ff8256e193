-- Every partition of activities, and every partition detached for archiving
-- (activities_archiving_pYYYY_MM), with its size and how many of the three
-- hot-only indexes it has (migration 0005). rows is the planner's estimate
-- (pg_class.reltuples; -1 before the first ANALYZE).
SELECT c.relname::text AS name,
       c.relispartition AS attached,
       c.reltuples::bigint AS estimated_rows,
       pg_total_relation_size(c.oid) AS bytes,
       pg_indexes_size(c.oid) AS index_bytes,
       (SELECT count(*) FROM pg_class ic
        WHERE ic.relkind = 'i' AND ic.relnamespace = c.relnamespace
          AND ic.relname IN (c.relname || '_community_type_created_idx',
                             c.relname || '_type_created_idx',
                             c.relname || '_metadata_gin')) AS hot_indexes
FROM pg_class c
WHERE c.relkind = 'r'
  AND c.relnamespace = current_schema()::regnamespace
  AND c.relname ~ '^activities_(archiving_)?p[0-9]{4}_[0-9]{2}$'
ORDER BY c.relname
