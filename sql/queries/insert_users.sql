-- Every user an event names exists before the event row references it.
-- Sorted, so concurrent consumers inserting the same new users wait on each
-- other in one order and never deadlock.
INSERT INTO users (id, created_at)
SELECT id, min(created_at)
FROM unnest($1::uuid[], $2::timestamptz[]) AS t (id, created_at)
GROUP BY id
ORDER BY id
ON CONFLICT (id) DO NOTHING
