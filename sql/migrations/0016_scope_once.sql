-- The caller's scope is read once per query, not once per row.
--
-- The policies called activity_scope_all(), activity_scope_communities()
-- and activity_scope_user() as plain expressions. They are STABLE SQL
-- functions, inlined into each policy's qual and evaluated for every row
-- the qual filters: each row parsed the `activity.scope_communities`
-- setting into a UUID array again. With a token listing 1,000 communities
-- (a 36 kB setting), one community's hour rows at 1M events (373 rows)
-- took 315 ms, and a community report ran into the API's 5 s statement
-- timeout (503).
--
-- Each call is now a scalar subquery, which PostgreSQL evaluates once per
-- query as an InitPlan; the qual compares each row with its result (the
-- same 373 rows: 5 ms). The rules themselves are unchanged.
-- (`= ANY ((SELECT ...)::uuid[])`: without the cast, `= ANY (SELECT ...)`
-- would compare each row with the subquery's rows, one array each.)
ALTER POLICY api_read ON activities USING (
    (SELECT activity_scope_all())
    OR community_id = ANY ((SELECT activity_scope_communities())::uuid[])
    OR user_id = (SELECT activity_scope_user())
);
ALTER POLICY api_read ON rollup_events USING (
    (SELECT activity_scope_all())
    OR (community_id = ANY ((SELECT activity_scope_communities())::uuid[])
        AND community_id <> activity_all_communities())
);
ALTER POLICY api_read ON communities USING (
    (SELECT activity_scope_all()) OR id = ANY ((SELECT activity_scope_communities())::uuid[])
);
ALTER POLICY api_read ON users USING (
    (SELECT activity_scope_all()) OR id = (SELECT activity_scope_user())
);
ALTER POLICY api_read ON rollup_community_ranks USING ((SELECT activity_scope_all()));
ALTER POLICY api_read ON rollup_users USING (
    (SELECT activity_scope_all()) OR community_id = ANY ((SELECT activity_scope_communities())::uuid[])
);
ALTER POLICY api_read ON rollup_entities USING (
    (SELECT activity_scope_all()) OR community_id = ANY ((SELECT activity_scope_communities())::uuid[])
);
ALTER POLICY api_read ON rollup_user_days USING (
    (SELECT activity_scope_all()) OR community_id = ANY ((SELECT activity_scope_communities())::uuid[])
);
ALTER POLICY api_read ON rollup_entity_days USING (
    (SELECT activity_scope_all()) OR community_id = ANY ((SELECT activity_scope_communities())::uuid[])
);
ALTER POLICY api_read ON rollup_user_weeks USING (
    (SELECT activity_scope_all()) OR community_id = ANY ((SELECT activity_scope_communities())::uuid[])
);
ALTER POLICY api_read ON rollup_entity_weeks USING (
    (SELECT activity_scope_all()) OR community_id = ANY ((SELECT activity_scope_communities())::uuid[])
);
