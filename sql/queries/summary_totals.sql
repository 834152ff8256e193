SELECT (SELECT count(*) FROM activities) AS events,
       (SELECT count(*) FROM users) AS users,
       (SELECT count(*) FROM communities) AS communities,
       (SELECT count(*) FROM users WHERE email IS NOT NULL) AS users_with_email,
       (SELECT count(*) FROM communities WHERE name IS NOT NULL) AS named_communities,
       (SELECT min(created_at) FROM activities) AS first_event,
       (SELECT max(created_at) FROM activities) AS last_event
