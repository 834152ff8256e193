SELECT event_type, count(*) AS events, count(DISTINCT user_id) AS users
FROM activities
GROUP BY event_type
ORDER BY events DESC, event_type
