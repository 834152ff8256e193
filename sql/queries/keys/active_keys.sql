-- Every key the collectors know, revoked ones included (a revoked key is
-- answered 403, an unknown one 401). Read by every collector every second.
SELECT id, name, key_hash, communities, events_per_second, requests_per_second,
       revoked_at IS NOT NULL AS revoked
FROM write_keys
