-- Daily, weekly and monthly active users as of $2: distinct users in the
-- 24 hours, 7 days and 30 days before it. $1 is unused (kept for one
-- parameter list).
SELECT count(DISTINCT user_id) FILTER (WHERE bucket >= $2::timestamptz - interval '24 hours') AS dau,
       count(DISTINCT user_id) FILTER (WHERE bucket >= $2::timestamptz - interval '168 hours') AS wau,
       count(DISTINCT user_id) AS mau
FROM rollup_users
WHERE bucket >= $2::timestamptz - interval '720 hours' AND bucket < $2::timestamptz AND $1::timestamptz IS NOT NULL
  AND ($3::uuid[] IS NULL OR community_id = ANY ($3::uuid[]))
  AND ($4::text IS NULL OR event_type = $4::text)
