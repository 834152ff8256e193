-- Revokes by id; revoking twice keeps the first time.
UPDATE write_keys SET revoked_at = coalesce(revoked_at, now())
WHERE id = $1
RETURNING revoked_at
