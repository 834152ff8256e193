-- What the compactor sums next, oldest first: the dirty UTC days that are
-- over (ended before $1; day = true), then the dirty hours that are over of
-- days that are not (day = false).
SELECT day AS at, true AS day FROM rollup_dirty_days
WHERE day + interval '24 hours' <= $1::timestamptz
UNION ALL
SELECT hour, false FROM rollup_dirty_hours
WHERE hour + interval '1 hour' <= $1::timestamptz
  AND activity_day(hour) + interval '24 hours' > $1::timestamptz
ORDER BY 2 DESC, 1
