SELECT activity_ensure_partition($1::timestamptz)
