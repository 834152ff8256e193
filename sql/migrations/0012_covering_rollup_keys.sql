-- The 15-minute user and entity rows answer from their primary key alone.
--
-- The top lists read every 15-minute row of the range's parts that are not
-- whole clean days (its first and last day, dirty days; top_users.sql and
-- top_entities.sql, `rest`). Those rows are written as events arrive, all
-- communities' interleaved, so one community's rows of a day lie on about
-- as many heap pages as there are rows: at 10M events, the largest
-- community's partial first day was 7,600 rows on 7,200 pages, about 20 ms
-- of a 90-day top-users query of 31-39 ms.
--
-- With `events` in the key's index (INCLUDE, not a key column: the key and
-- its ON CONFLICT target are unchanged), those reads are index-only scans:
-- pages the visibility map marks all-visible (every page autovacuum has
-- passed since its last change) are not visited at all. The day and week
-- rows (0003, 0007) were built this way from the start.
--
-- The cost is on the write path: an upsert that adds to an existing row now
-- changes an indexed column, so it is no longer a HOT update and writes an
-- index entry too. The README's ingestion benchmark gives the figures.
--
-- Rebuilding the two keys locks the tables for the build (minutes at
-- 100M events); the consumer waits, and Kafka holds what arrives meanwhile.
ALTER TABLE rollup_users
    DROP CONSTRAINT rollup_users_pkey,
    ADD PRIMARY KEY (community_id, bucket, user_id, event_type) INCLUDE (events);

ALTER TABLE rollup_entities
    DROP CONSTRAINT rollup_entities_pkey,
    ADD PRIMARY KEY (community_id, bucket, entity_type, entity_id) INCLUDE (events);
