-- The months overlapping [$1, $2) whose raw rows are (partly) archived and
-- not restored: rollups there cannot be recomputed from raw rows.
SELECT DISTINCT month
FROM activity_archives
WHERE restored_at IS NULL AND rows > 0
  AND month < $2::timestamptz AND month + interval '1 month' > $1::timestamptz
ORDER BY month
