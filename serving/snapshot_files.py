"""The item snapshot, written once per snapshot version and memory-mapped by every worker.

A serving worker used to read the whole catalog's item features from the online store at
start (53.9 s at 104k items) and derive the ranker's item side from them (its own copy, per
worker). Item features change only when a batch is materialized (pushes touch user views), so
a snapshot version is named by what was materialized: the item views' materialization
intervals in Feast's registry, the online store, the catalog's ids and what the derived tables
depend on (the ranking model). The first worker to need a version reads the online store,
derives, and writes `<data>/serving/snapshots/<version key>/` (`mmrec.array_dir`: the columns
as an Arrow file, derived tables as .npy); every worker (that one included) then maps those
files: the derived tables' pages are shared between workers, start-up reads instead of
rebuilding, and a reload after a materialize swaps to the new version's files (an unchanged
version is not read again). Writers take a file lock, so two workers never build one version.

The feature columns stay one Arrow table (`ItemColumns`): mapped from the version's file, a
request decodes only its candidates' rows. Decoded up front into Python objects, the columns
were 157 MB of each worker's own heap at 104k items (tracemalloc), none of it shared.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import shutil
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mmrec.array_dir import read_array_dir, write_array_dir
from mmrec.settings import Settings

log = logging.getLogger(__name__)

COLUMNS = "columns"  # the Arrow table of the snapshot's feature columns
KEEP = 2  # versions kept: the current one and the one a slow worker may still map


@dataclass(frozen=True)
class Persisted:
    """How an on_load hook's result is stored in a snapshot version's files and read back."""

    to_arrays: Callable[[Any], dict[str, np.ndarray]]
    from_arrays: Callable[[dict[str, np.ndarray]], Any]


def snapshots_root(settings: Settings) -> Path:
    """Where a workspace's snapshot versions live: `<data>/serving/snapshots/`."""
    return settings.data_dir / "serving" / "snapshots"


class SnapshotFiles:
    """The snapshot versions of one workspace under `root`; `depends_on` names what the
    persisted hooks' results depend on besides the features (e.g. the ranking model's tag)."""

    def __init__(self, root: Path, depends_on: str) -> None:
        self.root = root
        self.depends_on = depends_on

    def key(self, store, views: list, item_ids: np.ndarray) -> str | None:
        """The version of the online store's item features now: a digest of the item views'
        materialization intervals (re-read from the registry), the online store, the catalog
        ids and `depends_on`; None when a view was never materialized (no version to name)."""
        store.refresh_registry()
        digest = hashlib.sha256(self.depends_on.encode())
        digest.update(repr(store.config.online_store).encode())
        digest.update(np.ascontiguousarray(item_ids, dtype=np.int64).tobytes())
        for view, features in views:
            intervals = store.get_feature_view(view.name).materialization_intervals
            if not intervals:
                return None
            digest.update(f"{view.name}:{sorted(features)}:{intervals}".encode())
        return digest.hexdigest()[:20]

    @contextlib.contextmanager
    def lock(self, key: str) -> Iterator[None]:
        """Hold the version's file lock (one writer; readers wait for a writer to finish)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / f".{key}.lock").open("w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def read(self, key: str) -> tuple[dict[str, np.ndarray], pa.Table] | None:
        """(derived arrays, copy-on-write maps; the columns' Arrow table) of a version."""
        found = read_array_dir(self.root / key, mode="c")
        if found is None:
            return None
        arrays, _ = found
        table = arrays.pop(COLUMNS)
        return arrays, table

    def write(self, key: str, table: pa.Table, arrays: dict[str, np.ndarray]) -> None:
        """Write a version: the feature columns' `table` and the derived `arrays`; then drop
        versions beyond the newest KEEP."""
        write_array_dir(self.root / key, arrays, {"key": key}, {COLUMNS: table})
        log.info("item snapshot %s written (%d items)", key, table.num_rows)
        self._prune(keep=key)

    def _prune(self, keep: str) -> None:
        versions = sorted(
            (p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")),
            key=lambda p: p.stat().st_mtime,
            reverse=True,
        )
        for old in [p for p in versions if p.name != keep][KEEP - 1 :]:
            shutil.rmtree(old, ignore_errors=True)  # a worker's live maps outlive the unlink
            (self.root / f".{old.name}.lock").unlink(missing_ok=True)


class ItemColumns(Mapping[str, np.ndarray]):
    """The item snapshot's feature columns, one row per catalog item, as one Arrow table (a
    snapshot version's file, memory-mapped, or a table built in-process) decoded where read.

    `columns[name]` is a whole column as the readers use it: an object array of Python values
    (numeric list features `arrays` {name: dtype} as numpy arrays) plus a trailing None row,
    where unknown items point; `rows(positions)` decodes a request's rows only.
    """

    def __init__(self, table: pa.Table, arrays: dict[str, type]) -> None:
        self.table = table
        self.arrays = arrays

    @classmethod
    def from_values(cls, columns: dict[str, list], arrays: dict[str, type]) -> ItemColumns:
        """From Python values per column (numeric lists may be numpy arrays), one per item."""
        return cls(pa.table({name: pa.array(values) for name, values in columns.items()}), arrays)

    def __getitem__(self, name: str) -> np.ndarray:
        values = self._values(name, self.table.column(name))
        # the trailing None also keeps equal-length arrays as elements (not a 2-D array)
        return np.array([*values, None], dtype=object)

    def __iter__(self) -> Iterator[str]:
        return iter(self.table.column_names)

    def __len__(self) -> int:
        return self.table.num_columns

    def drop(self, names: Iterable[str]) -> None:
        """Drop these columns where present (what only the load hooks read)."""
        self.table = self.table.drop_columns([n for n in names if n in self.table.column_names])

    def rows(self, positions: np.ndarray) -> dict[str, list]:
        """Each column's values at `positions` (a position past the last row: None)."""
        unknown = positions >= self.table.num_rows
        taken = self.table.take(pa.array(np.where(unknown, 0, positions), mask=unknown))
        return {name: self._values(name, taken.column(name)) for name in taken.column_names}

    def _values(self, name: str, column: pa.ChunkedArray) -> list:
        """Python values, as Feast's `to_dict()` has them (numeric lists: numpy arrays)."""
        if name in self.arrays:  # row views of one numpy array, not a Python float per element
            column = column.combine_chunks()
            flat = column.flatten().to_numpy(zero_copy_only=False).astype(self.arrays[name])
            valid = column.is_valid().to_numpy(zero_copy_only=False)
            lengths = pc.list_value_length(column).fill_null(0).to_numpy()[valid]
            if len(lengths) and (lengths == lengths[0]).all():  # embeddings: one width
                parts = (
                    iter(flat.reshape(len(lengths), -1))
                    if lengths[0]
                    else iter([flat] * len(lengths))
                )
            else:
                parts = iter(np.split(flat, np.cumsum(lengths)[:-1]))
            return [next(parts) if ok else None for ok in valid]
        kind = column.type
        if column.null_count == 0 and (pa.types.is_integer(kind) or pa.types.is_floating(kind)):
            return column.to_numpy().tolist()  # the same Python values, without Arrow scalars
        return column.to_pylist()
