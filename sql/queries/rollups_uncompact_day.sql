-- Removes the hour and day rollup_events rows of the UTC day $1, before
-- rollups_compact_day.sql sums them anew.
DELETE FROM rollup_events
WHERE grain IN (60, 1440) AND bucket >= $1::timestamptz AND bucket < $1::timestamptz + interval '24 hours'
