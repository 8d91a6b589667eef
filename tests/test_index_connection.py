"""Opening an embedded milvus-lite file (issue #16, part 3): a slow server start, a held file.

A first `make demo` on a loaded machine failed at `mmrec index build`: milvus-lite's child
server took longer than the 0.5 s its launcher waits, pymilvus's first call failed at once,
and the child, once up, found its parent gone and exited. The real binary started through a
wrapper that sleeps first reproduces that start deterministically.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from milvus_lite.server import BIN_PATH
from milvus_lite.server_manager import server_manager_instance

from index.connection import connect
from index.errors import IndexConnectionError
from index.server import LiteServer
from mmrec.settings import REPO_ROOT

warnings.filterwarnings("ignore", module="milvus_lite")
SLOW_START_S = 1.5  # > the 0.5 s milvus_lite.server.Server.start waits


def slow_binary(folder: Path, script: str) -> Path:
    """A milvus-lite bin folder whose `milvus` runs `script` (sh) before the real binary."""
    folder.mkdir()
    binary = folder / "milvus"
    real = Path(BIN_PATH)
    binary.write_text(
        f"#!/bin/sh\n{script}\n"
        f'LD_LIBRARY_PATH={real}:$LD_LIBRARY_PATH exec {real / "milvus"} "$@"\n'
    )
    binary.chmod(0o755)
    return folder


@pytest.fixture
def lite_file(tmp_path: Path) -> Iterator[Path]:
    """A fresh milvus-lite file path; its in-process server is released afterwards."""
    path = tmp_path / "index" / "milvus.db"
    yield path
    server_manager_instance.release_server(str(path))


def test_a_file_whose_server_starts_slowly_opens(
    lite_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BIN_PATH", str(slow_binary(tmp_path / "bin", f"sleep {SLOW_START_S}")))
    client = connect(str(lite_file))
    assert client.list_collections() == []
    client.create_collection("probe", dimension=4)
    assert client.list_collections() == ["probe"]


def test_a_server_that_dies_at_start_is_reported_not_waited_for(
    lite_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BIN_PATH", str(slow_binary(tmp_path / "bin", "sleep 1; exit 3")))
    with pytest.raises(IndexConnectionError, match="exited with code 3"):
        connect(str(lite_file), timeout=60)


def test_a_refused_opener_leaves_the_servers_lock_so_a_third_is_refused_too(
    tmp_path: Path,
) -> None:
    """milvus-lite's refused `Server` unlinks the holder's lock file when dropped; after that a
    third process opened the file beside the running server."""
    db = tmp_path / "milvus.db"
    opener = textwrap.dedent(
        f"""
        import warnings; warnings.filterwarnings("ignore")
        from index.connection import connect
        from index.errors import IndexLockedError
        try:
            connect({str(db)!r})
            print("opened")
        except IndexLockedError:
            print("locked")
        """
    )
    with LiteServer(db):
        lock = db.parent / f".{db.name}.lock"
        for _ in range(2):
            done = subprocess.run(
                [sys.executable, "-c", opener], cwd=REPO_ROOT, capture_output=True, text=True,
                timeout=120,
            )  # fmt: skip
            assert done.stdout.strip() == "locked", done.stdout + done.stderr
            assert lock.exists()


def test_a_second_server_for_a_held_file_is_refused_and_the_first_keeps_its_lock(
    tmp_path: Path,
) -> None:
    db = tmp_path / "milvus.db"
    second = (
        "import warnings; warnings.filterwarnings('ignore')\n"
        "from index.server import LiteServer\nfrom index.errors import IndexLockedError\n"
        f"try:\n    LiteServer({str(db)!r}).start()\nexcept IndexLockedError:\n    print('locked')\n"
    )
    with LiteServer(db):
        done = subprocess.run(
            [sys.executable, "-c", second], cwd=REPO_ROOT, capture_output=True, text=True,
            timeout=120,
        )  # fmt: skip
        assert done.stdout.strip() == "locked", done.stdout + done.stderr
        assert (db.parent / f".{db.name}.lock").exists()
