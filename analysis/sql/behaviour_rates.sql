-- title: Behaviour rates by position and material
-- requires: events
-- Each content behaviour per impression, per position and material; watch seconds averaged
-- over watch events.
SELECT
    position,
    material,
    count(*) FILTER (event_type = 'impression') AS impressions,
    count(*) FILTER (event_type = 'click') AS clicks,
    round(clicks / nullif(impressions, 0), 4) AS ctr,
    round(count(*) FILTER (event_type = 'watch') / nullif(impressions, 0), 4) AS watch_rate,
    round(count(*) FILTER (event_type = 'share') / nullif(impressions, 0), 4) AS share_rate,
    round(count(*) FILTER (event_type = 'comment') / nullif(impressions, 0), 4) AS comment_rate,
    round(count(*) FILTER (event_type = 'cart') / nullif(impressions, 0), 4) AS cart_rate,
    round(count(*) FILTER (event_type = 'favorite') / nullif(impressions, 0), 4) AS favorite_rate,
    round(avg(watch_seconds) FILTER (event_type = 'watch'), 2) AS mean_watch_s
FROM events
WHERE item_id IS NOT NULL
GROUP BY position, material
ORDER BY position, material;
