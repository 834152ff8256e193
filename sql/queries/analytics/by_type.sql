-- Events (exact) and unique users (sketched) per event type. $4 is unused.
SELECT e.event_type, e.events, coalesce(u.users, 0) AS unique_users
FROM (SELECT event_type, sum(events)::bigint AS events FROM rollup_events
      WHERE bucket >= $1::timestamptz AND bucket < $2::timestamptz
  AND community_id = ANY (coalesce($3::uuid[], ARRAY[activity_all_communities()]))
  AND ($4::text IS NULL OR event_type = $4::text) GROUP BY event_type) AS e
LEFT JOIN (SELECT event_type, round(hll_cardinality(hll_union_agg(users)))::bigint AS users
           FROM sketch_users
           WHERE bucket >= $1::timestamptz AND bucket < $2::timestamptz
             AND community_id = ANY (coalesce($3::uuid[], ARRAY[activity_all_communities()]))
             AND event_type <> '*' AND $4::text IS NULL
           GROUP BY event_type) AS u USING (event_type)
ORDER BY e.events DESC, e.event_type
