-- community.created carries the name: fill it in where the row has none.
UPDATE communities AS c
SET name = v.name, created_at = LEAST(c.created_at, v.created_at)
FROM (
    SELECT DISTINCT ON (id) id, name, created_at
    FROM unnest($1::uuid[], $2::text[], $3::timestamptz[]) AS t (id, name, created_at)
    ORDER BY id, created_at
) AS v
WHERE c.id = v.id
  AND c.name IS NULL
