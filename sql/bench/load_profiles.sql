-- The benchmark's 2,000 communities and 1,000,000 users (ids derived from
-- their numbers, as load_events.sql derives them).
INSERT INTO communities (id, name, created_at)
SELECT md5('c' || c)::uuid, 'community ' || c, now() - interval '1 year'
FROM generate_series(0, 1999) AS c;
INSERT INTO users (id, created_at)
SELECT md5('u' || u)::uuid, now() - interval '1 year'
FROM generate_series(0, 999999) AS u;
