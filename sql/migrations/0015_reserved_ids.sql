-- The nil and the max UUID are never a caller's community: the rollups count
-- events without a community under the nil one and every community together
-- under the max one (0002). The API refuses both in tokens and parameters;
-- the scope drops them too, so that a caller scoped to either by a bug in
-- the API still reads none of those rows through a policy.
CREATE OR REPLACE FUNCTION activity_scope_communities() RETURNS UUID[]
LANGUAGE sql STABLE AS
$$ SELECT array_remove(array_remove(
       coalesce(string_to_array(nullif(current_setting('activity.scope_communities', true), ''), ',')::uuid[], '{}'),
       '00000000-0000-0000-0000-000000000000'::uuid),
       activity_all_communities()) $$;
