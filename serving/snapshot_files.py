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
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

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

    def write(
        self, key: str, columns: dict[str, np.ndarray], arrays: dict[str, np.ndarray]
    ) -> None:
        """Write a version: `columns` (object arrays with the trailing unknown-id row) and the
        derived `arrays`; then drop versions beyond the newest KEEP."""
        table = pa.table({name: pa.array(list(column[:-1])) for name, column in columns.items()})
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


def decode_columns(table: pa.Table, arrays: dict[str, type]) -> dict[str, np.ndarray]:
    """The snapshot's columns as the reader holds them: object arrays of Python values (numeric
    list features `arrays` {name: dtype} as numpy arrays) plus the trailing None row."""
    columns = {}
    for name in table.column_names:
        values = table.column(name).to_pylist()
        if name in arrays:
            dtype = arrays[name]
            values = [None if v is None else np.asarray(v, dtype=dtype) for v in values]
        # the trailing None also keeps equal-length arrays as elements (not a 2-D array)
        columns[name] = np.array([*values, None], dtype=object)
    return columns
