-- Events (exact) and unique users (HyperLogLog: exact below ~1,000 users,
-- standard error 0.81% above) in the range.
SELECT (SELECT coalesce(sum(events), 0)::bigint FROM rollup_events
        WHERE bucket >= $1::timestamptz AND bucket < $2::timestamptz
  AND community_id = ANY (coalesce($3::uuid[], ARRAY[activity_all_communities()]))
  AND ($4::text IS NULL OR event_type = $4::text)) AS events,
       (SELECT coalesce(round(hll_cardinality(hll_union_agg(users))), 0)::bigint FROM sketch_users
        WHERE bucket >= $1::timestamptz AND bucket < $2::timestamptz
  AND community_id = ANY (coalesce($3::uuid[], ARRAY[activity_all_communities()]))
  AND event_type = coalesce($4::text, '*')) AS unique_users
