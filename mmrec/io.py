"""Small file helpers every stage shares: atomic Parquet/JSON writes, folders built aside and
swapped in whole, and progress bars."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from datetime import date, datetime
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

T = TypeVar("T")


def _atomic_target(path: Path) -> Path:
    """A temporary sibling of `path`; renaming it over `path` is atomic on one filesystem."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    return Path(tmp)


def write_parquet(frame: pd.DataFrame | pa.Table, path: Path) -> Path:
    """Write a Parquet file atomically: readers see the old file or the new one, never half."""
    table = (
        frame if isinstance(frame, pa.Table) else pa.Table.from_pandas(frame, preserve_index=False)
    )
    tmp = _atomic_target(path)
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_json(payload: dict[str, Any], path: Path) -> Path:
    """Write JSON atomically, pretty-printed."""
    tmp = _atomic_target(path)
    try:
        tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


# ---- folders: built aside, swapped in whole ---------------------------------------------------


def staging_folder(final: Path) -> Path:
    """Where `building_folder` builds the next version of `final` (a hidden sibling)."""
    return final.with_name(f".{final.name}.staging")


def previous_folder(final: Path) -> Path:
    """Where a two-rename swap parks the old version of `final` between its renames."""
    return final.with_name(f".{final.name}.previous")


def recover_folder(final: Path) -> None:
    """Finish or undo a swap of `final` that a crash stopped, and drop its leftovers: a
    `final` missing beside its parked previous version gets that version back; a staging
    folder (half built, or the old version an exchange left behind) goes."""
    previous = previous_folder(final)
    if previous.exists() and not final.exists():
        previous.rename(final)
        _fsync_dir(final.parent)
    shutil.rmtree(previous, ignore_errors=True)
    shutil.rmtree(staging_folder(final), ignore_errors=True)


@contextlib.contextmanager
def building_folder(final: Path) -> Iterator[Path]:
    """Build the next version of folder `final` in the yielded empty folder beside it. When
    the block ends, the new version takes `final`'s place whole (`swap_in`); when it raises,
    `final` stays as it was and the half-built folder goes. A crash anywhere leaves `final`
    old or new, never a mix; the next `recover_folder` (called here first) clears up."""
    recover_folder(final)
    staging = staging_folder(final)
    staging.mkdir(parents=True)
    try:
        yield staging
        swap_in(staging, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def swap_in(staging: Path, final: Path) -> None:
    """Put the finished folder `staging` in place of `final`, durably: its files and folders
    are flushed to disk first, and a reader of `final` sees the old version or the new one,
    never a mix. On Linux the two folders are exchanged in one atomic step, so `final` never
    goes missing; elsewhere (or on a filesystem without the exchange) `final` is parked as
    `previous_folder(final)` for the instant between two renames, which `recover_folder`
    undoes after a crash there. Returns when the old version is deleted."""
    _fsync_tree(staging)
    if not final.exists():
        staging.rename(final)
    elif not _exchange(staging, final):
        final.rename(previous_folder(final))
        staging.rename(final)
    _fsync_dir(final.parent)  # the renames are on disk before the old version goes
    shutil.rmtree(staging, ignore_errors=True)  # after an exchange: the old version
    shutil.rmtree(previous_folder(final), ignore_errors=True)


@functools.cache
def _renameat2() -> Any:
    """glibc's renameat2, or None: Python's os.rename cannot swap two folders (it refuses a
    non-empty target), and no library on this stack exposes the kernel's exchange."""
    return getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically exchange two paths (Linux renameat2 RENAME_EXCHANGE); False where the
    system or the filesystem cannot."""
    renameat2 = _renameat2()
    if renameat2 is None:
        return False
    at_fdcwd, rename_exchange = -100, 2  # <fcntl.h>, <linux/fs.h>
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(a), None, str(b))


def _fsync_tree(folder: Path) -> None:
    """Flush every file and folder under `folder` (and it) to disk."""
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            if not os.path.islink(path):
                fd = os.open(path, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        _fsync_dir(Path(root))


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def progress(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate with a rich progress bar (printed to stderr, hidden when not a terminal)."""
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, transient=False) as bar:
        task = bar.add_task(description, total=total if total is not None else _len(items))
        for item in items:
            yield item
            bar.advance(task)


def _len(items: Iterable[Any]) -> int | None:
    try:
        return len(items)  # type: ignore[arg-type]
    except TypeError:
        return None


# Offline sources are partitioned by calendar month: `<source>/month=YYYY-MM/part.parquet`. A
# day a partition cost a file per source per day with events (17,878 files and 226 s of
# `features build` for a 21-year log of 3,840 days); a month is small enough to rewrite whole
# when one of its days is rebuilt, and Feast reads every partition through one glob.
PARTITION_FILE = "part.parquet"


def partition_name(when: datetime | date) -> str:
    """The partition folder holding rows of `when`'s calendar month."""
    return f"month={when:%Y-%m}"


def partition_names(times: pd.Series) -> list[str]:
    """`partition_name` of each time (dates or timestamps; naive ones are UTC)."""
    months = pd.to_datetime(times, utc=True).dt.tz_localize(None).to_numpy("datetime64[M]")
    unique, index = np.unique(months, return_inverse=True)  # format each month once
    return np.array([partition_name(m.astype(datetime)) for m in unique])[index].tolist()


def write_partitions(
    table: pa.Table,
    partitions: Sequence[str],
    folder: Path,
    *,
    whole: bool,
    also: Iterable[str] = (),
) -> dict[str, int]:
    """Write `table`'s rows to `folder/<partitions[i]>/part.parquet` (one file a partition,
    rows in table order), and an empty file (with the table's schema: readers still see the
    source's types) for each of `also` that no row falls in; returns rows per partition.

    `whole`: `folder` becomes exactly these partitions (`building_folder`: built beside it,
    then swapped in, so readers see the old folder or the new one and stale partitions go);
    else only the named partitions' files are replaced (each atomically) and the others kept.
    """
    keys = np.asarray(partitions)
    order = np.argsort(keys, kind="stable")  # one take, then a slice a partition
    names, starts, counts = np.unique(keys[order], return_index=True, return_counts=True)
    rows = table.take(pa.array(order))
    with building_folder(folder) if whole else contextlib.nullcontext(folder) as target:
        written = {}
        for name, start, count in zip(names, starts, counts, strict=True):
            write_parquet(rows.slice(start, count), target / name / PARTITION_FILE)
            written[str(name)] = int(count)
        for name in sorted(set(also) - set(written)):
            write_parquet(table.slice(0, 0), target / name / PARTITION_FILE)
            written[name] = 0
    return written
