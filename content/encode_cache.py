"""The encode cache: one Parquet part per encoded batch under
`artifacts/content/encoded/<encoder_version>/`, so a rerun encodes only what is new or changed.

Each part holds the batch's encoded items (text and visual embeddings) and its skipped ones
(reason and detail), each row stamped with the content hash of what it was computed from
(inputs.content_hash); parts are written atomically and numbered in write order, and an item
encoded again (its inputs changed) is read from its latest part.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from content import inputs
from mmrec.io import write_parquet
from mmrec.settings import Settings
from mmrec.vocab import TEXT_DIM, VISUAL_DIM

PART_SCHEMA = pa.schema(
    [
        ("item_id", pa.int64()),
        ("content_hash", pa.string()),  # inputs.content_hash: what the row was computed from
        ("status", pa.string()),  # "ok" | "skipped"
        ("reason", pa.string()),
        ("detail", pa.string()),
        ("text_emb", pa.list_(pa.float32())),
        ("visual_emb", pa.list_(pa.float32())),
    ]
)


def cache_dir(settings: Settings, version: str) -> Path:
    return settings.artifacts_dir / "content" / "encoded" / version


def read_parts(folder: Path) -> pd.DataFrame:
    """The records of every part in this version's folder: item_id, status, reason, detail
    (an empty frame when none). The embeddings are read by `load_encoded`."""
    return _read_part_table(folder, with_embeddings=False).to_pandas()


def _read_part_table(folder: Path, with_embeddings: bool) -> pa.Table:
    columns = (
        PART_SCHEMA.names
        if with_embeddings
        else ["item_id", "content_hash", "status", "reason", "detail"]
    )
    parts = sorted(folder.glob("part-*.parquet"))
    if not parts:
        return PART_SCHEMA.empty_table().select(columns)
    table = pa.concat_tables([pq.read_table(p, columns=columns, schema=PART_SCHEMA) for p in parts])
    # An item re-encoded because its inputs changed appears again in a later part: the
    # latest record (parts are numbered in write order) stands.
    ids = table.column("item_id").to_numpy()
    _, last_reversed = np.unique(ids[::-1], return_index=True)
    return table.take(pa.array(np.sort(len(ids) - 1 - last_reversed)))


@dataclass
class Encoded:
    """The encoded items of one version, sorted by id: ids (N,) int64, text (N, 384), visual
    (N, 1280) with zero rows where has_visual (N,) is false, or None when no item has an image;
    and the records of the skipped items."""

    ids: np.ndarray
    text: np.ndarray
    visual: np.ndarray | None
    has_visual: np.ndarray
    skipped: pd.DataFrame


def load_encoded(folder: Path, current: dict[int, str]) -> Encoded:
    """The items of `current` (item id -> content hash) encoded in this folder from that very
    content. Embeddings go straight from Arrow buffers to numpy (no per-row Python objects:
    bench scale is 100k+ items)."""
    table = _read_part_table(folder, with_embeddings=True)
    ids = table.column("item_id").to_numpy()
    hashes = table.column("content_hash").to_numpy(zero_copy_only=False)
    fresh = np.array([current.get(int(i)) == h for i, h in zip(ids, hashes, strict=True)], bool)
    table = table.filter(pa.array(fresh))
    status = table.column("status").to_numpy(zero_copy_only=False)
    skipped = (
        table.filter(pa.array(status == "skipped")).drop(["text_emb", "visual_emb"]).to_pandas()
    )
    ok = table.filter(pa.array(status == "ok"))
    ok = ok.take(pa.array(np.argsort(ok.column("item_id").to_numpy(), kind="stable")))

    def matrix(name: str, dim: int, valid: np.ndarray) -> np.ndarray:
        values = ok.column(name).combine_chunks().flatten().to_numpy()  # null rows: no values
        out = np.zeros((len(ok), dim), dtype=np.float32)  # a writable copy
        out[valid] = np.asarray(values, dtype=np.float32).reshape(int(valid.sum()), dim)
        return out

    has_visual = ok.column("visual_emb").is_valid().to_numpy(zero_copy_only=False)
    return Encoded(
        ids=ok.column("item_id").to_numpy().astype(np.int64),
        text=matrix("text_emb", TEXT_DIM, np.ones(len(ok), bool)),
        visual=matrix("visual_emb", VISUAL_DIM, has_visual) if has_visual.any() else None,
        has_visual=has_visual,
        skipped=skipped,
    )


def list_array(matrix: np.ndarray | None, valid: np.ndarray) -> pa.Array:
    """list<float32> with one row per matrix row; null where not valid (all: matrix None)."""
    if matrix is None:
        return pa.nulls(len(valid), pa.list_(pa.float32()))
    n, dim = matrix.shape
    offsets = np.zeros(n + 1, dtype=np.int32)
    offsets[1:] = np.cumsum(np.where(valid, dim, 0))
    values = pa.array(matrix[valid].astype(np.float32).ravel(), type=pa.float32())
    mask = pa.array(~valid)
    return pa.ListArray.from_arrays(pa.array(offsets), values, mask=mask)


def write_part(
    folder: Path,
    seq: int,
    ok_ids: list[int],
    text: np.ndarray,
    visual: np.ndarray,
    skipped: list[inputs.Skipped],
    hashes: dict[int, str],
    has_visual: np.ndarray | None = None,
) -> Path:
    """One part: the encoded items (visual_emb null where `has_visual` is false; None: all
    have one) and the skipped ones."""
    n_ok, n_skip = len(ok_ids), len(skipped)
    valid = np.r_[np.ones(n_ok, bool), np.zeros(n_skip, bool)]
    has = np.ones(n_ok, bool) if has_visual is None else np.asarray(has_visual, bool)
    visual_valid = np.r_[has, np.zeros(n_skip, bool)]
    text_all = np.vstack([text.reshape(n_ok, TEXT_DIM), np.zeros((n_skip, TEXT_DIM), np.float32)])
    visual_all = np.vstack(
        [visual.reshape(n_ok, VISUAL_DIM), np.zeros((n_skip, VISUAL_DIM), np.float32)]
    )
    table = pa.table(
        {
            "item_id": pa.array([*ok_ids, *(s.item_id for s in skipped)], pa.int64()),
            "content_hash": pa.array(
                [hashes[i] for i in ok_ids] + [hashes[s.item_id] for s in skipped], pa.string()
            ),
            "status": pa.array(["ok"] * n_ok + ["skipped"] * n_skip, pa.string()),
            "reason": pa.array([None] * n_ok + [s.reason for s in skipped], pa.string()),
            "detail": pa.array([None] * n_ok + [s.detail[:500] for s in skipped], pa.string()),
            "text_emb": list_array(text_all, valid),
            "visual_emb": list_array(visual_all, visual_valid),
        },
        schema=PART_SCHEMA,
    )
    return write_parquet(table, folder / f"part-{seq:06d}.parquet")
