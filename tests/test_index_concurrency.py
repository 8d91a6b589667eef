"""Many processes, one milvus-lite file: readers through a LiteServer during rebuilds.

milvus-lite locks its file to one process, so readers in other processes go through a
`LiteServer` URI. While the main process rebuilds and swaps versions, every reader search
must come from a complete version (old or new): full result lists, the planted neighbour of
that version on top, no errors.
"""

from __future__ import annotations

import multiprocessing as mp
import subprocess
import sys
import textwrap
import time
import warnings
from collections import Counter
from pathlib import Path

from index.channels import s2v
from index.collections import ContentIndex, build_content_index
from index.server import LiteServer
from mmrec.settings import REPO_ROOT
from tests.index_fixtures import planted_catalog

warnings.filterwarnings("ignore", module="milvus_lite")
LIMIT = 50
N_QUERIES = 10
VERSIONS = {"1": 0, "2": N_QUERIES, "3": 2 * N_QUERIES}  # version -> row of its planted items


def catalog_for(version: str):
    return planted_catalog(n_items=2_000, dim=16, n_queries=N_QUERIES, planted_at=VERSIONS[version])


def read_until_stopped(uri: str, planted: dict[str, list[int]], ready, stop, results) -> None:
    """Reader process: search every query in a loop; report versions seen and any bad answer."""
    warnings.filterwarnings("ignore")
    index = ContentIndex(uri, refresh_s=0.0)  # re-resolve the alias on every search
    queries = catalog_for("1").queries
    seen: Counter[str] = Counter()
    bad: list[str] = []
    while not stop.is_set():
        for j, query in enumerate(queries):
            try:
                found = s2v(index, query[None], limit=LIMIT)
            except Exception as err:  # recorded and asserted on by the test
                bad.append(f"error: {err!r}")
                continue
            top = found[0].item_id if found else None
            versions = [v for v, ids in planted.items() if ids[j] == top]
            if len(found) != LIMIT or not versions:
                bad.append(f"query {j}: {len(found)} hits, top {top}")
            else:
                seen[versions[0]] += 1
        ready.set()
    results.put({"seen": dict(seen), "bad": bad[:10], "n_bad": len(bad)})


def test_two_reader_processes_see_only_complete_versions_during_rebuilds(tmp_path: Path):
    planted = {v: catalog_for(v).planted_ids.tolist() for v in VERSIONS}
    ctx = mp.get_context("spawn")
    with LiteServer(tmp_path / "milvus.db") as server:
        first = catalog_for("1")
        build_content_index(server.uri, first.vectors, first.metadata, "1", show_progress=False)
        stop, results = ctx.Event(), ctx.Queue()
        readies = [ctx.Event() for _ in range(2)]
        readers = [
            ctx.Process(target=read_until_stopped, args=(server.uri, planted, ready, stop, results))
            for ready in readies
        ]
        for reader in readers:
            reader.start()
        try:
            assert all(ready.wait(60) for ready in readies), "readers did not start"
            for version in ("2", "3"):  # the second build drops version 1 (keep=2)
                cat = catalog_for(version)
                report = build_content_index(
                    server.uri, cat.vectors, cat.metadata, version, keep=2, show_progress=False
                )
                time.sleep(0.5)
            assert report.dropped == ("content_vectors_v1",)
            time.sleep(1.0)
        finally:
            stop.set()
            reports = [results.get(timeout=60) for _ in readers]
            for reader in readers:
                reader.join(timeout=30)
    for report in reports:
        assert report["n_bad"] == 0, report["bad"]
        assert report["seen"].get("1", 0) > 0 and report["seen"].get("3", 0) > 0, report["seen"]


def test_an_embedded_file_held_by_a_server_is_refused_in_another_process_with_a_hint(
    tmp_path: Path,
):
    db = tmp_path / "milvus.db"
    other = textwrap.dedent(
        f"""
        import warnings; warnings.filterwarnings("ignore")
        from index.connection import connect
        from index.errors import IndexLockedError
        try:
            connect({str(db)!r})
        except IndexLockedError as err:
            print("locked:", err)
        """
    )
    with LiteServer(db) as server:
        cat = catalog_for("1")
        build_content_index(server.uri, cat.vectors, cat.metadata, "1", show_progress=False)
        done = subprocess.run(
            [sys.executable, "-c", other], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
        )
        assert "locked:" in done.stdout, done.stdout + done.stderr
        assert "mmrec index serve" in done.stdout
        found = s2v(ContentIndex(server.uri), cat.queries[:1], limit=5)  # the server still serves
        assert found[0].item_id == cat.planted_ids[0]


def test_a_stopped_server_frees_the_file_for_an_embedded_reader(tmp_path: Path):
    db = tmp_path / "milvus.db"
    cat = catalog_for("1")
    with LiteServer(db) as server:
        build_content_index(server.uri, cat.vectors, cat.metadata, "1", show_progress=False)
    found = s2v(ContentIndex(str(db)), cat.queries[:1], limit=3)
    assert found[0].item_id == cat.planted_ids[0]
