"""The content-vector collection: field names, index spec, names, and validated rows.

One row per content item: `item_id` (primary key), the item tower's `vector`, and the scalar
fields recall channels filter on (`material` and its integer `material_code`, `category`,
`tags`, `publish_ts` in epoch seconds, `quality`) plus the `embedding_version` of the tower
that produced the vector. Material codes are positions in `mmrec.vocab.MATERIALS`: append
new materials there, never reorder (a reorder needs a rebuild).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
from pymilvus import CollectionSchema, DataType, MilvusClient

from index.errors import DimensionMismatchError, InvalidContentError
from mmrec.vocab import MATERIALS

CONTENT_ALIAS = "content_vectors"
METADATA_COLUMNS = ("item_id", "material", "category", "tags", "publish_ts", "quality")
MAX_TAGS = 32  # ARRAY capacity: tags beyond this are an input error, not silently cut
MAX_TAG_CHARS = 64
MAX_TEXT_CHARS = 64
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,200}$")
IVF_FROM_ROWS = 300_000  # FLAT up to here in milvus-lite (see IndexSpec.for_rows)
# HNSW on a Milvus server, chosen by measurement (IndexSpec.for_rows). A search asks for
# ef >= its limit (Milvus refuses less): ContentIndex.search raises ef to the limit.
HNSW_BUILD = {"M": 16, "efConstruction": 200}
# ef 512: the smallest with candidate recall >= 0.95 vs FLAT (bench/reported/hnsw-recall.json)
HNSW_SEARCH = {"ef": 512}
_VERSION = re.compile(r"^[A-Za-z0-9_]{1,48}$")


@dataclass(frozen=True)
class IndexSpec:
    """How the vector field is indexed and searched (Milvus index type, build and search params).

    `for_rows` picks by measurement (bench/vector_backends_bench.py, index/README.md).
    """

    index_type: str = "FLAT"
    params: dict = field(default_factory=dict)
    search_params: dict = field(default_factory=dict)
    metric_type: str = "IP"  # the towers score by inner product

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> IndexSpec:
        return cls(**json.loads(text)) if text else cls()

    @classmethod
    def for_rows(cls, n_rows: int, server: bool = False) -> IndexSpec:
        """The measured choice for a collection of `n_rows`, on a Milvus server (`server`) or
        in milvus-lite 2.5.1.

        Milvus server (2.3.5 standalone): HNSW on sealed segments at every size, M and
        efConstruction and the search's ef from HNSW_PARAMS (bench/hnsw_recall_bench.py:
        candidate recall vs FLAT on the service's own queries, bench/reported/).

        100k x 64-d: FLAT, exact (recall@100 1.0), ~4 ms p50; IVF_FLAT there searches the
        unsealed segments' interim index (nprobe ignored, filtered recall 0.80).
        1M x 64-d: FLAT ~31 ms p50; IVF_FLAT nlist=4096 nprobe=16: recall@100 0.998
        (0.998 filtered), ~2.8 ms p50. The switch point between is not measured finer.
        """
        if server:
            return cls("HNSW", dict(HNSW_BUILD), dict(HNSW_SEARCH))
        if n_rows <= IVF_FROM_ROWS:
            return cls()
        nlist = 2 ** round(math.log2(4 * math.sqrt(n_rows)))  # ~4*sqrt(n) lists
        return cls("IVF_FLAT", {"nlist": nlist}, {"nprobe": 16})


def check_name(name: str, what: str = "collection") -> str:
    """`name` when it is a legal Milvus collection/alias name, else InvalidContentError."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidContentError(
            f"{what} name {name!r} must start with a letter or '_' and hold only letters, "
            "digits and '_'"
        )
    return name


def collection_name(version: str, alias: str = CONTENT_ALIAS) -> str:
    """The versioned collection behind `alias`: `content_vectors_v<version>`."""
    if not isinstance(version, str) or not _VERSION.match(version):
        raise InvalidContentError(
            f"embedding version {version!r} must be 1-48 letters, digits or '_' (e.g. '20261124_1')"
        )
    return check_name(f"{check_name(alias, 'alias')}_v{version}")


def content_schema(dim: int) -> CollectionSchema:
    """Milvus schema of a content-vector collection with `dim`-d vectors."""
    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("item_id", DataType.INT64, is_primary=True)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
    schema.add_field("material", DataType.VARCHAR, max_length=MAX_TEXT_CHARS)
    # Position in MATERIALS: filters compare this integer, because a VARCHAR `material in
    # [...]` filter doubled a 100k-item search in milvus-lite 2.5.1 (7.4 vs 3.4 ms p50).
    schema.add_field("material_code", DataType.INT8)
    schema.add_field("category", DataType.VARCHAR, max_length=MAX_TEXT_CHARS)
    schema.add_field(
        "tags",
        DataType.ARRAY,
        element_type=DataType.VARCHAR,
        max_capacity=MAX_TAGS,
        max_length=MAX_TAG_CHARS,
    )
    schema.add_field("publish_ts", DataType.INT64)
    schema.add_field("quality", DataType.FLOAT)
    schema.add_field("embedding_version", DataType.VARCHAR, max_length=MAX_TEXT_CHARS)
    return schema


def check_vectors(vectors: np.ndarray, dim: int | None = None) -> np.ndarray:
    """`vectors` as a C-contiguous float32 (N, d) array; InvalidContentError when malformed."""
    arr = np.asarray(vectors)
    if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.number):
        raise InvalidContentError(f"vectors must be a numeric (N, d) array, got shape {arr.shape}")
    if arr.shape[1] < 2:
        raise InvalidContentError(f"vectors need at least 2 dimensions, got {arr.shape[1]}")
    if not np.isfinite(arr).all():
        raise InvalidContentError("vectors contain NaN or infinity; fix the tower output first")
    if dim is not None and arr.shape[1] != dim:
        raise DimensionMismatchError(
            f"vectors have dimension {arr.shape[1]} but the collection holds {dim}-d vectors"
        )
    return np.ascontiguousarray(arr, dtype=np.float32)


def check_metadata(metadata: pd.DataFrame, n_rows: int) -> pd.DataFrame:
    """Item metadata aligned with the vectors' rows, normalised; InvalidContentError when not.

    Required columns: item_id (int), material (one of mmrec.vocab.MATERIALS), category (str),
    tags (list of str; None = no tags), publish_ts (epoch seconds or datetime), quality (float).
    """
    if not isinstance(metadata, pd.DataFrame):
        raise InvalidContentError(f"metadata must be a pandas DataFrame, got {type(metadata)}")
    if missing := [c for c in METADATA_COLUMNS if c not in metadata.columns]:
        raise InvalidContentError(
            f"metadata is missing columns {missing}; needs {METADATA_COLUMNS}"
        )
    if len(metadata) != n_rows:
        raise InvalidContentError(
            f"metadata has {len(metadata)} rows but there are {n_rows} vectors; one row per vector"
        )
    frame = metadata.loc[:, list(METADATA_COLUMNS)].reset_index(drop=True).copy()
    if frame["item_id"].isna().any() or not pd.api.types.is_integer_dtype(frame["item_id"]):
        raise InvalidContentError("item_id must be integers without nulls")
    if dupes := frame.loc[frame["item_id"].duplicated(), "item_id"].head(5).tolist():
        raise InvalidContentError(f"item_id values must be unique; repeated: {dupes}")
    if bad := sorted(set(frame["material"]) - set(MATERIALS)):
        raise InvalidContentError(f"unknown material(s) {bad}; expected one of {MATERIALS}")
    if pd.api.types.is_datetime64_any_dtype(frame["publish_ts"]):
        frame["publish_ts"] = frame["publish_ts"].astype("datetime64[s, UTC]").astype("int64")
    if frame["publish_ts"].isna().any() or frame["quality"].isna().any():
        raise InvalidContentError("publish_ts and quality must not be null")
    frame["tags"] = frame["tags"].map(_check_tags)
    frame["category"] = frame["category"].astype(str)
    return frame


def _check_tags(tags: object) -> list[str]:
    if tags is None or (isinstance(tags, float) and np.isnan(tags)):
        return []
    out = [str(t) for t in tags]  # list, tuple or numpy array (Parquet list columns)
    if len(out) > MAX_TAGS or any(len(t) > MAX_TAG_CHARS for t in out):
        raise InvalidContentError(
            f"an item has {len(out)} tags (max {MAX_TAGS}) or a tag over {MAX_TAG_CHARS} chars"
        )
    return out


def row_batches(
    vectors: np.ndarray, frame: pd.DataFrame, embedding_version: str, batch_size: int
) -> Iterator[list[dict]]:
    """Rows for MilvusClient.insert/upsert, `batch_size` at a time (inputs already checked)."""
    for lo in range(0, len(frame), batch_size):
        part = frame.iloc[lo : lo + batch_size]
        yield [
            {
                "item_id": int(item_id),
                "vector": vec,
                "material": material,
                "material_code": MATERIALS.index(material),
                "category": category,
                "tags": tags,
                "publish_ts": int(ts),
                "quality": float(quality),
                "embedding_version": embedding_version,
            }
            for vec, item_id, material, category, tags, ts, quality in zip(
                vectors[lo : lo + batch_size], *(part[c] for c in METADATA_COLUMNS), strict=True
            )
        ]
