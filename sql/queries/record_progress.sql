-- What the consumer has stored, per partition: the API's freshness. Written
-- after a batch commits; offsets only move forward.
INSERT INTO consumer_progress AS p (topic, partition, next_offset, stored_at)
SELECT $1::text, partition, next_offset, now()
FROM unnest($2::int[], $3::bigint[]) AS t (partition, next_offset)
ORDER BY partition
ON CONFLICT (topic, partition) DO UPDATE
SET next_offset = greatest(p.next_offset, excluded.next_offset),
    stored_at = excluded.stored_at
