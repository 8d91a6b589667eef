"""A folder of named numpy arrays (and Arrow tables), written once and memory-mapped by every
reader.

What every serving worker would otherwise compute and hold for itself (neighbour lists per
index version, the item snapshot's derived tables) is written once as `.npy` files in a folder
and opened with `np.load(mmap_mode="r")`: the pages come from the operating system's page
cache, shared by all processes that map them (a second worker adds little memory), and a new
version is a new folder, never a changed file.

A folder is complete or absent: it is written under a temporary name beside its final one
and renamed once its manifest (`manifest.json`, written last) is on disk.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from pyarrow import ipc

MANIFEST = "manifest.json"


def write_array_dir(
    path: Path,
    arrays: dict[str, np.ndarray],
    manifest: dict[str, Any],
    tables: dict[str, pa.Table] | None = None,
) -> Path:
    """Write `arrays` (name -> array, no object dtype), `tables` (name -> Arrow table, for
    columns of mixed or nullable Python values) and `manifest` to folder `path`, replacing any
    folder there (readers holding its files keep their maps: unlinked files live on)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    tables = tables or {}
    try:
        for name, array in arrays.items():
            with (tmp / f"{name}.npy").open("wb") as sink:
                np.save(sink, np.ascontiguousarray(array), allow_pickle=False)
                _sync(sink)
        for name, table in tables.items():
            with (tmp / f"{name}.arrow").open("wb") as sink:
                with ipc.new_file(sink, table.schema) as writer:
                    writer.write_table(table)
                _sync(sink)
        listing = {"arrays": sorted(arrays), "tables": sorted(tables)}
        (tmp / MANIFEST).write_text(
            json.dumps({**manifest, **listing}, indent=2, sort_keys=True) + "\n"
        )
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def read_manifest(path: Path) -> dict[str, Any] | None:
    """The folder's manifest, or None when there is no complete folder at `path`."""
    try:
        return json.loads((path / MANIFEST).read_text())
    except FileNotFoundError:
        return None


def read_array_dir(
    path: Path, mode: str = "r"
) -> tuple[dict[str, np.ndarray | pa.Table], dict[str, Any]] | None:
    """(arrays and tables memory-mapped, manifest) of the folder, or None when absent.

    `mode`: numpy's mmap_mode, "r" (read-only) or "c" (copy-on write: writable views whose
    pages stay shared until written, for torch.from_numpy, which wants writable arrays)."""
    manifest = read_manifest(path)
    if manifest is None:
        return None
    arrays: dict[str, np.ndarray | pa.Table] = {
        name: np.load(path / f"{name}.npy", mmap_mode=mode, allow_pickle=False)
        for name in manifest["arrays"]
    }
    for name in manifest.get("tables", []):
        # zero-copy views of the map, which the table's buffers keep open
        arrays[name] = ipc.open_file(pa.memory_map(str(path / f"{name}.arrow"))).read_all()
    return arrays, manifest


def _sync(sink) -> None:
    sink.flush()
    os.fsync(sink.fileno())
