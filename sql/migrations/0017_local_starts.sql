-- Where a calendar day, week or month begins in the session's time zone.
--
-- A time series stepped through its intervals by adding '1 day' (or a week,
-- or a month) to the first one's start, and took that start from
-- date_trunc. Where clocks change at midnight both go wrong:
--
-- - when midnight is skipped (America/Santiago, Sep 6 2026: 00:00 becomes
--   01:00), the day begins at 01:00, and adding a day kept 01:00, so every
--   later day of the series began an hour late, its first hour counted in
--   the day before;
-- - when midnight comes twice (America/Havana, Nov 1 2026: 01:00 becomes
--   00:00 again), PostgreSQL reads the local midnight as the later one, so
--   the first hour of the day was counted in the day before.
--
-- Here the intervals are stepped in local time (timestamp without time zone,
-- plain calendar arithmetic) and each begins at the first instant at which
-- the zone's clock shows its local start or later. A change moves clocks by
-- at most 3 hours, and offsets are whole quarter-hours (historical offsets
-- with seconds move with their start: the candidates are relative to it).
CREATE FUNCTION activity_local_start(local timestamp) RETURNS timestamptz
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT min(t)
    FROM (SELECT local::timestamptz + k * interval '15 minutes' AS t
          FROM generate_series(-12, 12) AS k) AS candidates
    WHERE t::timestamp >= local
$$;
