-- title: Traffic by source, position and material
-- requires: events
-- Content-domain events (those with an item) per traffic source, position and material.
WITH cells AS (
    SELECT
        source,
        position,
        material,
        count(*) FILTER (event_type = 'impression') AS impressions,
        count(*) FILTER (event_type = 'click') AS clicks,
        count(DISTINCT user_id) AS users,
        count(DISTINCT item_id) AS items
    FROM events
    WHERE item_id IS NOT NULL
    GROUP BY source, position, material
)
SELECT
    *,
    round(impressions / sum(impressions) OVER (), 4) AS impression_share
FROM cells
ORDER BY source, position, material;
