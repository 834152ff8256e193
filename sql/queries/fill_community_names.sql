-- community.created carries the name: fill it in where the row has none.
-- Rows are locked in id order first, so concurrent batches filling the same
-- communities wait for each other instead of deadlocking.
WITH v AS (
    SELECT DISTINCT ON (id) id, name, created_at
    FROM unnest($1::uuid[], $2::text[], $3::timestamptz[]) AS t (id, name, created_at)
    ORDER BY id, created_at
),
locked AS (
    SELECT c.id
    FROM communities AS c
    JOIN v USING (id)
    WHERE c.name IS NULL
    ORDER BY c.id
    FOR NO KEY UPDATE OF c
)
UPDATE communities AS c
SET name = v.name, created_at = LEAST(c.created_at, v.created_at)
FROM v
WHERE c.id = v.id
  AND c.id IN (SELECT id FROM locked)
  AND c.name IS NULL
