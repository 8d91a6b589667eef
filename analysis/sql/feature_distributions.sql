-- title: Item statistics at the world's end by material
-- requires: offline_item_stats, offline_item_attributes, feature_catalog, world
-- Each item's newest item_stats row inside the view's TTL at the world's end (the
-- point-in-time value serving sees), summarised per material as quantiles.
WITH ttl AS (
    SELECT ttl_s FROM feature_catalog WHERE feature_view = 'item_stats'
),
snapshot AS (
    SELECT s.*
    FROM offline_item_stats AS s
    CROSS JOIN world AS w
    CROSS JOIN ttl
    WHERE s.event_timestamp <= w.world_end
      AND epoch(s.event_timestamp) > epoch(w.world_end) - ttl.ttl_s
    QUALIFY row_number() OVER (PARTITION BY s.item_id ORDER BY s.event_timestamp DESC) = 1
),
material AS (
    SELECT item_id, any_value(material) AS material
    FROM offline_item_attributes
    GROUP BY item_id
)
SELECT
    m.material,
    count(*) AS items,
    round(quantile_cont(s.ctr_7d::DOUBLE, 0.1), 4) AS ctr_7d_p10,
    round(quantile_cont(s.ctr_7d::DOUBLE, 0.25), 4) AS ctr_7d_p25,
    round(quantile_cont(s.ctr_7d::DOUBLE, 0.5), 4) AS ctr_7d_p50,
    round(quantile_cont(s.ctr_7d::DOUBLE, 0.75), 4) AS ctr_7d_p75,
    round(quantile_cont(s.ctr_7d::DOUBLE, 0.9), 4) AS ctr_7d_p90,
    round(avg(s.impressions_7d), 2) AS mean_impressions_7d,
    round(avg(s.watch_ratio_7d::DOUBLE), 4) AS mean_watch_ratio_7d
FROM snapshot AS s
JOIN material AS m USING (item_id)
GROUP BY m.material
ORDER BY m.material;
