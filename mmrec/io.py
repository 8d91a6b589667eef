"""Small file helpers every stage shares: atomic Parquet/JSON writes and progress bars."""

from __future__ import annotations

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

    `whole`: `folder` becomes exactly these partitions (built beside it, then swapped in, so
    readers see the old folder or the new one and stale partitions go); else only the named
    partitions' files are replaced (each atomically) and the others kept.
    """
    keys = np.asarray(partitions)
    order = np.argsort(keys, kind="stable")  # one take, then a slice a partition
    names, starts, counts = np.unique(keys[order], return_index=True, return_counts=True)
    rows = table.take(pa.array(order))
    target = folder.with_name(f".{folder.name}.staging-{os.getpid()}") if whole else folder
    if whole:
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
    written = {}
    for name, start, count in zip(names, starts, counts, strict=True):
        write_parquet(rows.slice(start, count), target / name / PARTITION_FILE)
        written[str(name)] = int(count)
    for name in sorted(set(also) - set(written)):
        write_parquet(table.slice(0, 0), target / name / PARTITION_FILE)
        written[name] = 0
    if whole:
        swap_folder(target, folder)
    return written


def swap_folder(new: Path, final: Path) -> None:
    """Put folder `new` in place of `final` (two renames on one filesystem); the old one is
    removed after."""
    old = final.with_name(f".{final.name}.old-{os.getpid()}")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    new.rename(final)
    shutil.rmtree(old, ignore_errors=True)
