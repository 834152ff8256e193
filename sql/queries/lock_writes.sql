-- Takes the shared lock on every UTC day the batch writes to, and on every
-- hour since the start of yesterday it writes to, first thing in its
-- transaction (before any row lock, so it cannot join a deadlock). The
-- compactor takes a day's lock (a day that is over) or an hour's (of the
-- current day) exclusively, only when no batch holds it, and a batch waits
-- for a compaction in progress (sql/migrations/0002, 0003). Shared locks do
-- not conflict with each other: batches never wait for each other, and a
-- batch writing the current hour never holds up the compaction of the hour
-- before. $2: the days' lock namespace, $3: the hours'.
SELECT (SELECT count(pg_advisory_xact_lock_shared($2::integer, activity_day_lock(day)))
        FROM (SELECT DISTINCT activity_day(at) AS day
              FROM unnest($1::timestamptz[]) AS at ORDER BY 1) AS days)
     + (SELECT count(pg_advisory_xact_lock_shared($3::integer, activity_hour_lock(hour)))
        FROM (SELECT DISTINCT date_bin('1 hour', at, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS hour
              FROM unnest($1::timestamptz[]) AS at
              WHERE at >= activity_day(now()) - interval '1 day' ORDER BY 1) AS hours)
