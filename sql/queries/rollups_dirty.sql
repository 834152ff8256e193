-- What the compactor sums next, oldest first: the dirty UTC days that are
-- over (ended before $1; day = true), then the dirty hours that are over of
-- days that are not (day = false).
--
-- And, marked dirty here first, the compacted days that have quarter-hours
-- of every type but no half-hours: a compactor of a version before
-- sql/migrations/0014_half_hours.sql that compacted a day after the
-- migration (during a rollout) deleted them with the day's other compacted
-- rows and did not write them again. Two index probes per compacted day.
WITH halfless AS (
    INSERT INTO rollup_dirty_days (day)
    SELECT c.day FROM rollup_day_cuts AS c
    WHERE EXISTS (SELECT 1 FROM rollup_events
                  WHERE grain = -15 AND bucket >= c.day AND bucket < c.day + interval '24 hours')
      AND NOT EXISTS (SELECT 1 FROM rollup_events
                      WHERE grain = 30 AND bucket >= c.day AND bucket < c.day + interval '24 hours')
    ON CONFLICT DO NOTHING
    RETURNING day
)
SELECT day AS at, true AS day FROM rollup_dirty_days
WHERE day + interval '24 hours' <= $1::timestamptz
UNION ALL
SELECT day, true FROM halfless
WHERE day + interval '24 hours' <= $1::timestamptz
UNION ALL
SELECT hour, false FROM rollup_dirty_hours
WHERE hour + interval '1 hour' <= $1::timestamptz
  AND activity_day(hour) + interval '24 hours' > $1::timestamptz
ORDER BY 2 DESC, 1
