-- How fresh the answers are: when the consumer last stored a batch, over
-- every partition it has stored from.
SELECT max(stored_at) AS last_stored_at, min(stored_at) AS oldest_partition_stored_at
FROM consumer_progress
