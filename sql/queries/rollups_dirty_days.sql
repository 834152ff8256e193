-- The dirty UTC days that are over (ended before $1), oldest first: what the
-- compactor sums next.
SELECT day FROM rollup_dirty_days
WHERE day + interval '24 hours' <= $1::timestamptz
ORDER BY day
