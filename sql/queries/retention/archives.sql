-- Every archive of a partition, oldest month first.
SELECT archive_id, month, manifest, rows, bytes, archived_at, restored_at
FROM activity_archives
ORDER BY month, archive_id
