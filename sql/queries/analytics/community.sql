-- One community, if it exists (and the caller may see it).
SELECT id, name, created_at FROM communities WHERE id = $1
