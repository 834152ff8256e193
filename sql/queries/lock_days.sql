-- Takes the shared lock on every UTC day the batch writes to, first thing in
-- its transaction (before any row lock, so it cannot join a deadlock): the
-- compactor, which takes a day's lock exclusively, waits for the batch to
-- commit, and the batch for the compactor (sql/migrations/0002). Shared locks
-- do not conflict with each other: batches never wait for each other here.
SELECT count(pg_advisory_xact_lock_shared(1633907830, activity_day_lock(day)))
FROM (SELECT DISTINCT activity_day(at) AS day FROM unnest($1::timestamptz[]) AS at ORDER BY 1) AS days
