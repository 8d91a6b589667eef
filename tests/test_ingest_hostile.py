"""Imported data is hostile until checked (issue #20): media paths that lead out of the import
folder, decompression bombs and oversize files, overlong texts are refused with the file, the
row and the column named (exit 2 from the CLI), and nothing is written; spreadsheet formulas in
CSV cells are plain text, stored as given."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from ingest.cli import app
from ingest.contract import LABEL_CHARS, MEDIA_BYTES, MEDIA_PIXELS, TITLE_CHARS, DataContractError
from mmrec.settings import Settings
from tests.test_ingest import N_ITEMS, event_rows, run, write_csv, write_items

HOSTILE_ROW = 7  # items.csv data row 7 is item 7 (no cover in the fixture)


def png_header(width: int, height: int) -> bytes:
    """A PNG that claims `width` x `height` pixels and holds none: what a decompression bomb
    looks like to a reader that trusts the header."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def _absolute(folder: Path) -> str:
    return str(folder / "img" / "1.png")  # a real image, named by an absolute path


def _dot_dot(folder: Path) -> str:
    Image.new("RGB", (4, 4)).save(folder.parent / "outside.png")
    return "../outside.png"


def _link_out(folder: Path) -> str:
    Image.new("RGB", (4, 4)).save(folder.parent / "target.png")
    (folder / "img" / "link.png").symlink_to(folder.parent / "target.png")
    return "img/link.png"


def _too_many_pixels(folder: Path) -> str:
    side = int(MEDIA_PIXELS**0.5) + 1  # a real, decodable image just over the limit
    Image.new("L", (side, side)).save(folder / "img" / "huge.png")
    return "img/huge.png"


def _bomb(folder: Path) -> str:
    (folder / "img" / "bomb.png").write_bytes(png_header(100_000, 100_000))
    return "img/bomb.png"


def _big_file(folder: Path) -> str:
    (folder / "img" / "big.png").write_bytes(b"\0" * (MEDIA_BYTES + 1))
    return "img/big.png"


def hostile_items(tmp_path: Path, column: str, value: str | Callable[[Path], str]) -> Path:
    """The fixture catalog with `value` in `column` of row HOSTILE_ROW (a callable makes its
    files in the import folder first and returns the cell)."""
    folder = tmp_path / "in"
    write_items(folder)  # the covers and frames the other rows name
    cell = value(folder) if callable(value) else value
    cells = pd.read_csv(folder / "items.csv", keep_default_na=False, dtype=str)[column].tolist()
    cells[HOSTILE_ROW - 1] = cell
    return write_items(folder, **{column: cells})


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(workspace=tmp_path / "ws")


@pytest.mark.parametrize(
    ("column", "value", "words"),
    [
        ("image", _absolute, "outside the items file's folder"),
        ("image", _dot_dot, "outside the items file's folder"),
        ("image", _link_out, "outside the items file's folder"),
        ("frames", lambda folder: "img/f0.png|../../etc/passwd", "outside the items file's folder"),
        ("image", _too_many_pixels, f"{int(MEDIA_PIXELS**0.5) + 1}x"),
        ("image", _bomb, "decompression bomb"),
        ("frames", _big_file, f"{MEDIA_BYTES + 1} bytes"),
        ("title", "x" * (TITLE_CHARS + 1), f"{TITLE_CHARS} characters"),
        ("category", "c" * (LABEL_CHARS + 1), f"{LABEL_CHARS} characters"),
        ("tags", "fun|" + "t" * (LABEL_CHARS + 1), f"{LABEL_CHARS} characters each"),
        ("tags", "|".join(f"t{k}" for k in range(101)), "100 entries"),
    ],
    ids=[
        "absolute-path", "dot-dot", "symlink-out", "frame-escape", "pixels", "bomb",
        "file-size", "title", "category", "tag-chars", "tag-count",
    ],
)  # fmt: skip
def test_hostile_item_rows_are_refused_naming_row_and_column(
    settings: Settings, tmp_path: Path, column: str, value, words: str
) -> None:
    files = {
        "events": write_csv(event_rows(), tmp_path / "in" / "events.csv"),
        "items": hostile_items(tmp_path, column, value),
    }
    with pytest.raises(DataContractError) as err:
        run(settings, files)
    message = str(err.value)
    assert f"items.csv, column {column!r}" in message, message
    assert f"items.csv row {HOSTILE_ROW}" in message and words in message, message
    assert "(1 row;" in message and "Fix:" in message, message
    assert not (settings.raw_dir / "items.parquet").exists()


def test_an_overlong_event_id_is_refused(settings: Settings, tmp_path: Path) -> None:
    events = event_rows()
    events["event_id"] = [f"e{k}" for k in range(len(events))]
    events.loc[3, "event_id"] = "e" * 129
    files = {
        "events": write_csv(events, tmp_path / "in" / "events.csv"),
        "items": write_items(tmp_path / "in"),
    }
    with pytest.raises(DataContractError, match=r"column 'event_id'.*128 characters"):
        run(settings, files)


def test_the_cli_exits_2_naming_the_row(settings: Settings, tmp_path: Path) -> None:
    root = typer.Typer()  # mounted as the root `mmrec` mounts it
    root.add_typer(app, name="data")
    events = write_csv(event_rows(), tmp_path / "in" / "events.csv")
    items = hostile_items(tmp_path, "image", _dot_dot)
    args = ["--events", str(events), "--items", str(items), "-w", str(settings.workspace)]
    result = CliRunner().invoke(root, ["data", "import", *args], env={"COLUMNS": "300"})
    assert result.exit_code == 2, result.output
    assert f"items.csv row {HOSTILE_ROW}: '../outside.png'" in result.output
    assert "column 'image'" in result.output


def test_formula_cells_are_stored_as_the_text_given(settings: Settings, tmp_path: Path) -> None:
    """Cells a spreadsheet would evaluate (=, +, -, @ first) are titles, categories and tags
    like any other: read as text, written to Parquet unchanged, never run."""
    formulas = {
        "title": '=HYPERLINK("http://example.invalid","click")',
        "category": "+cmd|' /C calc'!A0",
        "tags": "@SUM(A1:A9)|-2+3",
    }
    columns = {}
    for column, cell in formulas.items():
        cells = pd.read_csv(write_items(tmp_path / "in"), dtype=str)[column].tolist()
        cells[HOSTILE_ROW - 1] = cell
        columns[column] = cells
    files = {
        "events": write_csv(event_rows(), tmp_path / "in" / "events.csv"),
        "items": write_items(tmp_path / "in", **columns),
    }
    run(settings, files)
    items = pd.read_parquet(settings.raw_dir / "items.parquet").set_index("item_id")
    labels = pd.read_parquet(settings.raw_dir / "item_labels.parquet").set_index("item_id")
    assert items.loc[HOSTILE_ROW, "title"] == formulas["title"]
    # the category cell holds a `|`, the list separator only in list columns: kept whole
    assert items.loc[HOSTILE_ROW, "category"] == formulas["category"]
    assert list(labels.loc[HOSTILE_ROW, "category_tags"]) == [
        formulas["category"],
        "@SUM(A1:A9)",
        "-2+3",
    ]
    assert len(items) == N_ITEMS and not np.any(items.title.isna())
