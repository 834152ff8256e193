-- Daily, weekly and monthly active users as of $2: distinct users (sketched)
-- in the 24 hours, 7 days and 30 days before it. $1 is unused (kept for one
-- parameter list).
SELECT coalesce(round(hll_cardinality(hll_union_agg(r.users) FILTER (WHERE w.hours = 24))), 0)::bigint AS dau,
       coalesce(round(hll_cardinality(hll_union_agg(r.users) FILTER (WHERE w.hours = 168))), 0)::bigint AS wau,
       coalesce(round(hll_cardinality(hll_union_agg(r.users) FILTER (WHERE w.hours = 720))), 0)::bigint AS mau
FROM (VALUES (24), (168), (720)) AS w (hours)
CROSS JOIN LATERAL activity_tiles($2::timestamptz - make_interval(hours => w.hours), $2::timestamptz,
                                      pieces => true, every_type => $4::text IS NULL) AS t
CROSS JOIN LATERAL (
    SELECT users FROM rollup_events
    WHERE community_id = ANY (coalesce($3::uuid[], ARRAY[activity_all_communities()]))
      AND grain = t.grain AND bucket >= t.tile_from AND bucket < t.tile_to
      AND activity_type_rows(t.grain, event_type, $4::text, false)
    OFFSET 0  -- one index range per tile (README)
) AS r
WHERE $1::timestamptz IS NOT NULL
