-- The months overlapping [$1, $2) whose raw rows are (partly) out of
-- `activities`, so that rollups there cannot be recomputed from raw rows:
-- archived and not restored (archiving = false), or detached for archiving
-- by a run that has not finished (an `activities_archiving_pYYYY_MM` table;
-- archiving = true).
SELECT month, bool_or(archiving) AS archiving
FROM (
    SELECT month, false AS archiving
    FROM activity_archives
    WHERE restored_at IS NULL AND rows > 0
    UNION ALL
    SELECT to_timestamp(substring(c.relname FROM 23), 'YYYY_MM')::timestamp AT TIME ZONE 'UTC', true
    FROM pg_class AS c
    WHERE c.relname ~ '^activities_archiving_p[0-9]{4}_[0-9]{2}$'
      AND c.relkind IN ('r', 'p')
      AND c.relnamespace = current_schema()::regnamespace
) AS out_of_activities
WHERE month < $2::timestamptz AND month + interval '1 month' > $1::timestamptz
GROUP BY month
ORDER BY month
