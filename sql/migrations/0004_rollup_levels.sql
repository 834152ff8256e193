-- Rollup levels that keep long ranges cheap (measured: at 1M events over 90
-- days, rollup_events had 0.94 rows per event, so summing it for everything
-- cost as much as the raw rows).
--
-- rollup_events also gets rows for every community together
-- (community_id = activity_all_communities(), as in sketch_users): what an
-- admin's overview sums. rollup_community_days holds events per community per
-- UTC day: top communities over a range read whole days there and only the
-- partial days at the range's ends from rollup_events.
CREATE TABLE rollup_community_days (
    community_id UUID NOT NULL,
    day          TIMESTAMPTZ NOT NULL,
    events       BIGINT NOT NULL,
    PRIMARY KEY (day, community_id)
);

CREATE FUNCTION activity_day(at TIMESTAMPTZ) RETURNS TIMESTAMPTZ
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS
$$ SELECT date_bin('1 day', at, TIMESTAMPTZ '2000-01-01 00:00:00+00') $$;

GRANT SELECT ON rollup_community_days TO activity_api;
ALTER TABLE rollup_community_days ENABLE ROW LEVEL SECURITY;
CREATE POLICY api_read ON rollup_community_days FOR SELECT TO activity_api USING (
    activity_scope_all() OR community_id = ANY (activity_scope_communities())
);

-- Existing rollups gain their new rows.
INSERT INTO rollup_events (community_id, bucket, event_type, events)
SELECT activity_all_communities(), bucket, event_type, sum(events)
FROM rollup_events GROUP BY bucket, event_type;
INSERT INTO rollup_community_days (community_id, day, events)
SELECT community_id, activity_day(bucket), sum(events)
FROM rollup_events
WHERE community_id NOT IN (activity_all_communities(), '00000000-0000-0000-0000-000000000000')
GROUP BY 1, 2;
