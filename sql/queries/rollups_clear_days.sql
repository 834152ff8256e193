-- Empties the per-day community totals of every UTC day touching [$1, $2),
-- before rollups_rebuild_days.sql refills them.
DELETE FROM rollup_community_days
WHERE day >= activity_day($1::timestamptz)
  AND day < activity_day($2::timestamptz - interval '1 microsecond') + interval '1 day'
