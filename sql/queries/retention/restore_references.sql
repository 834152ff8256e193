-- Creates the users and communities the staged rows name, if missing (a
-- restore into an empty database), before restore_rows.sql inserts them.
INSERT INTO users (id)
SELECT DISTINCT user_id FROM restore_rows WHERE user_id IS NOT NULL
ON CONFLICT DO NOTHING;
INSERT INTO communities (id)
SELECT DISTINCT community_id FROM restore_rows WHERE community_id IS NOT NULL
ON CONFLICT DO NOTHING;
