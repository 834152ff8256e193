-- user.signup carries the email: fill it in where the row has none and no
-- other user already has it (users.email is UNIQUE; a clash keeps the event
-- and leaves the email unset rather than failing the batch). The earliest
-- signup in a batch wins; across batches, the first stored.
-- Rows are locked in id order first, so concurrent batches filling the same
-- users wait for each other instead of deadlocking.
WITH v AS (
    SELECT DISTINCT ON (email) id, email, created_at
    FROM unnest($1::uuid[], $2::text[], $3::timestamptz[]) AS t (id, email, created_at)
    ORDER BY email, created_at, id
),
locked AS (
    SELECT u.id
    FROM users AS u
    JOIN v USING (id)
    WHERE u.email IS NULL
    ORDER BY u.id
    FOR NO KEY UPDATE OF u
)
UPDATE users AS u
SET email = v.email, created_at = LEAST(u.created_at, v.created_at)
FROM v
WHERE u.id = v.id
  AND u.id IN (SELECT id FROM locked)
  AND u.email IS NULL
  AND NOT EXISTS (SELECT 1 FROM users AS x WHERE x.email = v.email)
