-- Records a verified archive of a month, in the transaction that drops the
-- partition it came from. Archiving a month takes every raw row of it out of
-- PostgreSQL again, so none of its earlier archives is restored any more.
WITH unrestore AS (
    UPDATE activity_archives SET restored_at = NULL WHERE month = $2
)
INSERT INTO activity_archives (archive_id, month, manifest, rows, bytes)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (archive_id) DO UPDATE
SET manifest = EXCLUDED.manifest, rows = EXCLUDED.rows, bytes = EXCLUDED.bytes,
    archived_at = now(), restored_at = NULL
