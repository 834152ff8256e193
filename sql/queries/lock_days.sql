-- Takes the shared lock on every UTC day the batch writes to, first thing in
-- its transaction (before any row lock, so it cannot join a deadlock). The
-- compactor takes a day's lock exclusively, only when no batch holds it, and
-- a batch waits for a compaction in progress (sql/migrations/0002). Shared
-- locks do not conflict with each other: batches never wait for each other.
SELECT count(pg_advisory_xact_lock_shared($2::integer, activity_day_lock(day)))
FROM (SELECT DISTINCT activity_day(at) AS day FROM unnest($1::timestamptz[]) AS at ORDER BY 1) AS days
