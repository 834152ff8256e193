-- Takes the shared lock on every UTC hour the batch writes to, first thing
-- in its transaction (before any row lock, so it cannot join a deadlock).
-- The compactor takes an hour's lock exclusively (a day's: each of its 24
-- hours), only when no batch holds it, and a batch waits for a compaction in
-- progress (sql/migrations/0003). Shared locks do not conflict with each
-- other: batches never wait for each other, and a batch writing the current
-- hour never holds up the compaction of the hour before.
SELECT count(pg_advisory_xact_lock_shared($2::integer, activity_hour_lock(hour)))
FROM (SELECT DISTINCT date_bin('1 hour', at, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS hour
      FROM unnest($1::timestamptz[]) AS at ORDER BY 1) AS hours
