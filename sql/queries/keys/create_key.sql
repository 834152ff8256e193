INSERT INTO write_keys (id, name, key_hash, key_prefix, communities,
                        events_per_second, requests_per_second)
VALUES ($1, $2, $3, $4, $5, $6, $7)
