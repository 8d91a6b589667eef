-- title: Coverage per feature view
-- requires: feature_catalog, feature_rows, entity_universe, world
-- Of the catalog's entities (users, items, SKUs), how many have any offline row, a row inside
-- the view's TTL at the world's end (what a point-in-time join at that time returns), and a
-- row in the online store (after `mmrec analyze views` exported it).
WITH universe AS (
    SELECT join_key, count(DISTINCT entity_id) AS catalog_entities
    FROM entity_universe
    GROUP BY join_key
),
seen AS (
    SELECT
        r.feature_view,
        count(DISTINCT r.entity_id) FILTER (r.layer = 'offline') AS offline_entities,
        count(DISTINCT r.entity_id) FILTER (
            r.layer = 'offline'
            AND r.event_timestamp <= w.world_end
            -- a TTL of 0 never expires (Feast's convention)
            AND (c.ttl_s = 0 OR epoch(r.event_timestamp) > epoch(w.world_end) - c.ttl_s)
        ) AS live_entities,
        count(DISTINCT r.entity_id) FILTER (r.layer = 'online') AS online_entities
    FROM feature_rows AS r
    JOIN feature_catalog AS c USING (feature_view)
    CROSS JOIN world AS w
    GROUP BY r.feature_view
)
SELECT
    c.feature_view,
    c.join_key,
    u.catalog_entities,
    s.offline_entities,
    s.live_entities,
    s.online_entities,
    round(s.live_entities / u.catalog_entities, 4) AS live_coverage,
    round(s.online_entities / u.catalog_entities, 4) AS online_coverage
FROM feature_catalog AS c
JOIN universe AS u USING (join_key)
JOIN seen AS s USING (feature_view)
ORDER BY c.feature_view;
