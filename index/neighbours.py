"""V2V and S2V neighbour lists, computed once per index version instead of per request.

A V2V query depends only on the seed item (its stored vector through the V2V adapter) and an
S2V query only on the SKU and its category, so `mmrec index build` searches every item's and
every SKU's query once (a batch search of the new collection, before the alias moves) and
keeps the `top_n` best hits, unfiltered. A request then reads its seeds' lists and applies its
filters (already-seen items, materials) to them; a row whose filtered list is shorter than the
channel's limit while the list was cut at `top_n` (a narrow material filter) goes to the live
search with the request's one U2V row, so every answer is the live search's answer.

Stored beside the version (`<workspace>/data/index/neighbours/<collection>/`, a
`mmrec.array_dir` folder memory-mapped by every worker) and complete before the alias moves;
a version without lists is served by live search.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from index.channels import ids_and_scores
from index.collections import ContentIndex
from mmrec.array_dir import read_array_dir, read_manifest, write_array_dir
from mmrec.io import progress
from mmrec.vocab import MATERIALS, S2V, V2V

log = logging.getLogger(__name__)

# The neighbours kept per query, chosen by measurement (bench/serving_levers_bench.py,
# `neighbour_lists`): a channel's quota (V2V 150, S2V 100) plus the already-clicked items a
# request excludes (at most 50, the sequences' length) fits without a live search for every
# unrestricted request; a material filter narrower than that needs the live search.
TOP_N = {V2V: 200, S2V: 150}
SEARCH_BATCH = 1024  # query rows per batch search at build
NO_TAG = -1  # a V2V key has nothing besides its item id
FIELDS = ("keys", "tags", "ids", "scores", "materials", "queries")


@dataclass(frozen=True)
class NeighbourTable:
    """The `top_n` best items of each key's query, best first, unfiltered.

    keys (K,) int64 sorted: item ids (V2V) or SKU ids (S2V); tags (K,) int64: what the query
    was made from besides the key (S2V: the SKU's category index), NO_TAG otherwise;
    ids (K, N) int64, -1 past the end of a short list; scores (K, N) float32 (Milvus's);
    materials (K, N) int8: each hit's material code (index.schema); queries (K, d) float32: the
    query vectors searched (a row that must search live at request time searches this one,
    so its hits are those the list was cut from, to the last bit: the SKU tower's output
    differs in the last bits between a batch of 4,096 and one of 6)."""

    keys: np.ndarray
    tags: np.ndarray
    ids: np.ndarray
    scores: np.ndarray
    materials: np.ndarray
    queries: np.ndarray

    @property
    def top_n(self) -> int:
        return int(self.ids.shape[1])

    def rows(self, keys: np.ndarray, tags: np.ndarray | None = None) -> np.ndarray:
        """Each key's row, -1 where the table has no list for it (or one made from another tag)."""
        keys = np.asarray(keys, dtype=np.int64)
        if not len(self.keys):
            return np.full(len(keys), -1, np.int64)
        rows = np.minimum(np.searchsorted(self.keys, keys), len(self.keys) - 1)
        found = self.keys[rows] == keys
        if tags is not None:
            found &= self.tags[rows] == np.asarray(tags, dtype=np.int64)
        return np.where(found, rows, -1)

    def hits(
        self, row: int, limit: int, excluded: np.ndarray, material_codes: np.ndarray | None
    ) -> list[tuple[int, float]] | None:
        """The first `limit` (id, score) of the row's list after the filters, or None when the
        filters leave fewer than `limit` of a list that was cut at top_n (search live)."""
        ids = self.ids[row]
        keep = ids >= 0
        if len(excluded):
            keep &= ~np.isin(ids, excluded)
        if material_codes is not None:
            keep &= np.isin(self.materials[row], material_codes)
        picked = np.flatnonzero(keep)[:limit]
        if len(picked) < limit and ids[-1] >= 0:
            return None
        return list(zip(ids[picked].tolist(), self.scores[row][picked].tolist(), strict=True))


@dataclass(frozen=True)
class NeighbourLists:
    """The lists of one index build (`VersionRecord.build_id`): {channel: NeighbourTable};
    beside them, what a serving process would otherwise read back from the collection at
    start: `catalog` (the items' scalar fields, sorted by id: the V2V table's keys)."""

    build_id: str
    tables: Mapping[str, NeighbourTable]
    catalog: pd.DataFrame | None = None

    def save(self, root: Path, engine: str = "lite") -> Path:
        """Write the lists to `root/<build id>/`; `engine` (`lite` or `server`) names the kind
        of Milvus the build's collection lives in (see `prune`)."""
        arrays = {
            f"{channel}.{name}": getattr(table, name)
            for channel, table in self.tables.items()
            for name in FIELDS
        }
        tables = {}
        if self.catalog is not None:
            tables["catalog"] = pa.Table.from_pandas(self.catalog, preserve_index=False)
        top_n = {channel: table.top_n for channel, table in self.tables.items()}
        manifest = {"build_id": self.build_id, "top_n": top_n, "engine": engine}
        return write_array_dir(root / self.build_id, arrays, manifest, tables)

    @classmethod
    def load(cls, root: Path, build_id: str) -> NeighbourLists | None:
        """The lists of build `build_id` memory-mapped, or None when it has none."""
        found = read_array_dir(root / build_id)
        if found is None:
            return None
        arrays, manifest = found
        tables = {
            channel: NeighbourTable(*(arrays[f"{channel}.{name}"] for name in FIELDS))
            for channel in manifest["top_n"]
        }
        catalog = arrays.get("catalog")
        if catalog is not None:
            catalog = pd.DataFrame({c: catalog.column(c).to_pylist() for c in catalog.column_names})
        return cls(manifest["build_id"], tables, catalog)


def search_table(
    index: ContentIndex,
    keys: np.ndarray,
    tags: np.ndarray,
    queries: np.ndarray,
    top_n: int,
    catalog_ids: np.ndarray,
    catalog_materials: np.ndarray,
    label: str,
) -> NeighbourTable:
    """Search every query row (K, d) of `keys` for its `top_n` items, unfiltered, in batches.

    catalog_ids (sorted) / catalog_materials: every indexed item's material, by id."""
    order = np.argsort(keys, kind="stable")
    keys, tags, queries = keys[order], tags[order], np.asarray(queries, np.float32)[order]
    ids = np.full((len(keys), top_n), -1, np.int64)
    scores = np.zeros((len(keys), top_n), np.float32)
    starts = range(0, len(keys), SEARCH_BATCH)
    for start in progress(starts, f"{label}: top {top_n} of {len(keys)} queries"):
        batch = queries[start : start + SEARCH_BATCH]
        for i, row_hits in enumerate(index.search(batch, top_n), start=start):
            found = list(ids_and_scores(row_hits, top_n))
            if found:
                ids[i, : len(found)], scores[i, : len(found)] = zip(*found, strict=True)
    rows = np.clip(np.searchsorted(catalog_ids, ids), 0, max(len(catalog_ids) - 1, 0))
    materials = np.where(ids >= 0, catalog_materials[rows], -1).astype(np.int8)
    return NeighbourTable(keys, tags.astype(np.int64), ids, scores, materials, queries)


def material_codes(materials: Iterable[str]) -> np.ndarray:
    """Codes (index.schema's material_code) of material names."""
    return np.asarray([MATERIALS.index(m) for m in materials], dtype=np.int64)


def prune(root: Path, keep: Iterable[str], engine: str = "lite") -> list[str]:
    """Remove the lists of `engine`'s builds not in `keep` (build ids of its kept versions).

    One workspace may hold builds on two engines (its milvus-lite file and a Milvus server);
    each build's lists name their engine, so building on one never removes the other's
    (folders from before the mark are milvus-lite's)."""
    import shutil

    if not root.exists():
        return []
    kept = set(keep)

    def owner(folder: Path) -> str:
        return (read_manifest(folder) or {}).get("engine", "lite")

    gone = [
        p
        for p in root.iterdir()
        if p.is_dir() and not p.name.startswith(".") and p.name not in kept and owner(p) == engine
    ]
    for path in gone:
        shutil.rmtree(path, ignore_errors=True)
    if gone:
        log.info("removed the neighbour lists of %s", [p.name for p in gone])
    return [p.name for p in gone]
