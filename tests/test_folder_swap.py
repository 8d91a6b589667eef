"""Folders built aside and swapped in whole (mmrec.io.building_folder), the one way the import,
the content sources and the training sets replace a folder: old or new, never a mix, never
lost, whatever stops the build."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mmrec import io
from mmrec.io import building_folder, previous_folder, recover_folder, staging_folder


def _tree(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): p.read_text() for p in folder.rglob("*") if p.is_file()}


def _old(folder: Path) -> Path:
    (folder / "day=1").mkdir(parents=True)
    (folder / "day=1" / "part.parquet").write_text("old 1")
    (folder / "gone.txt").write_text("old only")
    return folder


def _leftovers(final: Path) -> list[Path]:
    return [p for p in (staging_folder(final), previous_folder(final)) if p.exists()]


@pytest.mark.parametrize("exchange", [True, False], ids=["atomic-exchange", "two-renames"])
def test_the_new_version_replaces_the_old_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exchange: bool
) -> None:
    if not exchange:  # a system or filesystem without renameat2's exchange
        monkeypatch.setattr(io, "_renameat2", lambda: None)
    final = _old(tmp_path / "item_tags")
    with building_folder(final) as staging:
        assert staging.parent == final.parent and not list(staging.iterdir())
        (staging / "day=2").mkdir()
        (staging / "day=2" / "part.parquet").write_text("new 2")
        assert _tree(final) == {"day=1/part.parquet": "old 1", "gone.txt": "old only"}
    assert _tree(final) == {"day=2/part.parquet": "new 2"}
    assert _leftovers(final) == []


def test_a_first_version_needs_no_old_one(tmp_path: Path) -> None:
    final = tmp_path / "deep" / "splits"
    with building_folder(final) as staging:
        (staging / "a").write_text("1")
    assert _tree(final) == {"a": "1"} and _leftovers(final) == []


def test_an_error_while_building_leaves_the_old_version(tmp_path: Path) -> None:
    final = _old(tmp_path / "raw")
    before = _tree(final)
    with pytest.raises(KeyError), building_folder(final) as staging:
        (staging / "half.txt").write_text("half")
        raise KeyError("the build failed")
    assert _tree(final) == before and _leftovers(final) == []


def test_a_killed_build_leaves_the_old_version_and_the_next_one_clears_up(
    tmp_path: Path,
) -> None:
    """A process killed mid-build (SIGKILL: no finally runs) leaves the old version and its
    half-built folder; the next build drops the half and swaps its own in."""
    final = _old(tmp_path / "raw")
    before = _tree(final)
    script = textwrap.dedent(
        f"""
        import os, signal
        from pathlib import Path
        from mmrec.io import building_folder
        with building_folder(Path({str(final)!r})) as staging:
            (staging / "half.txt").write_text("half")
            os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    killed = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert killed.returncode == -9
    assert _tree(final) == before and _leftovers(final) == [staging_folder(final)]
    with building_folder(final) as staging:
        (staging / "next.txt").write_text("next")
    assert _tree(final) == {"next.txt": "next"} and _leftovers(final) == []


def test_recovery_undoes_a_swap_stopped_between_its_two_renames(tmp_path: Path) -> None:
    final = _old(tmp_path / "raw")
    before = _tree(final)
    final.rename(previous_folder(final))  # the old version parked, the new one not yet in
    (staging_folder(final) / "new.txt").parent.mkdir()
    (staging_folder(final) / "new.txt").write_text("new")
    recover_folder(final)
    assert _tree(final) == before and _leftovers(final) == []


def test_recovery_keeps_a_swap_stopped_after_its_renames(tmp_path: Path) -> None:
    final = _old(tmp_path / "raw")
    final.rename(previous_folder(final))
    final.mkdir()
    (final / "new.txt").write_text("new")  # the new version in, the old one not yet deleted
    recover_folder(final)
    assert _tree(final) == {"new.txt": "new"} and _leftovers(final) == []
