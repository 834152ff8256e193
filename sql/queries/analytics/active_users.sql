-- Daily, weekly and monthly active users as of $2: distinct users (sketched)
-- in the 24 hours, 7 days and 30 days before it. $1 is unused (kept for one
-- parameter list).
SELECT coalesce(round(hll_cardinality(hll_union_agg(users) FILTER (WHERE bucket >= $2::timestamptz - interval '24 hours'))), 0)::bigint AS dau,
       coalesce(round(hll_cardinality(hll_union_agg(users) FILTER (WHERE bucket >= $2::timestamptz - interval '168 hours'))), 0)::bigint AS wau,
       coalesce(round(hll_cardinality(hll_union_agg(users))), 0)::bigint AS mau
FROM sketch_users
WHERE bucket >= $2::timestamptz - interval '720 hours' AND bucket < $2::timestamptz AND $1::timestamptz IS NOT NULL
  AND community_id = ANY (coalesce($3::uuid[], ARRAY[activity_all_communities()]))
  AND event_type = coalesce($4::text, '*')
