-- title: Freshness lag per feature view
-- requires: feature_rows, world
-- Per view and layer, each entity's newest row at or before the world's end, and how old it
-- is then (hours); newest_lag_h is the age of the view's newest row.
WITH latest AS (
    SELECT
        r.layer,
        r.feature_view,
        r.entity_id,
        (epoch(any_value(w.world_end)) - epoch(max(r.event_timestamp))) / 3600 AS lag_h
    FROM feature_rows AS r
    CROSS JOIN world AS w
    WHERE r.event_timestamp <= w.world_end
    GROUP BY r.layer, r.feature_view, r.entity_id
)
SELECT
    feature_view,
    layer,
    count(*) AS entities,
    round(min(lag_h), 2) AS newest_lag_h,
    round(quantile_cont(lag_h, 0.5), 2) AS p50_lag_h,
    round(quantile_cont(lag_h, 0.9), 2) AS p90_lag_h,
    round(max(lag_h), 2) AS max_lag_h
FROM latest
GROUP BY feature_view, layer
ORDER BY feature_view, layer;
