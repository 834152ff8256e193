SELECT id, name, key_prefix, communities, events_per_second, requests_per_second,
       created_at, revoked_at
FROM write_keys
ORDER BY created_at, id
