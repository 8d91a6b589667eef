-- title: Item embedding norms and versions
-- requires: offline_item_embeddings
-- Per encoder and fusion version: items, embedding dimensions, L2 norms (text and fused are
-- L2-normalised by the content stage, so their norms should sit at 1), and rows whose
-- vector is missing or all zeros.
WITH norms AS (
    SELECT
        item_id,
        encoder_name,
        encoder_version,
        fusion_version,
        len(text_emb) AS text_dim,
        len(visual_emb) AS visual_dim,
        len(fused_emb) AS fused_dim,
        sqrt(list_inner_product(text_emb, text_emb)) AS text_norm,
        sqrt(list_inner_product(visual_emb, visual_emb)) AS visual_norm,
        sqrt(list_inner_product(fused_emb, fused_emb)) AS fused_norm
    FROM offline_item_embeddings
)
SELECT
    encoder_name,
    encoder_version,
    fusion_version,
    count(DISTINCT item_id) AS items,
    max(text_dim) AS text_dim,
    max(visual_dim) AS visual_dim,
    max(fused_dim) AS fused_dim,
    round(avg(text_norm), 4) AS text_norm_mean,
    round(min(text_norm), 4) AS text_norm_min,
    round(avg(visual_norm), 4) AS visual_norm_mean,
    round(avg(fused_norm), 4) AS fused_norm_mean,
    round(min(fused_norm), 4) AS fused_norm_min,
    count(*) FILTER (coalesce(text_norm, 0) = 0 OR coalesce(visual_norm, 0) = 0) AS missing_or_zero
FROM norms
GROUP BY encoder_name, encoder_version, fusion_version
ORDER BY encoder_name, encoder_version, fusion_version;
