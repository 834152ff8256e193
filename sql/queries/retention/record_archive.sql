-- Records a verified archive of a month, in the transaction that drops the
-- partition it came from. Archiving a month takes every raw row of it out of
-- PostgreSQL again, so none of its earlier archives is restored any more,
-- and a restore's hold on it (`--include-held`) is over.
WITH unrestore AS (
    UPDATE activity_archives SET restored_at = NULL WHERE month = $2
), unhold AS (
    -- Nothing of the month is left in PostgreSQL to hold.
    DELETE FROM retention_holds WHERE month = $2
)
INSERT INTO activity_archives (archive_id, month, manifest, rows, bytes)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (archive_id) DO UPDATE
SET manifest = EXCLUDED.manifest, rows = EXCLUDED.rows, bytes = EXCLUDED.bytes,
    archived_at = now(), restored_at = NULL
