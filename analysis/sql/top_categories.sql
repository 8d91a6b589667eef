-- title: Top clicked categories per user segment
-- requires: events, items, users, offline_user_cross_domain, world
-- Segments: the user's region, and the user's cross-domain (product) top category at the
-- world's end. The three most clicked content categories of each, with their click share.
WITH cdr AS (
    SELECT c.user_id, c.cdr_top_category
    FROM offline_user_cross_domain AS c
    CROSS JOIN world AS w
    WHERE c.event_timestamp <= w.world_end
    QUALIFY row_number() OVER (PARTITION BY c.user_id ORDER BY c.event_timestamp DESC) = 1
),
clicks AS (
    SELECT e.user_id, i.category, u.region, cdr.cdr_top_category
    FROM events AS e
    JOIN items AS i USING (item_id)
    JOIN users AS u USING (user_id)
    LEFT JOIN cdr USING (user_id)
    WHERE e.event_type = 'click'
),
segments AS (
    SELECT 'region' AS segment_type, region AS segment, category FROM clicks
    UNION ALL
    SELECT 'cdr_top_category', cdr_top_category, category
    FROM clicks
    WHERE cdr_top_category IS NOT NULL
),
counted AS (
    SELECT
        segment_type,
        segment,
        category,
        count(*) AS clicks,
        round(count(*) / sum(count(*)) OVER (PARTITION BY segment_type, segment), 4) AS click_share,
        row_number() OVER (
            PARTITION BY segment_type, segment ORDER BY count(*) DESC, category
        ) AS rank
    FROM segments
    GROUP BY segment_type, segment, category
)
SELECT segment_type, segment, rank, category, clicks, click_share
FROM counted
WHERE rank <= 3
ORDER BY segment_type, segment, rank;
