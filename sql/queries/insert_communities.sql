INSERT INTO communities (id, created_at)
SELECT id, min(created_at)
FROM unnest($1::uuid[], $2::timestamptz[]) AS t (id, created_at)
GROUP BY id
ORDER BY id
ON CONFLICT (id) DO NOTHING
