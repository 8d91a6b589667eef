-- title: Null and empty-list rates per feature
-- requires: feature_nulls
-- Offline: over every row of the view's source. Online: over every entity the source knows,
-- so an entity the online store has no row for counts as null.
SELECT
    feature_view,
    feature,
    layer,
    n_rows,
    n_rows - non_null AS nulls,
    round((n_rows - non_null) / nullif(n_rows, 0), 4) AS null_rate,
    round(empty / nullif(non_null, 0), 4) AS empty_list_rate
FROM feature_nulls
ORDER BY feature_view, feature, layer;
