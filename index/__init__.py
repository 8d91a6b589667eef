"""Vector index: Milvus collections of content vectors and the recall channels that query them.

Modules, one job each:
- `connection`: open a Milvus client by URI (milvus-lite file or server), the one factory.
- `server`: run a `milvus-lite` gRPC server on loopback so many processes share one file.
- `schema`: the content-vector collection's fields, names and validated rows.
- `collections`: versioned build, pointer swap, upsert/delete, the reader's `ContentIndex`.
- `channels`: S2V/V2V/U2V vector recall, tag term recall, fresh/popular fallback.
- `merge`: per-channel quotas, dedupe, and which channel(s) found each item.
"""
